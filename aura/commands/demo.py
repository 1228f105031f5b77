"""``python -m aura.build demo`` (what ``make demo`` runs): the main job on embedded data, offline.

Trains the MNIST expert POC (conv stem -> phasor map -> spiking attention -> LiquidMoE growing
1 -> 3 -> 6 experts -> classifier) on the 8,000 embedded digits and evaluates it on held-out
ones, then says where everything it wrote is. Rerunning resumes (or, if finished, just reports);
delete ``--workdir`` to train again.
"""

from __future__ import annotations

import os

from absl import flags

from aura.commands.common import emit_result, guarded

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "checkpoints/demo/mnist", "where the demo writes its outputs")
flags.DEFINE_integer("epochs", 15, "training epochs of the MNIST POC")


def main(argv):
    del argv
    from aura.train.poc_loop import RunConfig, train

    print(f"AURA demo: MNIST expert POC on the embedded digits -> {FLAGS.workdir}", flush=True)
    result = guarded(lambda: train(RunConfig(workdir=FLAGS.workdir, epochs=FLAGS.epochs)))
    emit_result(result, os.path.join(FLAGS.workdir, "result.json"))
    w = FLAGS.workdir
    print(
        "\noutputs:\n"
        f"  result         {w}/result.json\n"
        f"  metrics        {w}/metrics.jsonl  (TensorBoard: tensorboard --logdir {w}/tb)\n"
        f"  routing plot   {w}/routing.png\n"
        f"  checkpoints    {w}/ckpt  (resume: rerun the same command)\n"
        f"  experts        {w}/hippocampus/expert_<i>  (one orbax checkpoint + manifest each)"
    )
