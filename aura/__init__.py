"""AURA: brain-inspired modular networks that keep learning, in JAX/Flax.

Layout (see DESIGN.md): `aura.nn` pure Flax modules, `aura.brain` controllers over param/array
pytrees, `aura.data` loaders, `aura.models` assembled models, `aura.train` steps, sharding and
checkpoints, `aura.commands` the `python -m aura.build <command>` entry points.
"""

__version__ = "0.1.0"
