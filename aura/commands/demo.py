"""``python -m aura.build demo`` (what ``make demo`` runs): the main jobs on embedded data, offline.

Each stage is a real command, printed before it runs, so the demo doubles as a tour of the CLI:

1. ``mnist``: the expert POC on the 8,000 embedded digits (experts grow 1 -> 3 -> 6);
2. ``corpus``: real English text from the standard library's docstrings + an instruction JSONL;
3. ``tokenizer``: SentencePiece on that text, with the <INST>/<INP>/<RESP>/<SEP> symbols;
4. ``pretrain``: a small SelfTeachingAdapter (LiquidMoE retrieval + SRWKV core) on the JSONL,
   scored on the corpus's held-out slice (the demo prints its bits per character);
5. ``chat``: two prompts answered with the recurrent state (two sample completions);
6. ``pretrain_zones``: the brain zones (hippocampus experts from stage 1, the language adapter
   from stage 4, amygdala, thalamus and hypothalamus heads fitted on the corpus), then the
   joint stage: the zones trained together, the thalamus routing digits between them;
7. ``inspect``: a table of every zone checkpoint;
8. ``chat --ckpt_root``: the same prompt with the zone heads composed into routing;
9. ``chat --memory_db``: one process is told a fact; 10. a second process, asked about it,
   recalls it from the SQLite memory (``--json``: the reply and the recalled memories, scored).

Everything goes under ``--workdir``; rerunning resumes finished or interrupted stages (the
memory file of stages 9-10 starts empty on each run).
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys
import time

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "checkpoints/demo", "where the demo writes its outputs")
flags.DEFINE_integer("mnist_epochs", 6, "epochs of the MNIST POC stage")
flags.DEFINE_integer("pretrain_steps", 150, "optimizer steps of the pretrain stage")
flags.DEFINE_string("prompt", "Explain json.dumps", "the chat stages' prompt")
flags.DEFINE_string("prompt2", "What does os.path.join return?", "the second sample's prompt")
FACT = "My sister Mara moved to Porto last spring."
QUESTION = "Where does my sister live now?"


def stages(w: str) -> list[tuple[str, list[str]]]:
    return [
        (
            "MNIST expert POC",
            ["mnist", f"--workdir={w}/mnist", f"--epochs={FLAGS.mnist_epochs}",
             "--growth_schedule=0:1,2:3,4:6", f"--metrics_out={w}/mnist/result.json"],
        ),
        ("embedded corpus", ["corpus", f"--out_dir={w}/corpus"]),
        (
            "tokenizer",
            ["tokenizer", f"--input_dir={w}/corpus/text", f"--out_dir={w}/tokenizer",
             "--vocab_size=4000", "--model_type=unigram"],
        ),
        (
            "instruction pretraining",
            ["pretrain", f"--jsonl={w}/corpus/instruct.jsonl",
             f"--spm_model={w}/tokenizer/spiece.model", f"--ckpt_out={w}/lm",
             f"--steps={FLAGS.pretrain_steps}", "--batch_size=16", "--max_len=128",
             f"--config.heldout={w}/corpus/heldout_instruct.jsonl"],
        ),
        *(
            (
                f"chat, sample {i}",
                ["chat", f"--ckpt={w}/lm", f"--spm_model={w}/tokenizer/spiece.model",
                 f"--prompt={prompt}", "--gen_len=48", "--temperature=0.7", "--top_k=40"],
            )
            for i, prompt in enumerate((FLAGS.prompt, FLAGS.prompt2), start=1)
        ),
        (
            "brain zones",
            ["pretrain_zones", "--zones=hippocampus,language,amygdala,thalamus,hypothalamus",
             f"--txt_dir={w}/corpus/text", f"--json_dir={w}/corpus",
             f"--spm_model={w}/tokenizer/spiece.model", f"--ckpt_root={w}/zones",
             f"--ckpt_out={w}/lm", f"--mnist_workdir={w}/mnist",
             f"--steps={FLAGS.pretrain_steps}", "--batch_size=16", "--max_len=128",
             "--joint_epochs=2"],
        ),
        ("inspect zones", ["inspect", f"--ckpt_root={w}/zones"]),
        (
            "composed chat (zone heads bias routing and set the temperature)",
            ["chat", f"--ckpt={w}/lm", f"--spm_model={w}/tokenizer/spiece.model",
             f"--ckpt_root={w}/zones", f"--prompt={FLAGS.prompt}", "--gen_len=48", "--top_k=40"],
        ),
        (
            "memory chat, process 1: told a fact",
            ["chat", f"--ckpt={w}/lm", f"--spm_model={w}/tokenizer/spiece.model",
             f"--memory_db={w}/memory.db", "--session=demo", f"--prompt={FACT}", "--gen_len=16"],
        ),
        (
            "memory chat, process 2: recalls it (reply and scored memories as JSON)",
            ["chat", f"--ckpt={w}/lm", f"--spm_model={w}/tokenizer/spiece.model",
             f"--memory_db={w}/memory.db", "--session=demo", f"--prompt={QUESTION}",
             "--gen_len=16", "--memory_k=3", "--json"],
        ),
    ]  # fmt: skip


def heldout_line(metrics_jsonl: str) -> str:
    """The last held-out bits per character that the pretrain run logged, as one line."""
    with open(metrics_jsonl, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if "heldout_bpc" in line]
    if not rows:
        return "held-out bits per character: not logged"
    key = next(k for k in rows[-1] if k.endswith("heldout_bpc"))
    return f"held-out bits per character after step {rows[-1]['step']}: {rows[-1][key]:.3f}"


def main(argv):
    del argv
    w = FLAGS.workdir
    t0 = time.time()
    plan = stages(w)
    for stale in glob.glob(f"{w}/memory.db*"):  # the memory stages start from an empty file
        os.remove(stale)
    for i, (title, args) in enumerate(plan, start=1):
        print(
            f"\n== [{i}/{len(plan)}] {title}\n$ python -m aura.build {shlex.join(args)}", flush=True
        )
        t = time.time()
        code = subprocess.call([sys.executable, "-m", "aura.build", *args])
        if code:
            print(f"demo stage '{title}' failed with exit code {code}", file=sys.stderr)
            sys.exit(code)
        print(f"-- {title}: {time.time() - t:.0f}s", flush=True)
        if args[0] == "pretrain":
            print(heldout_line(f"{w}/lm/metrics.jsonl"), flush=True)
    print(
        f"\nAURA demo finished in {time.time() - t0:.0f}s. Outputs under {w}/:\n"
        f"  mnist/       result.json, metrics.jsonl, routing.png, tb/, ckpt/, hippocampus/\n"
        f"  corpus/      text/*.txt, instruct.jsonl, heldout.txt\n"
        f"  tokenizer/   spiece.model, spiece.vocab\n"
        f"  lm/          pretrain checkpoints, metrics.jsonl, tb/\n"
        f"  zones/       hippocampus/expert_<i>, amygdala/, thalamus/, hypothalamus/, language/,\n"
        f"               joint/ (the zones trained together: joint.json, <zone>/expert_<i>)\n"
        f"  memory.db    long-term memory of the memory chat stages (SQLite)\n"
        f"Chat again:  python -m aura.build chat --ckpt {w}/lm "
        f"--spm_model {w}/tokenizer/spiece.model --ckpt_root {w}/zones"
    )
