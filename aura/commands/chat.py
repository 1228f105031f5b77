"""``python -m aura.build chat``: generate with a pretrained adapter, streaming tokens.

    python -m aura.build chat --spm_model tok/spiece.model --ckpt checkpoints/lm \
        --prompt "Explain json.dumps" [--max_len 256 --gen_len 64 --temperature 1.0 \
        --top_k 0 --top_p 1.0 --seed 0]

The prompt is formatted like the training records (<INST> prompt <RESP>), consumed once by the
sequence form, and generation continues with the recurrent state (constant cost per token).
Without ``--prompt`` it is an interactive session; EOF (Ctrl-D) or Ctrl-C end it cleanly.

Composed chat: ``--ckpt_root checkpoints/zones`` (written by ``pretrain_zones``) also loads the
zone heads: the thalamus centroids and the amygdala add gate biases and the hypothalamus sets the
sampling temperature, unless ``--temperature`` is given explicitly, which wins.

Memory: ``--memory_db memory.db [--session NAME] [--encoder DIR]`` stores every turn and reply
(SQLite) and, before each reply, puts the top ``--memory_k`` memories in front of the prompt and
adds their routing bias to the gate (aura/serve/memory_chat.py). Interactive commands:
``/memories``, ``/remember TEXT``, ``/forget ID``. ``--json`` (with ``--prompt``) prints one JSON
object ``{"reply": ..., "memories": [{"id", "text", "score", "components"}]}``.

    python -m aura.build chat --ckpt checkpoints/lm --memory_db memory.db \
        --prompt "Remember: the spare key is under the blue pot."
    python -m aura.build chat --ckpt checkpoints/lm --memory_db memory.db --json \
        --prompt "Where is the spare key?"
"""

from __future__ import annotations

import functools
import io
import json
import sys

from absl import flags

from aura.commands.common import fail, guarded, validated
from aura.serve.chat import Chat, clean_text, validate_sampling
from aura.serve.memory_chat import MemoryChat

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
flags.DEFINE_string("memory_db", None, "long-term memory file (SQLite): remember across sessions")
flags.DEFINE_string("session", "default", "conversation name stored with each turn")
flags.DEFINE_string("encoder", None, "sentence-transformers directory (default: MiniLM)")
flags.DEFINE_integer("memory_k", 5, "memories recalled before each reply")
flags.DEFINE_boolean("json", False, "with --prompt: print one JSON object (reply, memories)")


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
    if FLAGS.json and FLAGS.prompt is None:
        fail("--json prints one reply: give --prompt too")
    chat = guarded(lambda: Chat(FLAGS.ckpt, FLAGS.spm_model, ckpt_root=FLAGS.ckpt_root))
    explicit = FLAGS["temperature"].present or "hypothalamus" not in chat.heads
    opts = dict(max_len=FLAGS.max_len, gen_len=FLAGS.gen_len, top_k=FLAGS.top_k,
                temperature=FLAGS.temperature if explicit else None, top_p=FLAGS.top_p)  # fmt: skip
    bot = None
    if FLAGS.memory_db:
        bot = guarded(lambda: validated(lambda: MemoryChat.open(
            chat, FLAGS.memory_db, session=FLAGS.session, encoder_dir=FLAGS.encoder,
            k=FLAGS.memory_k)))  # fmt: skip
    if bot is not None:
        say = lambda text, **kw: bot.respond(text, quiet=FLAGS.json, **kw)
        interactive = bot.handle
    else:
        chat.out = io.StringIO() if FLAGS.json else chat.out
        say = lambda text, **kw: {"reply": chat.answer(text, **kw), "memories": []}
        interactive = chat.answer
    try:
        if FLAGS.prompt is not None:
            result = guarded(functools.partial(say, _clean(FLAGS.prompt), seed=FLAGS.seed, **opts))
            if FLAGS.json:
                print(json.dumps(result), flush=True)
            return
        print("AURA chat: type a prompt, Ctrl-D or Ctrl-C to quit.", file=sys.stderr)
        try:
            for turn, line in enumerate(_lines()):
                if line.strip():
                    guarded(functools.partial(
                        interactive, _clean(line), seed=FLAGS.seed + turn, **opts))  # fmt: skip
        except KeyboardInterrupt:
            pass
        print("bye", file=sys.stderr)
    finally:
        if bot is not None:
            guarded(bot.close)
