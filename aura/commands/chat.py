"""``python -m aura.build chat``: generate with a pretrained adapter, streaming tokens.

    python -m aura.build chat --spm_model tok/spiece.model --ckpt checkpoints/lm \
        --prompt "Explain json.dumps" [--max_len 256 --gen_len 64 --temperature 1.0 \
        --top_k 0 --top_p 1.0 --seed 0]

The prompt is formatted like the training records (<INST> prompt <RESP>), consumed once by the
sequence form, and generation continues with the recurrent state (constant cost per token).
Without ``--prompt`` it is an interactive session; EOF (Ctrl-D) or Ctrl-C end it cleanly.
"""

from __future__ import annotations

import sys

from absl import flags

from aura.commands.common import guarded, validated

FLAGS = flags.FLAGS
flags.DEFINE_string("spm_model", None, "SentencePiece model the adapter was trained with")
flags.DEFINE_string("ckpt", "checkpoints/lm", "pretrain checkpoint directory (--ckpt_out)")
flags.DEFINE_string("prompt", None, "one prompt; without it, an interactive session")
flags.DEFINE_integer("max_len", 256, "longest prompt kept (cut from the left)")
flags.DEFINE_integer("gen_len", 64, "tokens to generate at most")
flags.DEFINE_float("temperature", 1.0, "sampling temperature (0: greedy)")
flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens (0: off)")
flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass (1: off)")
flags.DEFINE_integer("seed", 0, "sampling seed")


class Chat:
    """A loaded adapter + tokenizer that answers prompts, streaming to ``out``."""

    def __init__(self, ckpt: str, spm_model: str | None, out=sys.stdout):
        from aura.data.instruct import InstructFormatter
        from aura.data.tokenizer import check_piece_count, load_tokenizer
        from aura.models.generate import Generator
        from aura.train.lm_loop import load_adapter

        self.model, self.params, meta = load_adapter(ckpt)
        self.sp = load_tokenizer(spm_model or meta["spm_model"])
        check_piece_count(self.sp, self.model.config.vocab_size, what="the adapter's vocabulary")
        self.fmt = InstructFormatter(self.sp, max_len=max(4, int(meta.get("max_len", 256))))
        self.gen = Generator(self.model, self.params)
        self.stop = (self.fmt.sep_id, self.sp.eos_id())
        self.out = out

    def answer(self, prompt: str, *, max_len, gen_len, temperature, top_k, top_p, seed) -> str:
        import jax

        ids = self.fmt.encode_prompt(prompt)
        if len(ids) > max_len:
            print(f"[prompt of {len(ids)} tokens cut to the last {max_len}]", file=sys.stderr)
            ids = ids[-max_len:]
        new: list[int] = []
        shown = ""
        stream = self.gen.stream(
            ids,
            gen_len,
            key=jax.random.key(seed),
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop_ids=self.stop,
        )
        for tid in stream:
            new.append(tid)
            text = self.sp.decode(new)
            self.out.write(text[len(shown) :])
            self.out.flush()
            shown = text
        self.out.write("\n")
        return shown


def main(argv):
    del argv
    if FLAGS.gen_len < 1 or FLAGS.max_len < 4:
        validated(lambda: (_ for _ in ()).throw(ValueError("--gen_len >= 1 and --max_len >= 4")))
    chat = guarded(lambda: Chat(FLAGS.ckpt, FLAGS.spm_model))
    opts = dict(
        max_len=FLAGS.max_len,
        gen_len=FLAGS.gen_len,
        temperature=FLAGS.temperature,
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
