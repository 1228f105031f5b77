"""``python -m aura.build inspect``: a table of the zones and experts under a checkpoint root.

    python -m aura.build inspect --ckpt_root checkpoints/zones [--zone thalamus|joint] [--json]

One row per expert, head and adapter: shapes, parameter count, training step, key metrics and
utilisation, and a status (ok, recovered, CORRUPT, INCOMPLETE, MISSING). Every array is read
back (``--noverify`` reads only the manifests). Exit code 0 when everything is usable, 2 when
anything is corrupt, incomplete or missing (each named, with the reason, on stderr).
"""

from __future__ import annotations

import sys

from absl import flags, logging

from aura.commands.common import fail, guarded, validated
from aura.experiments.zones.report import inspect_root

FLAGS = flags.FLAGS
flags.DEFINE_string("ckpt_root", "checkpoints", "root written by pretrain_zones")
flags.DEFINE_string("zone", None, "only this zone (or joint: the joint stage)")
flags.DEFINE_boolean("json", False, "print JSON instead of a table")
flags.DEFINE_boolean("verify", True, "read every array back (not just the manifests)")


def main(argv):
    logging.set_verbosity(logging.ERROR)  # orbax warns that read-only managers do not save
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    code = guarded(
        lambda: validated(
            lambda: inspect_root(FLAGS.ckpt_root, FLAGS.zone, FLAGS.json, FLAGS.verify)
        )
    )
    sys.stdout.flush()
    sys.exit(code)
