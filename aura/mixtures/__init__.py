"""Mixture models: GMM and HMM fitted by EM in JAX, model managers, and the Cerebrum controller.

Importing the package registers the built-in model types "gmm", "hmm" and "mmm".
"""

from aura.mixtures import mmm as _mmm  # noqa: F401  (registers the "mmm" model type)
from aura.mixtures.cerebrum import Cerebrum, CerebrumConfig
from aura.mixtures.gmm import GaussianMixture
from aura.mixtures.hmm import HiddenMarkov
from aura.mixtures.manager import MM, MMMan
from aura.mixtures.registry import get_model_type, model_types, register_model_type

__all__ = [
    "MM",
    "Cerebrum",
    "CerebrumConfig",
    "GaussianMixture",
    "HiddenMarkov",
    "MMMan",
    "get_model_type",
    "model_types",
    "register_model_type",
]
