"""Experiments: one package per experiment with its data wiring, steps, evaluation and records.

Each package plugs into the shared training loop (``aura.train``) through pure step functions and
data iterators whose batch is a pure function of the step number; no package copies the loop.
"""
