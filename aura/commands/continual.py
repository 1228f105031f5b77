"""``python -m aura.build continual``: Split-MNIST learned in sequence without forgetting.

Five tasks (digits 0/1, 2/3, 4/5, 6/7, 8/9) arrive one after another. A LiquidMoE grows one
expert per task (cloned from the previous one, earlier experts frozen) and per-expert novelty
gates (class-conditional PPCA statistics, no stored images) route test digits without task
labels. A fine-tuning baseline (same network, no growth, freezing or gates) runs in the same
command. Both checkpoint under ``--workdir`` (``method/``, ``baseline/``); SIGTERM saves and the
same command resumes. One line per task, then one JSON line (also written to ``--metrics_out``).
Settings come from ``configs/continual.py``; the flags below set its fields.

    python -m aura.build continual --scenario class --metrics_out continual_class.json
    python -m aura.build continual --scenario task --data train.npz --eval_data test.npz
"""

from __future__ import annotations

import dataclasses
import time

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.options import Alias, apply_aliases, define_aliases, define_config
from aura.data.split_mnist import load_split_data
from aura.experiments.continual.experiment import run
from aura.experiments.continual.method import SCENARIOS, ContinualConfig

FLAGS = flags.FLAGS
define_config("continual", "default")
ALIASES = (
    Alias("scenario", "scenario", "enum", "van de Ven & Tolias (2019) scenario", SCENARIOS),
    Alias("epochs_per_task", "epochs_per_task", "integer", "training epochs on each task"),
    Alias("batch_size", "batch_size", "integer", "batch size"),
    Alias("lr", "lr", "float", "AdamW learning rate"),
    Alias("hidden_dim", "hidden_dim", "integer", "hidden width of each MLP expert"),
    Alias("ppca_dim", "ppca_dim", "integer", "principal directions per class in the gates"),
    Alias("augment", "augment", "boolean", "random affine augmentation of training digits"),
    Alias("baseline", "baseline", "boolean", "also run the fine-tuning baseline"),
    Alias("seed", "seed", "integer", "random seed"),
)
define_aliases(ALIASES)
flags.DEFINE_string("data", None, "npz with images uint8 [N,28,28] + labels, or tfds:mnist")
flags.DEFINE_string("eval_data", None, "held-out npz (default: a fixed 12.5% split of --data)")
flags.DEFINE_string("workdir", "checkpoints/continual", "checkpoints, metrics JSONL, TensorBoard")
flags.DEFINE_string("metrics_out", None, "also write the final JSON result here")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard event files")


def build_config() -> ContinualConfig:
    c = apply_aliases(FLAGS.config, ALIASES)
    fields = {f.name for f in dataclasses.fields(ContinualConfig)}
    return ContinualConfig(**{k: v for k, v in c.items() if k in fields}).validate()


def run_command(cfg: ContinualConfig) -> dict:
    t0 = time.time()
    data = load_split_data(FLAGS.data, FLAGS.eval_data, cfg.pairs)
    result = run(cfg, data, FLAGS.workdir, tensorboard=FLAGS.tensorboard)
    result["wall_s"] = round(time.time() - t0, 2)
    return result


def main(argv):
    del argv
    cfg = validated(build_config)
    result = guarded(lambda: run_command(cfg))
    emit_result(result, FLAGS.metrics_out)
