"""``python -m aura.build cerebrum``: the Cerebrum controller on a regime-change stream.

A stream of batches whose regime changes several times (5 regimes of 12 batches by default);
the controller starts with one legacy GMM and spawns an adapter expert whenever a batch is
novel for every expert. It runs on the shared training loop: resumable (the same command
continues after SIGTERM/SIGINT or a crash), metrics.jsonl + TensorBoard in ``--workdir``, one
line per regime. Prints one JSON line: experts spawned over time, per-regime held-out
log-likelihood after each regime and at the end (forgetting), routing accuracy, the
Dirichlet-process GMM's component count (if scikit-learn is installed); writes
``<workdir>/cerebrum_timeline.png`` and the saved controller ``<workdir>/cerebrum``.

    python -m aura.build cerebrum --workdir checkpoints/cerebrum --metrics_out cerebrum.json
    python -m aura.build cerebrum --config configs/cerebrum.py:tiny --workdir /tmp/cer
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.options import Alias, apply_aliases, define_aliases, define_config
from aura.experiments.mixtures.cerebrum_stream import StreamConfig, run_cerebrum_stream

FLAGS = flags.FLAGS
define_config("cerebrum", "stream")
ALIASES = (
    Alias("n_regimes", "stream.n_regimes", "integer", "regimes in the stream"),
    Alias("batches_per_regime", "stream.batches_per_regime", "integer", "batches per regime"),
    Alias("batch_size", "stream.batch_size", "integer", "samples per batch"),
    Alias("dim", "stream.dim", "integer", "feature width D"),
    Alias("capacity", "stream.capacity", "integer", "expert slots (fixed at init)"),
    Alias("warm_start", "stream.warm_start", "boolean", "start with a legacy GMM on regime 0"),
    Alias("dp_gmm", "stream.dp_gmm", "boolean", "compare with a Dirichlet-process GMM"),
    Alias("seed", "stream.seed", "integer", "stream and controller seed"),
    Alias("top_k", "controller.top_k", "integer", "experts mixed per sample"),
    Alias("novel_fraction", "controller.novel_fraction", "float", "spawn above this novel share"),
)  # fmt: skip
define_aliases(ALIASES)
flags.DEFINE_string("workdir", "checkpoints/cerebrum", "checkpoints, metrics, plot, controller")
flags.DEFINE_boolean("resume", True, "resume from the latest checkpoint in --workdir")
flags.DEFINE_string("metrics_out", None, "also write the final JSON result here")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard event files")


def build() -> StreamConfig:
    c = apply_aliases(FLAGS.config, ALIASES)
    return StreamConfig(**c.stream.to_dict(), controller=c.controller.to_dict(),
                        workdir=FLAGS.workdir, resume=FLAGS.resume,
                        tensorboard=FLAGS.tensorboard).validated()  # fmt: skip


def main(argv):
    del argv
    cfg = validated(build)
    result = guarded(lambda: validated(lambda: run_cerebrum_stream(cfg)))
    emit_result(result, FLAGS.metrics_out)
