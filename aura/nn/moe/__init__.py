"""The "liquid" mixture-of-experts core: router, stacked experts, sparse dispatch, losses."""

from aura.nn.moe.core import LiquidMoE
from aura.nn.moe.experts import EXPERT_KINDS, Conv1DExperts, MLPExperts, ResidualMLPExperts
from aura.nn.moe.losses import MoEAux
from aura.nn.moe.router import RouterOutput, RoutingControls

__all__ = [
    "EXPERT_KINDS",
    "Conv1DExperts",
    "LiquidMoE",
    "MLPExperts",
    "MoEAux",
    "ResidualMLPExperts",
    "RouterOutput",
    "RoutingControls",
]
