"""Data for the mixtures experiment: validated array files and the embedded digits.

`load_file(path, kind)` reads ``.npy`` / ``.npz`` / ``.csv`` (never unpickling) and returns
points ``[N, D]`` (kind "points") or padded sequences ``([B, T, D], lengths [B])`` (kind
"sequences"). An ``.npz`` holds the data under ``x`` (or ``data``, or its only array) and may
hold ``lengths`` (then ``x`` may be concatenated frames ``[sum(lengths), D]``); a ``.csv`` holds
one point (or one frame of a single sequence) per line, an optional header line first. Every
problem raises `DataError` naming the file and the row, line or key.

`digit_points` / `digit_sequences` turn the embedded MNIST digits into PCA features (for the
GMM) and 28-step sequences of (PCA-reduced) pixel rows (for the HMM).

Shapes: N points, B sequences, T steps, D features, P principal components.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from aura.data.errors import DataError
from aura.data.mnist import holdout_split, load_digits
from aura.mixtures.validate import as_points, as_sequences

__all__ = ["digit_points", "digit_sequences", "load_file", "pca_fit"]

_KEYS = ("x", "data")


def _read_csv(path: Path) -> np.ndarray:
    rows, width = [], None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            cells = [c.strip() for c in line.strip().split(",")]
            if cells == [""]:
                continue
            try:
                values = [float(c) for c in cells]
            except ValueError:
                if lineno == 1 and not rows:
                    continue  # a header line
                raise DataError(
                    f"{path}:{lineno}: non-numeric value in {line.strip()[:60]!r}; every line "
                    "after an optional header must hold comma-separated numbers"
                ) from None
            if width is not None and len(values) != width:
                raise DataError(f"{path}:{lineno}: {len(values)} columns, expected {width}")
            width = len(values)
            rows.append(values)
    if not rows:
        raise DataError(f"{path}: no data lines")
    return np.asarray(rows, np.float64)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            key = next((k for k in _KEYS if k in keys), None)
            others = [k for k in keys if k != "lengths"]
            if key is None and len(others) == 1:
                key = others[0]
            if key is None:
                raise DataError(
                    f"{path}: cannot tell which array holds the data (keys {keys}); name it "
                    "'x' (and the optional sequence lengths 'lengths')"
                )
            x = archive[key]
            lengths = archive["lengths"] if "lengths" in keys else None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(
                f"{path} holds Python objects (pickled data); save numeric arrays"
            ) from e
        raise DataError(f"{path} is not a valid .npz archive ({e})") from e
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path} is a corrupt .npz archive ({e}); re-create it") from e
    return x, lengths


def load_file(path: str | os.PathLike[str], kind: str = "points"):
    """Loads and validates a data file.

    Args:
      path: a ``.npy``, ``.npz`` or ``.csv`` file.
      kind: "points" (returns float32 [N, D]) or "sequences" (returns (x [B, T, D], lengths)).

    Raises:
      DataError: missing/unreadable file, unknown suffix, wrong rank, NaN/inf rows, bad lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    lengths = None
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{path} is not a numeric .npy array ({e})") from e
    elif suffix == ".npz":
        x, lengths = _read_npz(path)
    elif suffix == ".csv":
        x = _read_csv(path)
    else:
        raise DataError(f"{path}: unknown file type {suffix!r}; use .npy, .npz or .csv")
    if not np.issubdtype(np.asarray(x).dtype, np.number):
        raise DataError(f"{path}: data has dtype {np.asarray(x).dtype}, expected numbers")
    if kind == "points":
        if lengths is not None:
            raise DataError(f"{path} holds sequences ('lengths' key); a GMM needs points [N, D]")
        return as_points(x, str(path))
    if kind != "sequences":
        raise ValueError(f"kind={kind!r}; use 'points' or 'sequences'")
    return as_sequences(x, lengths, str(path))


def pca_fit(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and top-k principal directions [D, P] of x [N, D].

    From the eigendecomposition of the D x D covariance (in float64): for N >> D about ten
    times faster than an SVD of the data matrix.
    """
    mean = x.mean(axis=0, dtype=np.float64)
    centered = x - mean
    cov = centered.T.astype(np.float64) @ centered / max(len(x) - 1, 1)  # [D, D]
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    return mean.astype(np.float32), vecs[:, ::-1][:, :k].astype(np.float32)


def _digits(seed: int, eval_fraction: float):
    images, labels = load_digits()
    train, test = holdout_split(len(labels), eval_fraction, seed)
    return images.astype(np.float32) / 255.0, labels, train, test


def digit_points(n_pca: int = 30, seed: int = 0, eval_fraction: float = 0.2):
    """PCA features of the embedded digits: (x_train, y_train, x_eval, y_eval)."""
    images, labels, train, test = _digits(seed, eval_fraction)
    flat = images.reshape(len(images), -1)  # [N, 28, 28] -> [N, 784]
    mean, comps = pca_fit(flat[train], n_pca)
    feats = ((flat - mean) @ comps).astype(np.float32)  # [N, P]
    return feats[train], labels[train], feats[test], labels[test]


def digit_sequences(row_pca: int = 8, seed: int = 0, eval_fraction: float = 0.2):
    """Each digit as a 28-step sequence of its pixel rows, each row reduced by PCA (fitted on
    the training rows) to `row_pca` features: (x_train [N, 28, P], y_train, x_eval, y_eval)."""
    images, labels, train, test = _digits(seed, eval_fraction)
    rows = images[train].reshape(-1, images.shape[2])  # [N*28, 28]
    mean, comps = pca_fit(rows, row_pca)
    seqs = ((images - mean) @ comps).astype(np.float32)  # [N, 28, P]
    return seqs[train], labels[train], seqs[test], labels[test]
