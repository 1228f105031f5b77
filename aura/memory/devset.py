"""Generates memory-benchmark dialogues: personal facts told once, updated, and buried in chatter.

A dialogue is a long multi-session chat in which the user mentions facts about people they know
("Mara lives in Lisbon.") and sometimes updates one later ("Mara moved to Porto last month."),
between many distractor turns: real English from the embedded corpus (standard-library
docstrings, as if the user asked about Python), small talk that names the same people without the
fact, and the same kind of fact about other people. At the end come the questions:

* ``single``: a fact told once (evidence: that turn);
* ``latest``: a fact told and later updated; the update must win (evidence: the update turn,
  gold answer: the new value);
* ``early``: a fact told in the first 10% of the dialogue (evidence: that turn).

Two template sets exist: ``variant="dev"`` (tuning) and ``variant="heldout"`` (statements,
updates, questions, names and distractor mix that the dev set never uses), for a sanity check
of what was tuned on dev.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from aura.data.corpus import iter_stdlib_docs
from aura.memory.dialogues import Dialogue, Question, Turn

__all__ = ["VARIANTS", "corpus_sentences", "generate"]

VARIANTS = ("dev", "heldout")
_NAMES = (
    "Mara Tomas Ines Bruno Lena Hugo Alma Omar Nina Felix Rosa Ivan Clara Diego Yara Emil Sofia "
    "Karim Ada Leon Maya Otto Lucia Pavel Zoe Nils Elena Rafael Iris Jonas Aiko Marek Vera Sami "
    "Greta Tariq Helga Dmitri Noor Anton Freya Mateo Linnea Kofi Petra Ravi Selma Bodhi Ilse Amir"
).split()
# attribute: (values, dev statements, heldout statements, dev updates, heldout updates,
#             dev questions, heldout questions)
_ATTRS = {
    "city": (
        "Lisbon Porto Oslo Bergen Kyoto Osaka Quito Lima Dakar Accra Tallinn Riga Krakow Gdansk "
        "Bilbao Seville Graz Linz Perth Hobart".split(),
        ["{p} lives in {v}.", "My friend {p} has been living in {v} for years."],
        ["{p} settled down in {v} a while ago.", "These days {p} calls {v} home."],
        ["Actually, {p} moved to {v} last month.", "Update on {p}: now living in {v}."],
        ["{p} just relocated to {v}, by the way.", "Big news, {p} packed up and went to {v}."],
        ["Where does {p} live?", "Which city is {p} in now?"],
        ["What city is {p} based in?", "Where could I visit {p}?"],
    ),
    "job": (
        "nurse pilot baker architect plumber librarian chemist carpenter translator dentist "
        "journalist gardener electrician pharmacist surveyor".split(),
        ["{p} works as a {v}.", "{p} has a job as a {v}."],
        ["{p} earns a living as a {v}.", "By profession {p} is a {v}."],
        ["{p} changed careers and is a {v} now.", "{p} quit and now works as a {v}."],
        ["{p} retrained as a {v} this year.", "Believe it or not, {p} became a {v}."],
        ["What does {p} do for a living?", "What is {p}'s job?"],
        ["What is {p}'s profession?", "How does {p} earn money?"],
    ),
    "pet": (
        "Biscuit Pepper Mochi Rex Luna Ziggy Noodle Pippin Bramble Tofu Waffles Juniper".split(),
        ["{p} has a dog named {v}.", "{p}'s dog is called {v}."],
        ["{p} adopted a puppy and named it {v}.", "The dog that {p} owns answers to {v}."],
        ["{p} renamed the dog, it is {v} now.", "{p}'s dog goes by {v} these days."],
        ["{p} decided the dog should be called {v} instead.", "New name for {p}'s dog: {v}."],
        ["What is the name of {p}'s dog?", "What did {p} call the dog?"],
        ["What is {p}'s dog called?", "How is {p}'s puppy named?"],
    ),
    "instrument": (
        "cello violin banjo oboe harp trumpet accordion ukulele clarinet tuba sitar flute".split(),
        ["{p} plays the {v}.", "{p} practises the {v} every evening."],
        ["{p} is quite good at the {v}.", "{p} takes lessons on the {v}."],
        ["{p} switched from music to the {v}.", "{p} gave up and picked up the {v} instead."],
        ["{p} swapped instruments and now plays the {v}.", "{p} is all about the {v} now."],
        ["Which instrument does {p} play?", "What does {p} practise in the evenings?"],
        ["What instrument is {p} learning?", "What does {p} play music on?"],
    ),
    "drink": (
        "espresso matcha rooibos kombucha lemonade chai cider oolong horchata kefir".split(),
        ["{p}'s favourite drink is {v}.", "{p} always orders {v}."],
        ["{p} cannot start the day without {v}.", "Give {p} a glass of {v} and all is well."],
        ["{p} stopped that and drinks {v} now.", "Lately {p} prefers {v}."],
        ["{p} has moved on to {v}.", "These days {p} only wants {v}."],
        ["What does {p} like to drink?", "What is {p}'s favourite drink?"],
        ["What should I order for {p}?", "Which drink does {p} love?"],
    ),
    "sport": (
        "tennis rowing climbing fencing curling judo badminton squash handball archery".split(),
        ["{p} plays {v} on weekends.", "{p} is in a {v} club."],
        ["On Saturdays {p} does {v}.", "{p} competes in {v}."],
        ["{p} quit the club and took up {v}.", "{p} does {v} now instead."],
        ["{p} switched sports to {v}.", "{p} got into {v} recently."],
        ["What sport does {p} do?", "Which sport is {p} into?"],
        ["How does {p} keep fit?", "What does {p} do on weekends?"],
    ),
    "language": (
        "Japanese Finnish Swahili Portuguese Korean Icelandic Turkish Polish Greek Hindi".split(),
        ["{p} is learning {v}.", "{p} takes {v} classes."],
        ["{p} studies {v} at night school.", "{p} wants to become fluent in {v}."],
        ["{p} dropped that and is studying {v} now.", "{p} moved on to learning {v}."],
        ["{p} started over with {v}.", "{p}'s new language project is {v}."],
        ["Which language is {p} learning?", "What language does {p} study?"],
        ["What language class does {p} take?", "Which language is {p} trying to master?"],
    ),
}
_CHATTER = {
    "dev": [
        "I had lunch with {p} yesterday.",
        "{p} says hi, by the way.",
        "I should call {p} this weekend.",
        "{p} and I watched a film last night.",
        "Do you think {p} would like a surprise party?",
    ],
    "heldout": [
        "Ran into {p} at the market this morning.",
        "{p} sent me a funny photo today.",
        "I owe {p} a coffee.",
        "{p} recommended a good podcast.",
        "Remind me to text {p} later.",
    ],
}
_REPLIES = ["Thanks for telling me.", "Good to know.", "Noted.", "Interesting!", "I see."]
_DEV_MIX = (0.6, 0.25, 0.15)  # corpus sentence, chatter about a person, other people's facts
_HELD_MIX = (0.5, 0.3, 0.2)


def corpus_sentences(limit: int = 6000, stdlib_dir: str | None = None) -> list[str]:
    """First sentences of standard-library docstrings (30-200 characters), in walk order."""
    out = []
    for doc in iter_stdlib_docs(stdlib_dir):
        para = " ".join(doc.text.split("\n\n", 1)[0].split())
        first = re.split(r"(?<=[.!?])\s+", para, maxsplit=1)[0]
        if 30 <= len(first) <= 200 and first[0].isalpha() and not first.startswith("Usage"):
            out.append(first)
            if len(out) >= limit:
                break
    return out


@dataclasses.dataclass
class _Plan:
    pos: int
    text: str


def _dialogue(rng, sents, variant, idx, n_turns, n_facts, n_updates, n_extra_q) -> Dialogue:
    held = variant == "heldout"
    names = list(_NAMES[1::2] if held else _NAMES[::2])
    slots = [(p, a) for p in names for a in _ATTRS]
    chosen = [slots[i] for i in rng.choice(len(slots), size=n_facts, replace=False)]
    value = {}
    for p, a in chosen:
        value[p, a] = str(rng.choice(_ATTRS[a][0]))
    fact_pos = rng.choice(n_turns - 100, size=n_facts, replace=False)
    plans: dict[int, tuple[str, str]] = {}
    facts = []
    for (p, a), pos in zip(chosen, fact_pos, strict=True):
        tmpl = str(rng.choice(_ATTRS[a][2 if held else 1]))
        plans[int(pos)] = ("user", tmpl.format(p=p, v=value[p, a]))
        facts.append([p, a, int(pos), None, value[p, a]])
    for f in rng.permutation(len(facts))[:n_updates]:
        p, a, pos, _, old = facts[f]
        free = [t for t in range(pos + 50, n_turns) if t not in plans]
        if not free:
            continue
        upos = int(rng.choice(free))
        new = str(rng.choice([v for v in _ATTRS[a][0] if v != old]))
        tmpl = str(rng.choice(_ATTRS[a][4 if held else 3]))
        plans[upos] = ("user", tmpl.format(p=p, v=new))
        facts[f][3], facts[f][4] = upos, new
    mix = _HELD_MIX if held else _DEV_MIX
    chatter = _CHATTER[variant]
    others = [n for n in _NAMES if n not in names]
    turns = []
    sessions = 6
    for t in range(n_turns):
        session = 1 + t * sessions // n_turns
        time = 1_700_000_000.0 + (session - 1) * 86400.0 + (t % (n_turns // sessions)) * 45.0
        if t in plans:
            speaker, text = plans[t]
        elif t % 2:
            speaker, text = "assistant", str(rng.choice(_REPLIES + sents[:50]))
        else:
            speaker, kind = "user", rng.choice(3, p=mix)
            if kind == 0:
                text = str(rng.choice(sents))
            elif kind == 1:
                text = str(rng.choice(chatter)).format(p=str(rng.choice(names)))
            else:
                a = str(rng.choice(list(_ATTRS)))
                tmpl = str(rng.choice(_ATTRS[a][1] + _ATTRS[a][2]))
                text = tmpl.format(p=str(rng.choice(others)), v=str(rng.choice(_ATTRS[a][0])))
        turns.append(Turn(speaker, text, str(session), time))
    questions = []
    for f in range(len(facts)):
        p, a, pos, upos, val = facts[f]
        kind = "latest" if upos is not None else ("early" if pos < n_turns // 10 else "single")
        qs = _ATTRS[a][6 if held else 5]
        first = str(rng.choice(qs))
        asked = [first] + ([q for q in qs if q != first] if f < n_extra_q else [])
        for q in asked:
            questions.append(Question(q.format(p=p), val, (upos if upos else pos,), kind))
    order = rng.permutation(len(questions))
    return Dialogue(f"{variant}-{idx:03d}", tuple(turns), tuple(questions[i] for i in order))


def generate(
    n_dialogues: int = 10,
    *,
    turns: int = 600,
    facts: int = 110,
    updates: int = 35,
    extra_questions: int = 40,
    variant: str = "dev",
    seed: int = 0,
    sentences: list[str] | None = None,
) -> list[Dialogue]:
    """Generates dialogues (see the module docstring).

    Args:
      n_dialogues: how many.
      turns: turns per dialogue (six sessions, a day apart, turns 45 s apart).
      facts: facts told per dialogue (each asked once).
      updates: how many of them are updated later (``latest`` questions).
      extra_questions: facts asked a second time with the other question template.
      variant: ``"dev"`` or ``"heldout"`` (disjoint templates and names).
      seed: random seed.
      sentences: distractor sentences (default `corpus_sentences()`).

    Raises:
      ValueError: bad sizes or variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} must be one of {VARIANTS}")
    if turns < 200 or not 0 < facts <= (turns - 100) // 2 or not 0 <= updates <= facts:
        raise ValueError("need turns >= 200, 0 < facts <= (turns - 100) / 2, updates <= facts")
    sents = sentences if sentences is not None else corpus_sentences()
    if len(sents) < 60:
        raise ValueError(f"need at least 60 distractor sentences, got {len(sents)}")
    rng = np.random.default_rng([seed, VARIANTS.index(variant)])
    return [
        _dialogue(rng, sents, variant, i, turns, facts, updates, extra_questions)
        for i in range(n_dialogues)
    ]
