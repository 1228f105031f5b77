"""``python -m aura.build tokenizer``: train a SentencePiece tokenizer on a text directory.

Streams the cleaned lines of every ``*.txt`` (and the text fields of every ``*.jsonl``) under
``--input_dir`` into SentencePiece and writes ``spiece.model``/``spiece.vocab`` to ``--out_dir``
(trained in a temporary directory, then moved into place). Ids: pad 0, unk 1, bos 2, eos 3, then
the user symbols (default <INST>=4 <INP>=5 <RESP>=6 <SEP>=7) and the newline piece. Prints the
piece count and what cleaning changed, then one JSON line.

    python -m aura.build tokenizer --input_dir checkpoints/corpus/text --out_dir checkpoints/tok \\
        --vocab_size 4000 --model_type unigram --use_iterator 1 --ascii_only 0 \\
        --user_symbols "<INST>,<INP>,<RESP>,<SEP>" --byte_fallback 1 --clean_controls 1 \\
        --normalize_spaces 1 --max_sentence_length 4192 --hard_vocab_limit 0
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, fail, guarded, validated
from aura.data.tokenizer import TokenizerConfig, parse_symbols, train_tokenizer

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "directory of *.txt / *.jsonl files (or one file)")
flags.DEFINE_string("out_dir", None, "where spiece.model and spiece.vocab are written")
flags.DEFINE_integer("vocab_size", 4000, "pieces, specials + user symbols + byte pieces included")
flags.DEFINE_string("model_type", "unigram", "unigram | bpe")
flags.DEFINE_integer("use_iterator", 1, "1: stream lines into SentencePiece; 0: temporary file")
flags.DEFINE_integer("ascii_only", 0, "1: drop non-ASCII characters (counted)")
flags.DEFINE_string("user_symbols", "<INST>,<INP>,<RESP>,<SEP>", "comma-separated pieces")
flags.DEFINE_integer("newline_symbol", 1, "1: add '\\n' as a piece so newlines survive")
flags.DEFINE_integer("byte_fallback", 1, "1: unknown characters become UTF-8 byte pieces")
flags.DEFINE_integer("clean_controls", 1, "1: remove NUL and other control characters")
flags.DEFINE_integer("normalize_spaces", 1, "1: collapse runs of whitespace, strip lines")
flags.DEFINE_integer("max_sentence_length", 4192, "longest line in bytes; longer lines are split")
flags.DEFINE_integer("hard_vocab_limit", 0, "1: fail if the text cannot fill --vocab_size")
flags.DEFINE_integer("input_sentence_size", 1_000_000, "lines SentencePiece samples (0: all)")
flags.DEFINE_integer("shuffle_input_sentence", 1, "1: sample lines at random, 0: take the first")
flags.DEFINE_integer("num_threads", 0, "trainer threads (0: one per CPU core)")
flags.DEFINE_string("text_fields", "text,instruction,input,output", "fields read from *.jsonl")
flags.DEFINE_string("on_bad_record", "skip", "skip | fail on a *.jsonl line that is not JSON")
flags.DEFINE_integer("verbose", 0, "1: show SentencePiece's own log")
flags.DEFINE_string("metrics_out", None, "also write the JSON result here")

_SWITCHES = (
    "use_iterator",
    "ascii_only",
    "newline_symbol",
    "byte_fallback",
    "clean_controls",
    "normalize_spaces",
    "hard_vocab_limit",
    "shuffle_input_sentence",
    "verbose",
)


def build_config():
    for name in _SWITCHES:
        if FLAGS[name].value not in (0, 1):
            raise ValueError(f"--{name}={FLAGS[name].value} must be 0 or 1")
    fields = tuple(f.strip() for f in FLAGS.text_fields.split(",") if f.strip())
    return TokenizerConfig(
        vocab_size=FLAGS.vocab_size,
        model_type=FLAGS.model_type,
        use_iterator=bool(FLAGS.use_iterator),
        ascii_only=bool(FLAGS.ascii_only),
        user_symbols=parse_symbols(FLAGS.user_symbols),
        newline_symbol=bool(FLAGS.newline_symbol),
        byte_fallback=bool(FLAGS.byte_fallback),
        clean_controls=bool(FLAGS.clean_controls),
        normalize_spaces=bool(FLAGS.normalize_spaces),
        max_sentence_length=FLAGS.max_sentence_length,
        hard_vocab_limit=bool(FLAGS.hard_vocab_limit),
        input_sentence_size=FLAGS.input_sentence_size,
        shuffle_input_sentence=bool(FLAGS.shuffle_input_sentence),
        num_threads=FLAGS.num_threads,
        text_fields=fields,
        on_bad_record=FLAGS.on_bad_record,
        verbose=bool(FLAGS.verbose),
    )


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value or --name value")
    if not FLAGS.input_dir or not FLAGS.out_dir:
        fail("--input_dir and --out_dir are required")
    cfg = validated(build_config)
    result = guarded(lambda: train_tokenizer(FLAGS.input_dir, FLAGS.out_dir, cfg))
    s = result.stats
    print(
        f"tokenizer: {result.piece_size} pieces (asked {cfg.vocab_size}) -> {result.model_path} "
        f"in {result.seconds:.1f}s\n"
        f"  text: {s.files} files, {s.lines_out} lines, {s.chars_out} characters\n"
        f"  cleaning: {s.replaced_bytes} non-UTF-8 bytes replaced, {s.split_lines} long lines "
        f"split (+{s.extra_pieces} pieces), {s.removed_controls} control characters removed, "
        f"{s.removed_non_ascii} non-ASCII characters removed",
        flush=True,
    )
    if s.bad_records:
        print(f"  skipped {s.bad_records} bad JSONL lines, e.g. {s.bad_examples[0]}", flush=True)
    if cfg.input_sentence_size and s.lines_out > cfg.input_sentence_size:
        print(
            f"  note: SentencePiece sampled {cfg.input_sentence_size} of {s.lines_out} lines "
            "(--input_sentence_size)",
            flush=True,
        )
    emit_result(result.as_dict(), FLAGS.metrics_out)
