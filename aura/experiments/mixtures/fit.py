"""`fit_mixture`: the library call behind ``python -m aura.build mixtures --model gmm|hmm|mmm``.

With a data file it fits one model and reports likelihoods; without one it runs on the
embedded MNIST digits: a GMM on PCA features, or an HMM on each digit as a 28-step sequence of
(PCA-reduced) pixel rows, plus one model per class as a classifier whose held-out accuracy is
reported. Likelihoods are mean per sample in nats: per point for "gmm", per sequence for
"hmm"/"mmm" (``*_ll_per_frame`` divides by the frames).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from aura.data.errors import DataError
from aura.experiments.mixtures import data as data_lib
from aura.mixtures.manager import MM

__all__ = ["MODELS", "fit_mixture", "model_config"]

MODELS = ("gmm", "hmm", "mmm")


def model_config(
    model: str,
    n_components: int | None = None,
    n_mix: int | None = None,
    covariance: str | None = None,
    config: dict | None = None,
    seed: int = 0,
    embedded: bool = False,
) -> dict:
    """The model's settings: defaults, then `config`, then the explicit flags.

    On the embedded digits the HMM defaults to a left-to-right chain of 8 states with 2
    full-covariance Gaussians each (row sequences are read top to bottom; about 84% held-out
    accuracy as a per-class classifier, against about 60% for an ergodic chain).
    """
    if model not in MODELS:
        raise ValueError(f"model={model!r}; use one of {MODELS}")
    base: dict[str, Any]
    if model == "gmm":
        base = {"n_components": 10, "covariance_type": "full", "seed": seed}
        flags = {"n_components": n_components, "covariance_type": covariance}
    elif model == "hmm":
        base = {"n_states": 5, "n_mix": 1, "covariance_type": "diag", "seed": seed}
        if embedded:
            base.update(n_states=8, n_mix=2, covariance_type="full", topology="left_right")
        flags = {"n_states": n_components, "n_mix": n_mix, "covariance_type": covariance}
    else:
        base = {"hidden_dim": 32, "z_dim": 8, "rnn_hidden": 16, "num_states": 4, "n_mix": 2,
                "trans_d_model": 16, "trans_nhead": 2, "trans_layers": 1, "steps": 100,
                "seed": seed}  # fmt: skip
        flags = {"num_states": n_components, "n_mix": n_mix}
        if covariance not in (None, "diag"):
            raise ValueError("the mmm model's latent HMM uses diagonal covariances only")
    return {**base, **(config or {}), **{k: v for k, v in flags.items() if v is not None}}


def _ll(model: MM, x: Any, lengths: Any) -> dict[str, float]:
    data = x if lengths is None else (x, lengths)
    ll = model.score_samples(data)
    out = {"ll": float(np.mean(ll))}
    if lengths is not None:
        out["ll_per_frame"] = float(np.sum(ll) / np.sum(lengths))
    return out


def _classifier(model: str, cfg: dict, x, y, xe, ye, lengths_e=None) -> float:
    """Held-out accuracy of one model per class (argmax log-likelihood)."""
    classes = np.unique(y)
    scores = np.stack(
        [
            MM(model, cfg)
            .fit(x[y == c])
            .score_samples(xe if lengths_e is None else (xe, lengths_e))
            for c in classes
        ],
        axis=1,
    )
    return float(np.mean(classes[np.argmax(scores, axis=1)] == ye))


def _load(kind: str, data, eval_data, eval_fraction: float, seed: int):
    """(x, lengths, x_eval, lengths_eval, y, y_eval, source); lengths None for points, labels
    None for files."""
    y = ye = lengths = lengths_e = None
    if data is None:
        loader = data_lib.digit_points if kind == "points" else data_lib.digit_sequences
        x, y, xe, ye = loader(seed=seed, eval_fraction=eval_fraction)
        source = "embedded MNIST digits (8,000; aura/data/assets)"
    else:
        loaded = data_lib.load_file(data, kind)
        x, lengths = (loaded, None) if kind == "points" else loaded
        source = str(data)
        if eval_data is not None:
            loaded = data_lib.load_file(eval_data, kind)
            xe, lengths_e = (loaded, None) if kind == "points" else loaded
        else:
            n = x.shape[0]
            if n < 2:
                raise DataError(f"{data}: need at least 2 samples to hold some out")
            perm = np.random.default_rng(seed).permutation(n)
            n_eval = max(1, int(round(n * eval_fraction)))
            ev, tr = perm[:n_eval], perm[n_eval:]
            xe, x = x[ev], x[tr]
            if lengths is not None:
                lengths_e, lengths = lengths[ev], lengths[tr]
    if kind == "sequences":
        lengths = np.full(x.shape[0], x.shape[1]) if lengths is None else lengths
        lengths_e = np.full(xe.shape[0], xe.shape[1]) if lengths_e is None else lengths_e
    return x, lengths, xe, lengths_e, y, ye, source


def fit_mixture(
    model: str = "gmm",
    data: str | Path | None = None,
    eval_data: str | Path | None = None,
    *,
    n_components: int | None = None,
    n_mix: int | None = None,
    covariance: str | None = None,
    config: dict | None = None,
    workdir: str | Path | None = None,
    eval_fraction: float = 0.2,
    classifier: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Fits a mixture model and returns the run record.

    Args:
      model: "gmm", "hmm" or "mmm".
      data: a ``.npy``/``.npz``/``.csv`` file (`data.load_file`); None: the embedded digits.
      eval_data: held-out file; None: hold out `eval_fraction` of `data`.
      n_components: GMM components / HMM states (mmm: latent states).
      n_mix: Gaussians per HMM state.
      covariance: "full", "diag" or "spherical".
      config: further model settings (see `model_config`).
      workdir: if given, the fitted model is saved to ``<workdir>/model`` and the record to
        ``<workdir>/record.json``.
      eval_fraction: hold-out fraction when `eval_data` is None.
      classifier: on the embedded digits, also fit one model per class and report accuracy.
      seed: split and initialisation seed.

    Returns:
      ``{"model", "data", "n_train", "n_eval", "train_ll", "eval_ll", "iterations",
      "converged", "fit_s", ...}`` (plus ``*_ll_per_frame`` for sequences and
      ``classifier_accuracy`` on the embedded digits).

    Raises:
      DataError: bad data files (naming file and row); ValueError: bad settings.
    """
    embedded = data is None
    cfg = model_config(model, n_components, n_mix, covariance, config, seed, embedded)
    kind = "points" if model == "gmm" else "sequences"
    x, lengths, xe, lengths_e, y, ye, source = _load(kind, data, eval_data, eval_fraction, seed)
    t0 = time.perf_counter()
    try:
        fitted = MM(model, cfg).fit(x if lengths is None else (x, lengths))
    except DataError as e:  # name the file: the model only knows its data as "data"
        raise DataError(f"{source}: {str(e).removeprefix('data: ')}") from e
    fit_s = time.perf_counter() - t0
    train, ev = _ll(fitted, x, lengths), _ll(fitted, xe, lengths_e)
    record: dict[str, Any] = {
        "model": model, "data": source, "config": cfg, "n_train": int(x.shape[0]),
        "n_eval": int(xe.shape[0]), "train_ll": train["ll"], "eval_ll": ev["ll"],
        "iterations": fitted.info.get("iterations"), "converged": fitted.info.get("converged"),
        "fit_s": fit_s,
    }  # fmt: skip
    if kind == "sequences":
        record["train_ll_per_frame"] = train["ll_per_frame"]
        record["eval_ll_per_frame"] = ev["ll_per_frame"]
    if embedded and classifier:
        t1 = time.perf_counter()
        record["classifier_accuracy"] = _classifier(model, cfg, x, y, xe, ye, lengths_e)
        record["classifier_s"] = time.perf_counter() - t1
    if workdir is not None:
        out = Path(workdir)
        out.mkdir(parents=True, exist_ok=True)
        fitted.save(out / "model")
        (out / "record.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
