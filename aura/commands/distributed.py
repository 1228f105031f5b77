"""Multi-host flags shared by the training commands: ``--init_distributed`` and friends.

``--init_distributed --coordinator HOST:PORT --process_count N --process_index I`` calls
``jax.distributed.initialize`` before anything touches a device. On Cloud TPU (and Slurm, or
any cluster JAX knows) pass ``--init_distributed`` alone: the coordinator, process count and
index are detected. Every process runs the same command; on CPU the processes talk through
gloo collectives (JAX's default CPU implementation), so N processes on one machine
(``launch/local_multiprocess.sh``) exercise the same code path as a pod.
"""

from __future__ import annotations

import jax
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_boolean("init_distributed", False, "call jax.distributed.initialize (multi-host)")
flags.DEFINE_string("coordinator", None, "coordinator address HOST:PORT (process 0's host)")
flags.DEFINE_integer("process_count", None, "number of processes")
flags.DEFINE_integer("process_index", None, "this process's index, 0 .. process_count-1")


def distributed_kwargs(
    init: bool, coordinator: str | None, process_count: int | None, process_index: int | None
) -> dict | None:
    """Validated keyword arguments for ``jax.distributed.initialize`` (None: do not initialise).

    Raises:
      ValueError: process flags without ``--init_distributed``, an incomplete or inconsistent
        set (``--coordinator`` needs both counts; ``0 <= index < count``), or a malformed
        ``HOST:PORT``.
    """
    given = [v is not None for v in (coordinator, process_count, process_index)]
    if not init:
        if any(given):
            raise ValueError(
                "--coordinator/--process_count/--process_index need --init_distributed"
            )
        return None
    if not any(given):
        return {}  # auto-detection (Cloud TPU, Slurm, ...)
    if not all(given):
        raise ValueError(
            "--init_distributed with --coordinator needs --process_count and --process_index "
            f"(got coordinator={coordinator!r}, process_count={process_count}, "
            f"process_index={process_index}); or pass none of them on Cloud TPU"
        )
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator={coordinator!r} must be HOST:PORT, e.g. 10.0.0.2:8476")
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"--process_index={process_index} must be in [0, --process_count={process_count})"
        )
    return dict(
        coordinator_address=coordinator, num_processes=process_count, process_id=process_index
    )


def maybe_initialize_distributed() -> None:
    """Initialises jax.distributed when ``--init_distributed`` is given (a no-op otherwise).

    Raises:
      ValueError: inconsistent flags (see :func:`distributed_kwargs`).
    """
    kwargs = distributed_kwargs(
        FLAGS.init_distributed, FLAGS.coordinator, FLAGS.process_count, FLAGS.process_index
    )
    if kwargs is None:
        return
    jax.distributed.initialize(**kwargs)
