"""The brain zones' home: registry, on-disk layout, stores, stages, joint training, inspection.

In-graph zone operations (thalamic routing, the neural-signal bus) are ``aura.nn.thalamus`` and
``aura.nn.bus``; the joint model is ``aura.models.zone_brain``.
"""
