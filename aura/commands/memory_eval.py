"""``python -m aura.build memory_eval``: how well each memory policy recalls a dialogue's facts.

Each policy (window, recency, lexical, dense, hybrid, hybrid_wm) stores every dialogue's turns
in order, then answers its questions by retrieval. Prints a table, then one JSON line (also
written to ``--metrics_out``): ``{"questions", "wall_s", "policies": {policy: {"overall":
{recall@1/5/10, answer@1/5/10}, "by_kind", "ci95", "latency_ms", "db_bytes"}}, ...}``. A bad
JSONL line is reported as ``file:line`` and skipped with a count (``--on_bad_record fail``
stops at it: one ``error:`` line, exit 2). Settings come from ``configs/memory.py``.

    python -m aura.build memory_eval --dialogues aura/memory/assets/memory_dev.jsonl \
        --metrics_out checkpoints/memory_dev.json [--policies window,lexical,hybrid] [--window 64]

Dialogue files come from ``python tools/make_memory_devset.py --out FILE.jsonl [--variant
heldout --seed 1]`` or any file of the format in ``aura/memory/dialogues.py``.
"""

from __future__ import annotations

import sys

from absl import flags

from aura.commands.common import emit_result, fail, guarded, validated
from aura.commands.options import Alias, apply_aliases, define_aliases, define_config
from aura.memory.benchmark import eval_config, format_table, parse_policies, run_memory_eval

FLAGS = flags.FLAGS
define_config("memory", "default")
ALIASES = (
    Alias("window", "window", "integer", "turns the window policy sees"),
    Alias("on_bad_record", "on_bad_record", "enum", "a bad JSONL line", ("skip", "fail")),
    Alias("policies", "policies", "string", "comma-separated policies to evaluate"),
)
define_aliases(ALIASES)
flags.DEFINE_string("dialogues", None, "dialogue JSONL file (one dialogue per line)")
flags.DEFINE_string("metrics_out", None, "also write the metrics JSON here")
flags.DEFINE_string("encoder", None, "sentence-transformers directory (default: MiniLM)")


def main(argv):
    del argv
    c = validated(lambda: apply_aliases(FLAGS.config, ALIASES))
    cfg = validated(lambda: eval_config(c.to_dict()))
    policies = validated(lambda: parse_policies(c.policies))
    if not FLAGS.dialogues:
        fail("--dialogues FILE.jsonl is required (make one: python tools/make_memory_devset.py)")
    result = guarded(
        lambda: validated(
            lambda: run_memory_eval(
                FLAGS.dialogues,
                None,
                policies=policies,
                window=c.window,
                on_bad_record=c.on_bad_record,
                encoder_dir=FLAGS.encoder,
                config=cfg,
                log=lambda s: print(s, file=sys.stderr, flush=True),
            )
        )
    )
    print(format_table(result), flush=True)
    emit_result(result, FLAGS.metrics_out)
