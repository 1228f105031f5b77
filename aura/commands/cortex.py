"""``python -m aura.build cortex``: two-phase memory-and-reasoning QA (Cortex).

Phase 1 trains a router (input projection -> residual MLP -> 3-layer GRU with LayerNorm ->
projection) to read a modern Hopfield memory of every context's embedding back from noisy
copies; phase 2 freezes it and trains a LiquidMoE reasoner (16 experts x 4 residual layers,
top-4) and a dense ablation with the same parameter count to map (retrieved context, question)
to the answer-window embedding. QA records are JSONL ``{"id", "context", "question", "answer",
"type"?}`` (``--qa_jsonl``; ``tfds:squad[:split]``; default: the embedded set made from the
standard library's docstrings). Embeddings are cached in the workdir; each phase checkpoints
under ``--workdir`` (SIGTERM saves; the same command resumes; phase 2 reuses phase 1). Every
number is on contexts held out from training. Prints one JSON line (also ``--metrics_out``).

    python -m aura.build cortex --qa_jsonl qa.jsonl --workdir checkpoints/cortex \
        --metrics_out cortex.json [--config configs/cortex.py:default] [--phase all] \
        [--reasoning both]
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.options import (
    Alias,
    apply_aliases,
    define_aliases,
    define_config,
    define_mesh_flags,
    per_device_batch_size,
    resolve_mesh,
)
from aura.experiments.cortex.config import CortexConfig
from aura.experiments.cortex.run import PHASES, REASONING, run_cortex

FLAGS = flags.FLAGS
define_config("cortex", "default")
ALIASES = (
    Alias("on_bad_record", "data.on_bad_record", "enum", "a QA line that is not a valid record",
          ("skip", "fail")),
    Alias("encoder", "data.encoder", "string", "sentence-transformers directory (default MiniLM)"),
    Alias("beta", "memory.beta", "float", "memory inverse temperature on the cosine scale"),
    Alias("phase1_steps", "phase1.steps", "integer", "phase 1 (router) optimizer steps"),
    Alias("phase2_steps", "phase2.steps", "integer", "phase 2 (reasoner) optimizer steps"),
    Alias("num_experts", "reasoner.num_experts", "integer", "reasoner experts"),
    Alias("top_k", "reasoner.top_k", "integer", "experts per question"),
    Alias("seed", "seed", "integer", "random seed"),
)  # fmt: skip
define_aliases(ALIASES)
define_mesh_flags()
flags.DEFINE_string("qa_jsonl", None, "QA JSONL file or tfds:squad[:split] (default: embedded)")
flags.DEFINE_string("workdir", "checkpoints/cortex", "embeddings cache, checkpoints, metrics, PNG")
flags.DEFINE_string("metrics_out", None, "also write the final JSON result here")
flags.DEFINE_enum("phase", "all", list(PHASES), "run phase 1, phase 2 (needs phase 1) or all")
flags.DEFINE_enum("reasoning", "both", list(REASONING), "phase 2 reasoner(s) to train")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard event files")


def build() -> CortexConfig:
    c = apply_aliases(FLAGS.config, ALIASES)
    mesh = resolve_mesh(c.mesh, FLAGS.mesh, FLAGS.pmap)
    batch = per_device_batch_size(mesh, FLAGS.per_device_batch, bool(FLAGS.pmap or FLAGS.mesh))
    c.mesh = mesh
    if batch:
        c.phase1.batch_size = c.phase2.batch_size = batch
    return CortexConfig.from_dict(c)


def main(argv):
    del argv
    cfg = validated(build)
    result = guarded(lambda: validated(lambda: run_cortex(
        cfg, FLAGS.qa_jsonl, FLAGS.workdir, phase=FLAGS.phase, reasoning=FLAGS.reasoning,
        tensorboard=FLAGS.tensorboard)))  # fmt: skip
    emit_result(result, FLAGS.metrics_out)
