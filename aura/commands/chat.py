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

from aura.commands.common import fail, guarded
from aura.serve.chat import Chat

FLAGS = flags.FLAGS
flags.DEFINE_string("spm_model", None, "SentencePiece model the adapter was trained with")
flags.DEFINE_string("ckpt", "checkpoints/lm", "pretrain checkpoint directory (--ckpt_out)")
flags.DEFINE_string("ckpt_root", None, "zone checkpoints (pretrain_zones): compose the heads")
flags.DEFINE_string("prompt", None, "one prompt; without it, an interactive session")
flags.DEFINE_integer("max_len", 256, "longest prompt kept (cut from the left)")
flags.DEFINE_integer("gen_len", 64, "tokens to generate at most")
flags.DEFINE_float("temperature", 1.0, "sampling temperature (0: greedy; wins over the heads)")
flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens (0: off)")
flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass (1: off)")
flags.DEFINE_integer("seed", 0, "sampling seed")


def main(argv):
    del argv
    if FLAGS.gen_len < 1 or FLAGS.max_len < 4:
        fail(f"--gen_len={FLAGS.gen_len} must be >= 1 and --max_len={FLAGS.max_len} >= 4")
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
        chat.answer(FLAGS.prompt, seed=FLAGS.seed, **opts)
        return
    print("AURA chat: type a prompt, Ctrl-D or Ctrl-C to quit.", file=sys.stderr)
    turn = 0
    try:
        while True:
            try:
                line = input("> ")
            except EOFError:
                break
            if line.strip():
                chat.answer(line, seed=FLAGS.seed + turn, **opts)
                turn += 1
    except KeyboardInterrupt:
        pass
    print("bye", file=sys.stderr)
