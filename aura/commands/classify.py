"""``python -m aura.build classify``: predict with a trained MOCA text classifier.

Loads the final checkpoint of a ``moca --task textcls`` run (``--ckpt`` is its ``--workdir``;
never an earlier "best" step). With ``--text`` it prints one JSON line per text: label,
probabilities and confidence. Without it, an interactive session reads one text per line;
``help`` lists the commands, ``stats`` prints the architecture and config, ``quit`` ends.

    python -m aura.build classify --ckpt runs/moca_text --text "Return the square root of x."
"""

from __future__ import annotations

import json
import sys

from absl import flags

from aura.commands.common import guarded, validated
from aura.experiments.moca.classifier import Classifier

FLAGS = flags.FLAGS
flags.DEFINE_string("ckpt", None, "the --workdir of a finished `moca --task textcls` run")
flags.DEFINE_multi_string("text", None, "text to classify (repeatable); none: interactive")

HELP = """commands:
  <text>   classify the line (prints label, confidence and probabilities as JSON)
  stats    architecture and config of the loaded classifier
  help     this list
  quit     end the session (also: exit, end of input)"""


def _line(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def interactive(clf: Classifier, stdin=sys.stdin, out=sys.stdout) -> None:
    """The read-classify loop (``help``, ``stats``, ``quit``)."""
    print(f"classifier over {len(clf.labels)} labels (step {clf.step}); type help", file=out)
    for raw in stdin:
        line = raw.strip()
        if not line:
            continue
        if line in ("quit", "exit"):
            break
        if line == "help":
            print(HELP, file=out)
        elif line == "stats":
            print(_line(clf.stats()), file=out)
        else:
            print(_line(clf.predict([line])[0]), file=out)
        out.flush()


def main(argv):
    del argv

    def check():
        if not FLAGS.ckpt:
            raise ValueError("--ckpt is required: the --workdir of a `moca --task textcls` run")
        if FLAGS.text is not None and not all(t.strip() for t in FLAGS.text):
            raise ValueError("--text is empty; give some text to classify")

    validated(check)
    clf = guarded(lambda: Classifier(FLAGS.ckpt))
    if FLAGS.text:
        for pred in guarded(lambda: clf.predict(list(FLAGS.text))):
            print(_line(pred), flush=True)
        return
    interactive(clf)
