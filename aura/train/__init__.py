"""What every experiment shares: THE loop, checkpoints, sharding, metrics, preemption, optimizers.

An experiment implements :class:`Experiment` and calls :func:`run` with a :class:`LoopConfig`.
"""

from aura.train.checkpoint import CheckpointError, TrainCheckpointer
from aura.train.experts import expert_rows, insert_expert_rows, load_expert, save_expert
from aura.train.loop import Experiment, LoopConfig, run
from aura.train.metrics import MetricsLogger, format_line
from aura.train.optim import TrainState, expert_row_mask, make_lm_optimizer, make_optimizer
from aura.train.preemption import PreemptionGuard
from aura.train.rundir import RunLock, RunLockedError

__all__ = [
    "CheckpointError",
    "Experiment",
    "LoopConfig",
    "MetricsLogger",
    "PreemptionGuard",
    "RunLock",
    "RunLockedError",
    "TrainCheckpointer",
    "TrainState",
    "expert_row_mask",
    "expert_rows",
    "format_line",
    "insert_expert_rows",
    "load_expert",
    "make_lm_optimizer",
    "make_optimizer",
    "run",
    "save_expert",
]
