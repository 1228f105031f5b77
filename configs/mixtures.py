"""Presets for fitting one mixture model (`aura.experiments.mixtures.fit_mixture`).

Run (once the command is wired)::

    python -m aura.build mixtures --config configs/mixtures.py:gmm --workdir W --metrics_out M.json

    gmm   a 10-component full-covariance GMM (embedded digits: 30 PCA features); default
    hmm   an HMM with GMM emissions (embedded digits: 28-step row sequences, left-to-right)
    mmm   the MultiMixtureTransformer hybrid, small
    tiny  a seconds-long GMM fit (tests use it)

Flags (--model, --data, --eval_data, --n_components, --n_mix, --covariance) override these.
`model_config` holds further settings of the model type (see `fit_mixture.model_config`).
"""

import ml_collections


def get_config(preset: str = "gmm") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "gmm"
    c.data = ""  # empty: the embedded digits
    c.eval_data = ""
    c.n_components = ml_collections.FieldReference(None, field_type=int)
    c.n_mix = ml_collections.FieldReference(None, field_type=int)
    c.covariance = ml_collections.FieldReference(None, field_type=str)
    c.eval_fraction = 0.2
    c.classifier = True
    c.seed = 0
    c.model_config = ml_collections.ConfigDict({"max_iter": 100, "tol": 1e-3})
    if preset == "gmm":
        c.n_components = 10
    elif preset == "hmm":
        c.model = "hmm"
        c.model_config = ml_collections.ConfigDict({"max_iter": 100, "tol": 1e-2})
    elif preset == "mmm":
        c.model = "mmm"
        c.model_config = ml_collections.ConfigDict({"steps": 200, "batch_size": 32})
    elif preset == "tiny":
        c.n_components, c.covariance, c.classifier = 3, "diag", False
        c.model_config = ml_collections.ConfigDict({"max_iter": 20, "tol": 1e-3})
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: gmm, hmm, mmm, tiny")
    return c
