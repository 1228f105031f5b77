"""Sentence-encoder throughput: AURA's JAX MiniLM beside sentence-transformers (PyTorch).

    python tools/bench_encoder.py [--n 2000] [--batch_size 64] [--encoder DIR] [--json PATH]

Encodes ``--n`` real sentences (first sentences of standard-library docstrings) with
`aura.models.sentence_encoder` and with ``SentenceTransformer`` on the same model directory, one
after the other in the same run, on the CPU. The PyTorch side runs in a child process of this
interpreter when torch and sentence-transformers are importable here, else of ``--st_python``
(a scratch venv that has them: torch's CPU wheel may exist for another Python version than
AURA's), else the column is skipped. Each side runs one warm-up pass (for JAX: the compiles of
the length buckets) and then ``--repeats`` timed passes; the median pass is reported as
sentences/s, and the two outputs' cosine agreement is checked. AURA itself never imports torch.

    python tools/bench_encoder.py --st_python /tmp/stenv/bin/python --json bench_encoder.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aura.memory.devset import corpus_sentences  # noqa: E402
from aura.models.sentence_encoder import load_sentence_encoder  # noqa: E402


def _timed(fn, repeats: int) -> tuple[float, float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    warm = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return warm, statistics.median(times), np.asarray(out, np.float32)


_ST_SCRIPT = """
import json, statistics, sys, time
import numpy as np, torch
from sentence_transformers import SentenceTransformer
sents = json.load(open(sys.argv[1]))
model = SentenceTransformer(sys.argv[2], device="cpu")
bs, repeats = int(sys.argv[3]), int(sys.argv[4])
times = []
with torch.inference_mode():
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = model.encode(sents, batch_size=bs, convert_to_numpy=True)
        times.append(time.perf_counter() - start)
np.save(sys.argv[5], out.astype(np.float32))
sec = statistics.median(times[1:])
print(json.dumps({"first_pass_s": times[0], "pass_s": sec, "sentences_per_s": len(sents) / sec,
                  "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "python": sys.version.split()[0]}))
"""


def _sentence_transformers(sents, model_dir, a) -> dict | None:
    """Times SentenceTransformer here or in ``--st_python``; None when neither can."""
    here = all(importlib.util.find_spec(m) for m in ("torch", "sentence_transformers"))
    python = sys.executable if here else a.st_python
    if python is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        inp, emb = os.path.join(tmp, "s.json"), os.path.join(tmp, "e.npy")
        with open(inp, "w") as f:
            json.dump(sents, f)
        args = [inp, str(model_dir), str(a.batch_size), str(a.repeats), emb]
        out = subprocess.run(
            [python, "-c", _ST_SCRIPT, *args], capture_output=True, text=True, check=True
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["embeddings"] = np.load(emb, allow_pickle=False)
        row["where"] = "this process's interpreter" if here else python
    return row


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--encoder", default=None, help="sentence-transformers directory (default MiniLM)"
    )
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument(
        "--st_python", default=None, help="interpreter with torch + sentence-transformers"
    )
    a = p.parse_args()
    sents = corpus_sentences(limit=a.n)
    enc = load_sentence_encoder(a.encoder)
    tokens = sum(len(e.ids) for e in enc.tokenizer.encode_batch(sents))
    rows = {}
    warm, sec, jax_out = _timed(lambda: enc.encode(sents, batch_size=a.batch_size), a.repeats)
    rows["aura_jax"] = {"first_pass_s": warm, "pass_s": sec, "sentences_per_s": len(sents) / sec}
    st = _sentence_transformers(sents, enc.path, a)
    if st is not None:
        st_out = st.pop("embeddings")
        cos = np.sum(jax_out * st_out, axis=1) / (
            np.linalg.norm(jax_out, axis=1) * np.linalg.norm(st_out, axis=1)
        )
        rows["sentence_transformers"] = st | {"min_cosine_vs_aura": float(cos.min())}
    result = {
        "sentences": len(sents),
        "tokens": tokens,
        "batch_size": a.batch_size,
        "encoder": enc.name,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "results": rows,
    }
    print(f"{len(sents)} sentences ({tokens} tokens), batch {a.batch_size}, {result['machine']}")
    print(f"{'encoder':<24}{'sentences/s':>12}{'pass s':>9}{'first pass s':>14}")
    for name, r in rows.items():
        print(
            f"{name:<24}{r['sentences_per_s']:>12.1f}{r['pass_s']:>9.2f}{r['first_pass_s']:>14.2f}"
        )
    if st is None:
        print("sentence-transformers: skipped (torch / sentence-transformers not importable)")
    else:
        print(
            "min cosine AURA vs sentence-transformers: "
            f"{rows['sentence_transformers']['min_cosine_vs_aura']:.6f}"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
