"""Multi-host flags shared by the training commands: ``--init_distributed`` and friends.

``--init_distributed --coordinator HOST:PORT --process_count N --process_index I`` calls
``jax.distributed.initialize`` before anything touches a device; on Cloud TPU the three values
are detected automatically (pass ``--init_distributed`` alone).
"""

from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_boolean("init_distributed", False, "call jax.distributed.initialize (multi-host)")
flags.DEFINE_string("coordinator", None, "coordinator address HOST:PORT (process 0)")
flags.DEFINE_integer("process_count", None, "number of processes")
flags.DEFINE_integer("process_index", None, "this process's index")


def maybe_initialize_distributed() -> None:
    """Initialises jax.distributed when asked (a no-op otherwise)."""
    if not FLAGS.init_distributed:
        return
    import jax

    kwargs = {}
    if FLAGS.coordinator:
        kwargs = dict(
            coordinator_address=FLAGS.coordinator,
            num_processes=FLAGS.process_count,
            process_id=FLAGS.process_index,
        )
    jax.distributed.initialize(**kwargs)
