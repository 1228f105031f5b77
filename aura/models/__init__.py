"""Assembled models, one per file, each built from an ``ml_collections`` config."""

from aura.models.adapter import SelfTeachingAdapter, adapter_config
from aura.models.mnist_poc import MnistPOC
from aura.models.mnist_poc import default_config as mnist_config
from aura.models.zone_brain import ZoneBrain
from aura.models.zone_brain import default_config as zone_brain_config

__all__ = [
    "MnistPOC",
    "SelfTeachingAdapter",
    "ZoneBrain",
    "adapter_config",
    "mnist_config",
    "zone_brain_config",
]
