"""Runs the memory benchmark (`aura.memory.benchmark.run_memory_eval`) from the shell.

    python tools/memory_eval.py --dialogues aura/memory/assets/memory_dev.jsonl \
        --metrics_out checkpoints/memory_dev.json [--policies window,lexical,hybrid] [--window 64]

Prints a table, then the metrics JSON as the last stdout line. Bad input ends with one
``error:`` line and exit status 2. (A ``memory_eval`` command of ``python -m aura.build`` is the
same call behind absl flags.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aura.memory.benchmark import format_table, run_memory_eval  # noqa: E402
from aura.memory.evaluate import POLICIES  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dialogues", required=True)
    p.add_argument("--metrics_out", default=None)
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--on_bad_record", choices=("skip", "fail"), default="skip")
    p.add_argument("--encoder", default=None, help="sentence-transformers directory")
    a = p.parse_args()
    try:
        m = run_memory_eval(
            a.dialogues,
            a.metrics_out,
            policies=[x for x in a.policies.split(",") if x],
            window=a.window,
            on_bad_record=a.on_bad_record,
            encoder_dir=a.encoder,
            log=lambda s: print(s, file=sys.stderr),
        )
    except ValueError as e:  # DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_table(m))
    print(json.dumps(m))


if __name__ == "__main__":
    main()
