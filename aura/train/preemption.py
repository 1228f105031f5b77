"""Graceful stop on SIGTERM/SIGINT: finish the step, save a checkpoint, exit 0.

Cloud schedulers (TPU VMs, Kubernetes, Slurm) send SIGTERM some seconds before they kill a job;
people press Ctrl-C. Either way a long run should save and stop cleanly so that the same command
resumes it. `PreemptionGuard` turns both signals into a flag that the training loop polls at step
boundaries:

    with PreemptionGuard() as guard:
        for step in ...:
            state = train_step(state, batch)
            if guard.should_stop():
                checkpointer.save(step, state, meta, force=True)
                break

A second Ctrl-C while a stop is pending raises `KeyboardInterrupt`, so a person can still force
quit a loop that hangs. The previous handlers are restored on exit.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["PreemptionGuard"]


class PreemptionGuard:
    """Context manager that records SIGTERM/SIGINT in `requested` instead of dying."""

    def __init__(
        self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT), *, verbose: bool = True
    ) -> None:
        """Prepares the guard (handlers are installed by `__enter__`).

        Args:
          signals: signals that request a stop.
          verbose: print one line to stderr when a stop is requested.
        """
        self.signals = tuple(signals)
        self.verbose = verbose
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Second Ctrl-C: the user wants out now.
        if not self.requested and self.verbose:
            how = "; press Ctrl-C again to quit at once" if signal.SIGINT in self.signals else ""
            print(
                f"received {signal.Signals(signum).name}: stopping after this step and saving a "
                f"checkpoint{how}",
                file=sys.stderr,
                flush=True,
            )
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def request(self) -> None:
        """Requests a stop without a signal (e.g. a time budget ran out)."""
        self.requested = True

    def should_stop(self) -> bool:
        """Whether to stop now; with several processes, true if any process was signalled.

        With more than one jax process this is a collective (every process must call it at the
        same step) so that all hosts save and stop together.
        """
        if "jax" not in sys.modules:
            return self.requested
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.array([self.requested], np.int32))
        return bool(np.asarray(flags).any())

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is not threading.main_thread():
            # Python only lets the main thread install handlers; the loop then simply never stops
            # early, which is the behaviour without a guard.
            warnings.warn(
                "PreemptionGuard outside the main thread: SIGTERM/SIGINT are not intercepted",
                RuntimeWarning,
                stacklevel=2,
            )
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self._previous.items():
            # None means the old handler was installed from C; the default is the closest match.
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()
