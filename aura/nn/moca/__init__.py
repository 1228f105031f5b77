"""MOCA: a token router over experts and memory slots, a per-sequence memory, a compute budget."""

from aura.nn.moca.budget import RoutingStats, budget_loss, compute_fraction, routing_stats
from aura.nn.moca.layer import MocaAux, MocaCarry, MocaLayer
from aura.nn.moca.memory import MemoryState, SlotMemory, reference_memory, scan_memory
from aura.nn.moca.position import ContextualCounters, CounterState, harmonic_code
from aura.nn.moca.routing import (
    Selection,
    active_mask,
    dense_weights,
    select_from_probs,
    select_top_k,
)

__all__ = [
    "ContextualCounters",
    "CounterState",
    "MemoryState",
    "MocaAux",
    "MocaCarry",
    "MocaLayer",
    "RoutingStats",
    "Selection",
    "SlotMemory",
    "active_mask",
    "budget_loss",
    "compute_fraction",
    "dense_weights",
    "harmonic_code",
    "reference_memory",
    "routing_stats",
    "scan_memory",
    "select_from_probs",
    "select_top_k",
]
