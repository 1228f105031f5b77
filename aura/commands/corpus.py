"""``python -m aura.build corpus``: build the embedded corpus from the Python standard library.

Collects the standard library's docstrings and reference topics (parsed with ``ast``; nothing is
imported) into ``--out_dir``: ``text/shard_*.txt`` (training text), ``heldout.txt`` (2% of the
documents, for bits per character), ``instruct.jsonl`` and ``heldout_instruct.jsonl``
(``{instruction, input, output}`` records such as "Explain <name>." -> the docstring's first
paragraph) and ``manifest.json``. Deterministic; about 1.8 MB of text and 7,500 records in a
couple of seconds with the defaults.

    python -m aura.build corpus --out_dir checkpoints/corpus [--max_docs 200]
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, fail, guarded, validated
from aura.data.corpus import build_corpus

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "checkpoints/corpus", "output directory")
flags.DEFINE_integer("max_docs", None, "stop after this many documents (default: all)")
flags.DEFINE_float("heldout_fraction", 0.02, "share of documents held out (every 1/f-th one)")
flags.DEFINE_integer("shards", 4, "text shards for the training documents")
flags.DEFINE_string("stdlib_dir", None, "walk this directory instead of this Python's stdlib")
flags.DEFINE_string("metrics_out", None, "also write the JSON result here")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value or --name value")

    def run():
        return build_corpus(
            FLAGS.out_dir,
            max_docs=FLAGS.max_docs,
            heldout_fraction=FLAGS.heldout_fraction,
            num_shards=FLAGS.shards,
            stdlib_dir=FLAGS.stdlib_dir,
        )

    result = guarded(lambda: validated(run))
    print(
        f"corpus: {result.docs} documents ({result.train_docs} training, {result.heldout_docs} "
        f"held out) in {result.seconds:.1f}s\n"
        f"  text      {result.text_dir}  ({len(result.shards)} shards, {result.text_chars} chars)\n"
        f"  heldout   {result.heldout_text}  ({result.heldout_chars} chars)\n"
        f"  instruct  {result.instruct}  ({result.records} records)\n"
        f"  heldout   {result.heldout_instruct}  ({result.heldout_records} records)\n"
        f"  manifest  {result.manifest}",
        flush=True,
    )
    emit_result(result.as_dict(), FLAGS.metrics_out)
