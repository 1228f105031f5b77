"""Chat sessions with a pretrained adapter (and, optionally, the zone heads): the inference library.

``Chat(ckpt, spm_model, ckpt_root=...)`` loads a ``pretrain`` run (and the heads that
``pretrain_zones`` fitted) and ``answer(prompt, ...)`` streams a reply: the prompt, formatted like
the training records (<INST> prompt <RESP>), is consumed once by the sequence form and generation
continues with the recurrent state (constant cost per token, ``sampling.Generator``). With zone
heads, each prompt gets routing controls: the thalamus centroids add a gate bias, the amygdala a
bias from the prompt's affect vector, and the hypothalamus sets the sampling temperature unless
one is given explicitly.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from aura.data.instruct import InstructFormatter
from aura.data.tokenizer import check_piece_count, load_tokenizer
from aura.experiments.lm.pretrain import load_adapter
from aura.experiments.zones.store import load_zone_heads
from aura.models.adapter import SelfTeachingAdapter
from aura.models.zone_heads import compose_controls
from aura.serve.sampling import Generator

__all__ = ["Chat", "clean_text", "validate_sampling"]


def clean_text(text: str) -> tuple[str, int]:
    """Text as it came from argv or stdin, with bytes that are not UTF-8 replaced by U+FFFD.

    Python hands undecodable bytes over as lone surrogates (``surrogateescape``); SentencePiece
    cannot encode those. Returns ``(clean text, number of bytes replaced)``.
    """
    raw = text.encode("utf-8", "surrogateescape")
    clean = raw.decode("utf-8", "replace")
    return clean, clean.count("\ufffd") - text.count("\ufffd")


def validate_sampling(gen_len: int, max_len: int, temperature, top_k: int, top_p: float) -> None:
    """Raises ValueError for sampling settings that cannot mean what they say.

    ``temperature`` 0 is greedy decoding (None: the hypothalamus' or 1.0); ``top_k`` 0 and
    ``top_p`` 1 switch those filters off.
    """
    if gen_len < 1 or max_len < 4:
        raise ValueError(f"--gen_len={gen_len} must be >= 1 and --max_len={max_len} >= 4")
    if temperature is not None and not temperature >= 0:
        raise ValueError(f"--temperature={temperature} must be >= 0 (0: greedy decoding)")
    if top_k < 0:
        raise ValueError(f"--top_k={top_k} must be >= 0 (0: off)")
    if not 0 < top_p <= 1:
        raise ValueError(f"--top_p={top_p} must be in (0, 1] (1: off)")


class Chat:
    """A loaded adapter + tokenizer (+ zone heads) that answers prompts, streaming to ``out``."""

    def __init__(
        self, ckpt: str, spm_model: str | None, out=sys.stdout, ckpt_root: str | None = None
    ):
        """Loads the adapter in ``ckpt`` (a pretrain run directory), its tokenizer (``spm_model``
        or the one the run recorded) and, with ``ckpt_root``, the zone heads found there.

        Raises:
          CheckpointError: a missing or damaged checkpoint or head. DataError: a tokenizer
            that is missing or does not match the adapter's vocabulary.
        """
        self.model, self.params, meta = load_adapter(ckpt)
        self.sp = load_tokenizer(spm_model or meta["spm_model"])
        check_piece_count(self.sp, self.model.config.vocab_size, what="the adapter's vocabulary")
        self.fmt = InstructFormatter(self.sp, max_len=max(4, int(meta.get("max_len", 256))))
        self.gen = Generator(self.model, self.params)
        self.stop = (self.fmt.sep_id, self.sp.eos_id())
        self.out = out
        self.heads: dict = {}
        if ckpt_root:
            c = self.model.config
            found = load_zone_heads(ckpt_root, c.num_experts, c.dim)
            self.heads = {z: getattr(found, z)[0] for z in found.present()}

    def controls(self, prompt: str):
        """(RoutingControls or None, info) for ``prompt`` from the loaded zone heads."""
        if not self.heads:
            return None, {}
        ids = self.sp.encode(prompt)
        return compose_controls(self.model, self.params, self.heads, ids, prompt)

    def routing_distribution(self, prompt: str, use_heads: bool = True):
        """Mean gate probabilities [E] over the formatted prompt's tokens (with/without heads)."""
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
