"""``python -m aura.build chat``: generate with a pretrained adapter, streaming tokens.

    python -m aura.build chat --spm_model tok/spiece.model --ckpt checkpoints/lm \
        --prompt "Explain json.dumps" [--max_len 256 --gen_len 64 --temperature 1.0 \
        --top_k 0 --top_p 1.0 --seed 0]

The prompt is formatted like the training records (<INST> prompt <RESP>), consumed once by the
sequence form, and generation continues with the recurrent state (constant cost per token).
Without ``--prompt`` it is an interactive session; EOF (Ctrl-D) or Ctrl-C end it cleanly.

Composed chat: ``--ckpt_root checkpoints/zones`` (written by ``pretrain_zones``) also loads the
zone heads found there. For each prompt the thalamus centroids add a gate bias (negative squared
distance of the prompt's token embeddings to each expert's centroid), the amygdala head adds a
bias from the prompt's affect vector, and the hypothalamus control head sets the sampling
temperature — unless ``--temperature`` is given explicitly, which wins.
"""

from __future__ import annotations

import sys

from absl import flags

from aura.commands.common import guarded, validated
from aura.serve.chat import Chat, clean_text, validate_sampling

FLAGS = flags.FLAGS
flags.DEFINE_string("spm_model", None, "SentencePiece model the adapter was trained with")
flags.DEFINE_string("ckpt", "checkpoints/lm", "pretrain checkpoint directory (--ckpt_out)")
flags.DEFINE_string("ckpt_root", None, "zone checkpoints (pretrain_zones): compose the heads")
flags.DEFINE_string("prompt", None, "one prompt; without it, an interactive session")
flags.DEFINE_integer("max_len", 256, "longest prompt kept (cut from the left)")
flags.DEFINE_integer("gen_len", 64, "tokens to generate at most")
flags.DEFINE_float("temperature", 1.0, "sampling temperature >= 0 (0: greedy; wins over heads)")
flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens (0: off)")
flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass in (0, 1] (1: off)")
flags.DEFINE_integer("seed", 0, "sampling seed")


def _lines():
    """Prompts read from stdin (bad UTF-8 replaced and counted); ends on EOF or a closed stdin."""
    if sys.stdin is None or sys.stdin.closed:
        print("stdin is closed: nothing to read", file=sys.stderr)
        return
    sys.stdin.reconfigure(errors="surrogateescape")
    while True:
        try:
            line = input("> ")
        except (EOFError, OSError, RuntimeError):  # EOF, or stdin lost mid-session
            return
        yield line


def _clean(text: str) -> str:
    text, bad = clean_text(text)
    if bad:
        print(f"[{bad} bytes that are not UTF-8 replaced]", file=sys.stderr)
    return text


def main(argv):
    del argv
    temperature = FLAGS.temperature if FLAGS["temperature"].present else None
    validated(lambda: validate_sampling(
        FLAGS.gen_len, FLAGS.max_len, temperature, FLAGS.top_k, FLAGS.top_p))  # fmt: skip
    chat = guarded(lambda: Chat(FLAGS.ckpt, FLAGS.spm_model, ckpt_root=FLAGS.ckpt_root))
    explicit = FLAGS["temperature"].present or "hypothalamus" not in chat.heads
    opts = dict(
        max_len=FLAGS.max_len,
        gen_len=FLAGS.gen_len,
        temperature=FLAGS.temperature if explicit else None,
        top_k=FLAGS.top_k,
        top_p=FLAGS.top_p,
    )
    if FLAGS.prompt is not None:
        chat.answer(_clean(FLAGS.prompt), seed=FLAGS.seed, **opts)
        return
    print("AURA chat: type a prompt, Ctrl-D or Ctrl-C to quit.", file=sys.stderr)
    try:
        for turn, line in enumerate(_lines()):
            if line.strip():
                chat.answer(_clean(line), seed=FLAGS.seed + turn, **opts)
    except KeyboardInterrupt:
        pass
    print("bye", file=sys.stderr)
