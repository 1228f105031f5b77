"""``python -m aura.build mixtures``: fit one GMM, HMM or MultiMixtureTransformer ("mmm").

``--data`` is a ``.npy``/``.npz``/``.csv`` file: points ``[N, D]`` for ``gmm``; sequences
``[N, T, D]``, or frames ``[sum(lengths), D]`` with a ``lengths`` key, for ``hmm``/``mmm``.
Without it the model is fitted on the embedded MNIST digits (PCA features for the GMM, each
digit as a 28-step sequence of pixel rows for the HMM) and one model per class is scored as a
classifier. Prints one JSON line: train_ll, eval_ll (mean per-sample log-likelihood, nats; per
sequence for hmm/mmm), iterations, converged, fit_s (and classifier_accuracy on the digits).
The fitted model is saved atomically to ``<workdir>/model`` (the workdir is locked while it is
written); bad input is one ``error:`` line naming the file and row, exit 2, nothing written.

EM runs as one jitted while-loop, not on the shared SGD training loop: each iteration needs all
the data, and a fit takes seconds (see ``aura.experiments.mixtures.fit``).

    python -m aura.build mixtures --model gmm --data points.npy --n_components 8 \\
        --workdir checkpoints/gmm --metrics_out gmm.json
    python -m aura.build mixtures --config configs/mixtures.py:hmm --workdir checkpoints/hmm
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.options import Alias, apply_aliases, define_aliases, define_config
from aura.experiments.mixtures.fit import MODELS, run_fit

FLAGS = flags.FLAGS
define_config("mixtures", "gmm")
ALIASES = (
    Alias("model", "model", "enum", "model type", MODELS),
    Alias("data", "data", "string", ".npy/.npz/.csv training data (default: embedded digits)"),
    Alias("eval_data", "eval_data", "string", "held-out file (default: a split of --data)"),
    Alias("n_components", "n_components", "integer", "GMM components / HMM (mmm: latent) states"),
    Alias("n_mix", "n_mix", "integer", "Gaussians per HMM state"),
    Alias("covariance", "covariance", "enum", "covariance type", ("full", "diag", "spherical")),
    Alias("eval_fraction", "eval_fraction", "float", "held-out share of --data"),
    Alias("classifier", "classifier", "boolean", "embedded digits: one model per class"),
    Alias("seed", "seed", "integer", "split and initialisation seed"),
    Alias("max_iter", "model_config.max_iter", "integer", "EM iterations at most (gmm, hmm)"),
    Alias("reg_covar", "model_config.reg_covar", "float",
          "added to covariance diagonals (0: a singular covariance is an error)"),
)  # fmt: skip
define_aliases(ALIASES)
flags.DEFINE_string("workdir", None, "where the fitted model and record.json go (none: not saved)")
flags.DEFINE_string("metrics_out", None, "also write the final JSON result here")


def main(argv):
    del argv
    c = validated(lambda: apply_aliases(FLAGS.config, ALIASES))
    result = guarded(lambda: validated(lambda: run_fit(c, FLAGS.workdir)))
    emit_result(result, FLAGS.metrics_out)
