"""One package per experiment: its data wiring, step, evaluation and records, on the shared loop
(``aura.train.loop``). Each has a preset file in ``configs/`` and a thin command."""
