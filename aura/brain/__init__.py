"""Between-step controllers: growth, cloning, neurogenesis, pruning, merit bandits, personality,
novelty gates, and the ``Brain`` that composes them. They work on parameter/array pytrees only."""

from aura.brain import cloning, growth, merit, neurogenesis, novelty, personality, pruning
from aura.brain.orchestrator import Brain, BrainConfig, BrainState, DistillArgs

__all__ = [
    "Brain",
    "BrainConfig",
    "BrainState",
    "DistillArgs",
    "cloning",
    "growth",
    "merit",
    "neurogenesis",
    "novelty",
    "personality",
    "pruning",
]
