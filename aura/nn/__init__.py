"""Pure Flax linen modules and in-graph operations: no I/O, no flags, nothing else from aura.

Parameters are plain pytrees; experts are stacked on a leading ``[E, ...]`` axis; state (spiking
membranes, recurrent sums, the neural-signal bus) goes in and out as an explicit carry.
"""

from aura.nn import bus, thalamus
from aura.nn.hopfield import HopfieldMemory, ModernHopfield
from aura.nn.language import SpikingLanguageCore
from aura.nn.moe import (
    EXPERT_KINDS,
    Conv1DExperts,
    LiquidMoE,
    MLPExperts,
    MoEAux,
    RouterOutput,
    RoutingControls,
)
from aura.nn.phasor import PhasorBank
from aura.nn.rope import apply_rope, rope_tables
from aura.nn.spiking import LIF, SpikingAttention, kwta, spike_fn
from aura.nn.srwkv import SRWKV, SRWKVBlock
from aura.nn.transformer import TransformerLM
from aura.nn.wide import SparseLinear
from aura.nn.wkv import wkv, wkv_scan, wkv_step

__all__ = [
    "EXPERT_KINDS",
    "LIF",
    "SRWKV",
    "Conv1DExperts",
    "HopfieldMemory",
    "LiquidMoE",
    "MLPExperts",
    "MoEAux",
    "ModernHopfield",
    "PhasorBank",
    "RouterOutput",
    "RoutingControls",
    "SRWKVBlock",
    "SparseLinear",
    "SpikingAttention",
    "SpikingLanguageCore",
    "TransformerLM",
    "apply_rope",
    "bus",
    "kwta",
    "rope_tables",
    "spike_fn",
    "thalamus",
    "wkv",
    "wkv_scan",
    "wkv_step",
]
