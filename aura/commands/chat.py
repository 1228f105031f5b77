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


class Chat:
    """A loaded adapter + tokenizer (+ zone heads) that answers prompts, streaming to ``out``."""

    def __init__(
        self, ckpt: str, spm_model: str | None, out=sys.stdout, ckpt_root: str | None = None
    ):
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
        self.heads: dict = {}
        if ckpt_root:
            from aura.train.zone_store import load_zone_heads

            c = self.model.config
            found = load_zone_heads(ckpt_root, c.num_experts, c.dim)
            self.heads = {z: getattr(found, z)[0] for z in found.present()}

    def controls(self, prompt: str):
        """(RoutingControls or None, info) for ``prompt`` from the loaded zone heads."""
        if not self.heads:
            return None, {}
        from aura.models.zone_heads import compose_controls

        ids = self.sp.encode(prompt)
        return compose_controls(self.model, self.params, self.heads, ids, prompt)

    def routing_distribution(self, prompt: str, use_heads: bool = True):
        """Mean gate probabilities [E] over the formatted prompt's tokens (with/without heads)."""
        import jax.numpy as jnp
        import numpy as np

        from aura.models.adapter import SelfTeachingAdapter

        controls = self.controls(prompt)[0] if use_heads else None
        tokens = jnp.asarray([self.fmt.encode_prompt(prompt)], jnp.int32)
        r = self.model.apply(
            {"params": self.params}, tokens, None, controls, method=SelfTeachingAdapter.gate_weights
        )
        return np.asarray(r.probs).mean(axis=0)

    def answer(
        self, prompt: str, *, max_len, gen_len, temperature=None, top_k=0, top_p=1.0, seed=0
    ) -> str:
        """Streams the answer to ``prompt``; ``temperature=None``: the hypothalamus' (or 1.0)."""
        import jax

        controls, info = self.controls(prompt)
        self.gen.controls = controls  # same shapes for every prompt: no retrace
        if temperature is None:
            temperature = info.get("temperature", 1.0)
        if self.heads:
            print(
                f"[zone heads: {', '.join(sorted(self.heads))}; temperature {temperature:.3g}]",
                file=sys.stderr,
            )
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
