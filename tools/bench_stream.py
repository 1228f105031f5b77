"""Host memory of the streaming LM input on a big JSONL: flat, whatever the file size.

    python tools/bench_stream.py [--size_mb 1024] [--small_mb 8] [--dir D] [--steps 30]
        [--json PATH]

1. Builds the embedded corpus and a tokenizer in ``--dir`` (or takes ``--jsonl``/``--spm_model``)
   and writes ``big.jsonl`` (``--size_mb``) and ``small.jsonl`` (``--small_mb``) by cycling the
   corpus's instruction records, each made unique by a serial number.
2. ``stream``: a fresh process reads the whole big file once through
   :func:`aura.data.stream.lm_batches` (shuffle window, tokenisation, packing, prefetch, exactly
   as ``pretrain`` builds it), sampling its resident memory (``/proc/self/status``) every
   ``--sample_every`` batches: RSS after the first batch, at 25/50/75/100% of the file, and the
   peak (``VmHWM``).
3. ``pretrain``: ``python -m aura.build pretrain`` for ``--steps`` steps on the small and on the
   big file (same preset, same flags); the parent polls each child's ``VmHWM`` and reports both
   peaks. With flat memory the two are equal up to noise.

Prints a table; ``--json`` writes the numbers (one JSON line is also printed last).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STREAM = r"""
import json, sys, time
from aura.data.instruct import InstructFormatter
from aura.data.stream import StreamStats, lm_batches
from aura.data.tokenizer import load_tokenizer

def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

jsonl, spm, lines, width, rows, window, every = sys.argv[1:8]
lines, width, rows, window, every = map(int, (lines, width, rows, window, every))
fmt = InstructFormatter(load_tokenizer(spm), max_len=width)
stats = StreamStats()
it = iter(lm_batches(jsonl, fmt, width=width, rows=rows, pack=True, seed=0,
                     shuffle_window=window, prefetch=4, stats=stats))
start, samples, tokens, batches, marks = time.perf_counter(), [], 0, 0, [0.25, 0.5, 0.75, 1.0]
while stats.records < lines:
    batch = next(it)
    batches += 1
    tokens += int((batch["segments"] > 0).sum())
    if batches == 1 or batches % every == 0 or stats.records >= lines * marks[0]:
        samples.append({"batch": batches, "records": stats.records, "rss_mb": rss_mb("VmRSS")})
        while marks and stats.records >= lines * marks[0]:
            marks.pop(0)
wall = time.perf_counter() - start
it.close()
del it  # finalised now, not at interpreter exit (grain's __del__ then finds its modules gone)
print(json.dumps({"wall_s": wall, "batches": batches, "records": stats.records,
                  "tokens": tokens, "samples": samples, "peak_rss_mb": rss_mb("VmHWM")}))
"""


def make_jsonl(source: Path, out: Path, size_mb: float) -> int:
    """``out``: ``source``'s records cycled (each with a serial number) up to ``size_mb``."""
    records = [json.loads(ln) for ln in source.read_text(encoding="utf-8").splitlines() if ln]
    target, written, n = int(size_mb * 2**20), 0, 0
    with open(out, "w", encoding="utf-8") as f:
        while written < target:
            rec = dict(records[n % len(records)])
            rec["instruction"] = f"{rec['instruction']} (#{n})"
            line = json.dumps(rec, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            n += 1
    return n


def peak_of(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Runs ``cmd``; returns (its peak RSS in MiB from polling VmHWM, wall s, last stdout line)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    peak = 0.0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    out = proc.communicate()[0]
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:4])} ... exited {proc.returncode}")
    return peak, time.perf_counter() - start, out.strip().splitlines()[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size_mb", type=float, default=1024, help="size of the big JSONL")
    p.add_argument("--small_mb", type=float, default=8, help="size of the small JSONL")
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    p.add_argument("--jsonl", default=None, help="source records (default: the embedded corpus)")
    p.add_argument("--spm_model", default=None, help="tokenizer (default: trained on the corpus)")
    p.add_argument("--width", type=int, default=128, help="tokens per row")
    p.add_argument("--rows", type=int, default=16, help="rows per batch")
    p.add_argument("--shuffle_window", type=int, default=4096, help="shuffle buffer, in lines")
    p.add_argument("--sample_every", type=int, default=500, help="batches between RSS samples")
    p.add_argument("--steps", type=int, default=30, help="pretrain steps per file (0: skip)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.size_mb <= 0 or args.small_mb <= 0:
        p.error("--size_mb and --small_mb must be > 0")

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_stream-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    if args.jsonl is None or args.spm_model is None:
        from aura.data.corpus import build_corpus
        from aura.data.tokenizer import TokenizerConfig, train_tokenizer

        res = build_corpus(work / "corpus", max_docs=400)
        tok = train_tokenizer(res.text_dir, work / "tok", TokenizerConfig(vocab_size=2000))
        jsonl, spm = args.jsonl or str(res.instruct), args.spm_model or str(tok.model_path)
    else:
        jsonl, spm = args.jsonl, args.spm_model
    files = {}
    for name, mb in (("small", args.small_mb), ("big", args.size_mb)):
        path = work / f"{name}.jsonl"
        files[name] = (path, make_jsonl(Path(jsonl), path, mb))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")

    big, big_lines = files["big"]
    stream_cmd = [
        sys.executable, "-c", STREAM, str(big), spm, str(big_lines), str(args.width),
        str(args.rows), str(args.shuffle_window), str(args.sample_every),
    ]  # fmt: skip
    _, _, line = peak_of(stream_cmd, env)
    stream = json.loads(line)
    samples = stream["samples"]
    result = {
        "size_mb": round(big.stat().st_size / 2**20, 1),
        "lines": big_lines,
        "stream": {
            "wall_s": round(stream["wall_s"], 1),
            "mb_per_s": round(big.stat().st_size / 2**20 / stream["wall_s"], 2),
            "records_per_s": round(stream["records"] / stream["wall_s"], 1),
            "tokens": stream["tokens"],
            "batches": stream["batches"],
            "rss_first_batch_mb": round(samples[0]["rss_mb"], 1),
            "rss_end_mb": round(samples[-1]["rss_mb"], 1),
            "rss_growth_mb": round(samples[-1]["rss_mb"] - samples[0]["rss_mb"], 1),
            "peak_rss_mb": round(stream["peak_rss_mb"], 1),
            "samples": samples,
        },
    }
    print(
        f"stream {result['size_mb']} MiB ({big_lines} lines) in {stream['wall_s']:.0f} s: "
        f"RSS {samples[0]['rss_mb']:.0f} MiB after the first batch, "
        f"{samples[-1]['rss_mb']:.0f} MiB at the end, peak {stream['peak_rss_mb']:.0f} MiB"
    )
    if args.steps > 0:
        result["pretrain"] = {}
        for name, (path, _) in files.items():
            cmd = [
                sys.executable, "-m", "aura.build", "pretrain", "--jsonl", str(path),
                "--spm_model", spm, "--config", f"{ROOT / 'configs' / 'pretrain.py'}:tiny",
                "--steps", str(args.steps), "--save_every", str(args.steps), "--log_every",
                str(args.steps), "--ckpt_out", str(work / f"run_{name}"), "--notensorboard",
                "--max_len", str(args.width), f"--config.shuffle_window={args.shuffle_window}",
            ]  # fmt: skip
            peak, wall, _ = peak_of(cmd, env)
            result["pretrain"][name] = {"peak_rss_mb": round(peak, 1), "wall_s": round(wall, 1)}
            print(f"pretrain {args.steps} steps on {name}: peak RSS {peak:.0f} MiB, {wall:.0f} s")
        small_peak = result["pretrain"]["small"]["peak_rss_mb"]
        result["pretrain"]["big_over_small"] = round(
            result["pretrain"]["big"]["peak_rss_mb"] / small_peak, 3
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "stream"} | {
        "stream": {k: v for k, v in result["stream"].items() if k != "samples"}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
