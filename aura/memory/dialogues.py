"""The memory benchmark's dialogue format: one JSON object per line.

    {"id": "...", "turns": [{"speaker": "...", "text": "...", "session": 1, "time": "..."}],
     "questions": [{"question": "...", "answer": "...", "evidence": [turn indices],
                    "kind": "..."}]}

``session`` and ``time`` (ISO 8601) are optional; ``evidence`` indexes ``turns`` from 0 and
``kind`` defaults to ``"unknown"``. `read_dialogues` validates every record: a bad line is reported
as ``file:line: what is wrong`` and skipped (``on_bad_record="skip"``, the count is returned) or
stops the read (``"fail"``, a `DataError`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import unicodedata

from aura.data.errors import DataError

__all__ = ["Dialogue", "Question", "Turn", "normalize_answer", "read_dialogues", "write_dialogues"]


@dataclasses.dataclass(frozen=True)
class Turn:
    """One utterance; ``time`` is seconds since the epoch (None when the record had none)."""

    speaker: str
    text: str
    session: str = ""
    time: float | None = None


@dataclasses.dataclass(frozen=True)
class Question:
    """A question with its gold answer, evidence turn indices and kind."""

    question: str
    answer: str
    evidence: tuple[int, ...]
    kind: str = "unknown"


@dataclasses.dataclass(frozen=True)
class Dialogue:
    """A dialogue: its id, turns in order and questions about them."""

    id: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]

    def to_json(self) -> dict:
        """The JSONL record (times written back as ISO 8601 UTC)."""

        def turn(t: Turn) -> dict:
            d = {"speaker": t.speaker, "text": t.text}
            if t.session:
                d["session"] = t.session
            if t.time is not None:
                d["time"] = dt.datetime.fromtimestamp(t.time, dt.UTC).isoformat()
            return d

        return {
            "id": self.id,
            "turns": [turn(t) for t in self.turns],
            "questions": [
                {"question": q.question, "answer": q.answer, "evidence": list(q.evidence)}
                | {"kind": q.kind}
                for q in self.questions
            ],
        }


def normalize_answer(text: str) -> str:
    """Lower case, accents kept, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def _time(value, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{where}: time {value!r} is not ISO 8601 or seconds") from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _parse(obj) -> Dialogue:
    if not isinstance(obj, dict):
        raise ValueError("a record must be a JSON object")
    turns_raw, qs_raw = obj.get("turns"), obj.get("questions", [])
    if not isinstance(turns_raw, list) or not turns_raw:
        raise ValueError('"turns" must be a non-empty list')
    if not isinstance(qs_raw, list):
        raise ValueError('"questions" must be a list')
    turns = []
    for i, t in enumerate(turns_raw):
        if not isinstance(t, dict) or not isinstance(t.get("text"), str):
            raise ValueError(f'turns[{i}] must be an object with a string "text"')
        session = t.get("session", "")
        turns.append(
            Turn(
                str(t.get("speaker", "")),
                t["text"],
                str(session),
                _time(t.get("time"), f"turns[{i}]"),
            )
        )
    questions = []
    for i, q in enumerate(qs_raw):
        if not isinstance(q, dict) or not all(
            isinstance(q.get(k), str) for k in ("question", "answer")
        ):
            raise ValueError(f'questions[{i}] needs string "question" and "answer"')
        ev = q.get("evidence", [])
        if not isinstance(ev, list) or not all(
            isinstance(e, int) and not isinstance(e, bool) and 0 <= e < len(turns) for e in ev
        ):
            raise ValueError(f"questions[{i}].evidence must be turn indices in [0, {len(turns)})")
        questions.append(
            Question(q["question"], q["answer"], tuple(ev), str(q.get("kind", "unknown")))
        )
    return Dialogue(str(obj.get("id", "")), tuple(turns), tuple(questions))


def read_dialogues(
    path: str | os.PathLike[str], *, on_bad_record: str = "skip"
) -> tuple[list[Dialogue], list[str]]:
    """Reads a dialogue JSONL file.

    Args:
      path: the file.
      on_bad_record: ``"skip"`` (report and go on) or ``"fail"`` (raise on the first bad line).

    Returns:
      ``(dialogues, problems)``: the good records and one ``file:line: reason`` per skipped line.

    Raises:
      DataError: the file is missing or holds no good record, or (``"fail"``) a bad line.
      ValueError: a bad ``on_bad_record``.
    """
    if on_bad_record not in ("skip", "fail"):
        raise ValueError(f"on_bad_record={on_bad_record!r} must be 'skip' or 'fail'")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"dialogue file {path} does not exist")
    dialogues, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = _parse(json.loads(line))
            except (json.JSONDecodeError, ValueError) as e:
                msg = f"{path}:{lineno}: {e}"
                if on_bad_record == "fail":
                    raise DataError(msg + " (use on_bad_record='skip' to skip bad lines)") from e
                problems.append(msg)
                continue
            dialogues.append(dataclasses.replace(d, id=d.id or f"line{lineno}"))
    if not dialogues:
        raise DataError(f"{path} has no valid dialogue ({len(problems)} bad lines)")
    return dialogues, problems


def write_dialogues(path: str | os.PathLike[str], dialogues: list[Dialogue]) -> None:
    """Writes dialogues as JSONL (to a temporary name, then renamed)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for d in dialogues:
            f.write(json.dumps(d.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
