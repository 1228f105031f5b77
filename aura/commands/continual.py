"""``python -m aura.build continual``: Split-MNIST learned in sequence without forgetting.

Five tasks (digits 0/1, 2/3, 4/5, 6/7, 8/9) arrive one after another. A LiquidMoE grows one
expert per task (cloned from the previous one, earlier experts frozen) and per-expert novelty
gates (class-conditional PPCA statistics, no stored images) route test digits without task
labels. A fine-tuning baseline (same network, no growth, freezing or gates) runs in the same
command. One line per task, then one JSON line (also written to ``--metrics_out``):

    python -m aura.build continual --scenario class --metrics_out continual_class.json
    python -m aura.build continual --scenario task --data train.npz --eval_data test.npz
"""

from __future__ import annotations

import time

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.train.metrics import MetricsLogger, format_line

FLAGS = flags.FLAGS
flags.DEFINE_string("scenario", "class", "class | task | domain (van de Ven & Tolias, 2019)")
flags.DEFINE_string("data", None, "npz with images uint8 [N,28,28] + labels, or tfds:mnist")
flags.DEFINE_string("eval_data", None, "held-out npz (default: a fixed 12.5% split of --data)")
flags.DEFINE_integer("epochs_per_task", 5, "training epochs on each task")
flags.DEFINE_integer("batch_size", 64, "batch size")
flags.DEFINE_float("lr", 3e-3, "AdamW learning rate")
flags.DEFINE_integer("hidden_dim", 400, "hidden width of each MLP expert")
flags.DEFINE_integer("ppca_dim", 30, "principal directions per class in the novelty gates")
flags.DEFINE_boolean("augment", True, "random affine augmentation of training digits")
flags.DEFINE_boolean("baseline", True, "also run the fine-tuning baseline")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_string("workdir", "checkpoints/continual", "metrics JSONL and TensorBoard")
flags.DEFINE_string("metrics_out", None, "also write the final JSON result here")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard event files")


def build_config():
    from aura.train.continual import ContinualConfig

    return ContinualConfig(
        scenario=FLAGS.scenario,
        epochs_per_task=FLAGS.epochs_per_task,
        batch_size=FLAGS.batch_size,
        lr=FLAGS.lr,
        hidden_dim=FLAGS.hidden_dim,
        ppca_dim=FLAGS.ppca_dim,
        augment=FLAGS.augment,
        baseline=FLAGS.baseline,
        seed=FLAGS.seed,
    ).validate()


def task_line(record: dict) -> str:
    """``method   task 2 (4/5) | R 0.996 0.968 0.994   -     -   | avg 98.6% | ... | 1.9s``."""
    row = " ".join("  -  " if a is None else f"{a:.3f}" for a in record["acc"])
    head = f"{record['run']:<8} task {record['task']} ({record['classes']}) | R {row}"
    rest = {k: v for k, v in record.items() if k not in ("run", "task", "classes", "acc")}
    rest = {
        ("avg_acc" if k == "avg" else "gate_acc" if k == "gate" else k): v for k, v in rest.items()
    }
    return f"{head} | {format_line(rest)}"


def run_command(cfg) -> dict:
    from aura.train.continual import load_split_data, run

    t0 = time.time()
    data = load_split_data(FLAGS.data, FLAGS.eval_data, cfg.pairs)
    logger = MetricsLogger(FLAGS.workdir, process_index=0, tensorboard=FLAGS.tensorboard)

    def echo(record: dict) -> None:
        print(task_line(record), flush=True)
        learned = record["acc"][: record["task"] + 1]
        metrics = {k: v for k, v in record.items() if k not in ("run", "classes", "acc")}
        logger.log(record["task"], {**metrics, "acc": learned}, prefix=record["run"])

    with logger:
        result = run(cfg, data, echo)
        result["wall_s"] = round(time.time() - t0, 2)
        logger.log(len(cfg.pairs), result, prefix="final")
    return result


def main(argv):
    del argv
    cfg = validated(build_config)
    result = guarded(lambda: run_command(cfg))
    emit_result(result, FLAGS.metrics_out)
