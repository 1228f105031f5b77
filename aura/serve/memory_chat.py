"""Memory-aware chat: a `Chat` that remembers across turns and processes (``chat --memory_db``).

Per user turn `MemoryChat.respond`:

1. recalls the top-k episodes of the `aura.memory.session.MemorySession` (the hippocampal index:
   dense, entity, ... cues, write-time supersession) plus the working-memory buffer's best items;
2. puts them in front of the prompt as a ``Memories:`` block, best first, keeping as many whole
   memories as fit ``max_len`` with the prompt (a notice on stderr says how many were left out);
3. turns them into a top-down routing bias on the LiquidMoE gate (`MemoryGateHead`: the pooled
   memory embedding through the thalamus head when the zone heads are loaded, else the gate's
   own routing of the memories);
4. streams the reply, then stores the user turn and the reply as episodes (written through to
   the SQLite file at once, so a later process on the same file recalls them).

Commands (`MemoryChat.handle`): ``/memories`` (what the last turn recalled and why: every cue's
score, the supersession link, which ones reached the prompt, the gate bias), ``/remember TEXT``
(a note of importance 1), ``/forget ID``, ``/help``. `memory_json` is the ``--json`` shape of a
recalled memory: ``{"id", "text", "score", "components"}``.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any, TextIO

import numpy as np

from aura.memory.session import MemorySession, Recall
from aura.models.memory_head import MemoryGateHead
from aura.models.sentence_encoder import load_sentence_encoder
from aura.serve.chat import Chat

__all__ = ["MemoryChat", "memory_json"]

_HELP = (
    "commands: /memories (what was recalled and why), /remember TEXT, /forget ID, /help; "
    "anything else is a message"
)


def memory_json(r: Recall) -> dict[str, Any]:
    """A recalled memory as ``{"id", "text", "score", "components"}`` (JSON-ready)."""
    return {"id": r.id, "text": r.text, "score": float(r.score), "components": dict(r.components)}


class MemoryChat:
    """A chat with long-term memory (see the module docstring).

    Args:
      chat: the loaded adapter chat.
      memory: the memory session (its store is the ``--memory_db`` file).
      k: stored memories recalled per turn.
      wm_k: extra working-memory items recalled per turn.
      gain: strength of the gate-derived routing bias.
      out: where command output and replies go (default: the current sys.stdout).
      err: where notices go (default: the current sys.stderr).
    """

    def __init__(
        self,
        chat: Chat,
        memory: MemorySession,
        *,
        k: int = 5,
        wm_k: int = 2,
        gain: float = 1.0,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ):
        if k < 1 or wm_k < 0:
            raise ValueError(f"memory k={k} must be >= 1 and wm_k={wm_k} >= 0")
        self.chat, self.memory, self.k, self.wm_k = chat, memory, k, wm_k
        self._out, self._err = out, err
        self.head = MemoryGateHead(
            chat.model, chat.params, thalamus=chat.heads.get("thalamus"), gain=gain
        )
        self.last: dict[str, Any] = {}

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    @classmethod
    def open(
        cls,
        chat: Chat,
        path: str | os.PathLike[str],
        *,
        session: str = "default",
        encoder_dir: str | None = None,
        **kw,
    ) -> MemoryChat:
        """Opens (or creates) the memory file with the encoder in ``encoder_dir`` (default:
        MiniLM). Raises DataError: a file of another encoder (naming both), not a database,
        or locked too long by another process."""
        encoder = load_sentence_encoder(encoder_dir)
        return cls(chat, MemorySession.open(path, session=session, encoder=encoder), **kw)

    def context(self, recalls: list[Recall], prompt: str, max_len: int) -> tuple[str, int]:
        """The ``Memories:`` block of as many whole memories (best first) as fit ``max_len``
        tokens with the prompt, and how many it holds."""
        kept = len(recalls)
        while kept:
            lines = "".join(f"- {r.text}\n" for r in recalls[:kept])
            block = f"Memories:\n{lines}\n"
            if len(self.chat.fmt.encode_prompt(block + prompt)) <= max_len:
                break
            kept -= 1
        if kept < len(recalls):
            print(
                f"[memory: {len(recalls) - kept} of {len(recalls)} recalled memories left out "
                f"of the prompt to fit --max_len {max_len}]",
                file=self.err,
            )
        return (block if kept else ""), kept

    def respond(self, text: str, *, max_len: int, quiet: bool = False, **gen) -> dict[str, Any]:
        """Answers one user turn (see the module docstring); returns ``{"reply", "memories"}``.

        ``quiet`` keeps the streamed reply off ``out`` (for ``--json``); ``gen`` are
        `Chat.answer`'s sampling arguments."""
        recalls = self.memory.recall(text, k=self.k, wm_k=self.wm_k)
        block, kept = self.context(recalls, text, max_len)
        ids = [self.chat.sp.encode(r.text) for r in recalls[:kept]]
        bias, info = self.head(ids, [r.score for r in recalls[:kept]])
        stream, self.chat.out = self.chat.out, io.StringIO() if quiet else self.out
        try:
            reply = self.chat.answer(
                text, max_len=max_len, context=block, extra_bias=bias if kept else None, **gen
            )
        finally:
            self.chat.out = stream
        self.memory.observe("user", text)
        self.memory.observe("assistant", reply)
        self.last = {"query": text, "recalls": recalls, "kept": kept, "bias": bias, **info}
        return {"reply": reply, "memories": [memory_json(r) for r in recalls]}

    def report(self) -> str:
        """What the last turn recalled and why (the ``/memories`` text)."""
        if not self.last:
            return "nothing recalled yet: say something first"
        bias = " ".join(f"{b:+.3f}" for b in np.asarray(self.last["bias"]))
        lines = [
            f"recalled for {self.last['query']!r}: {len(self.last['recalls'])} memories, "
            f"{self.last['kept']} in the prompt; gate bias ({self.last['head']} head): [{bias}]"
        ]
        for n, r in enumerate(self.last["recalls"]):
            comps = ", ".join(
                f"{c} {v:.3f}" for c, v in r.components.items() if c != "superseded_by"
            )
            note = ""
            if "superseded_by" in r.components:
                note = f"; superseded by #{int(r.components['superseded_by'])}"
            where = "prompt" if n < self.last["kept"] else "left out"
            ident = f"#{r.id}" if r.id is not None else "(working memory)"
            lines.append(f"  {ident} score {r.score:.3f} [{r.source}, {where}{note}] {r.text}")
            lines.append(f"      {comps}")
        return "\n".join(lines)

    def handle(self, line: str, **gen) -> None:
        """One line of an interactive session: a command or a message."""
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "/memories":
            print(self.report(), file=self.out)
        elif cmd == "/remember":
            if not arg.strip():
                print("usage: /remember TEXT", file=self.out)
            else:
                print(f"remembered #{self.memory.remember(arg.strip())}", file=self.out)
        elif cmd == "/forget":
            if not arg.strip().lstrip("#").isdigit():
                print("usage: /forget ID (an id that /memories shows)", file=self.out)
            else:
                eid = int(arg.strip().lstrip("#"))
                done = self.memory.forget(eid)
                print(f"forgot #{eid}" if done else f"no memory #{eid}", file=self.out)
        elif cmd.startswith("/"):
            print(_HELP, file=self.out)
        else:
            self.respond(line.strip(), **gen)
        self.out.flush()

    def close(self) -> None:
        """Flushes working memory, consolidates and closes the memory file."""
        self.memory.close()
