"""Input checks and padding shared by the mixture models.

Every check raises `aura.data.errors.DataError` with what is wrong, where (the caller's `where`,
e.g. a file path, plus the row or sequence index) and how to fix it, before any compute is
spent. Shapes are padded to a few bucket sizes so that one compiled function serves data of
many sizes (no retrace per call).

Shapes: N points, D features, B sequences, T time steps.
"""

from __future__ import annotations

import numpy as np

from aura.data.errors import DataError

__all__ = ["as_points", "as_sequences", "bucket", "pad_rows"]


def bucket(n: int, minimum: int = 64) -> int:
    """A padded size >= n from a small set, so similar sizes share one compiled function.

    Up to ``4 * minimum``: the next power of two (at least `minimum`); above: powers of two
    split into 4 steps (at most 25% padding).
    """
    if n <= minimum:
        return minimum
    if n <= 4 * minimum:
        return 1 << (n - 1).bit_length()
    step = 1 << max(0, (n - 1).bit_length() - 3)
    return -(-n // step) * step


def pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """Pads axis 0 of `x` with zeros up to `size`."""
    if x.shape[0] == size:
        return x
    pad = np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad], axis=0)


def _finite_rows(x: np.ndarray, where: str, unit: str) -> None:
    flat = x.reshape(x.shape[0], -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "NaN" if np.isnan(flat[i]).any() else "inf"
        raise DataError(
            f"{where}: {unit} {i} contains {kind} ({int(bad.sum())} bad {unit}(s) in total); "
            "drop or impute those rows before fitting"
        )


def as_points(
    x: object, where: str = "X", *, min_rows: int = 1, expect_dim: int | None = None
) -> np.ndarray:
    """Validates a point set and returns it as contiguous float32 [N, D].

    Args:
      x: array-like [N, D] (a 1-D array is refused: say whether it is N points or D features).
      where: where the data came from, for messages.
      min_rows: the least number of points needed (e.g. the number of mixture components).
      expect_dim: the feature count a fitted model expects, if any.

    Raises:
      DataError: not numeric, wrong rank, too few rows, NaN/inf rows, wrong feature count.
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: cannot be read as a numeric array ({e})") from e
    if arr.ndim != 2:
        hint = " (reshape a single feature to [N, 1])" if arr.ndim == 1 else ""
        raise DataError(f"{where}: expected points of shape [N, D], got shape {arr.shape}{hint}")
    if arr.shape[1] == 0:
        raise DataError(f"{where}: has 0 features (shape {arr.shape})")
    if arr.shape[0] < min_rows:
        raise DataError(
            f"{where}: has {arr.shape[0]} point(s), fewer than the {min_rows} needed (one per "
            "mixture component at least); supply more data or use fewer components"
        )
    if expect_dim is not None and arr.shape[1] != expect_dim:
        raise DataError(
            f"{where}: has {arr.shape[1]} features but the model was fitted on {expect_dim}"
        )
    _finite_rows(arr, where, "row")
    return np.ascontiguousarray(arr)


def as_sequences(
    x: object,
    lengths: object = None,
    where: str = "X",
    *,
    min_frames: int = 1,
    expect_dim: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validates sequences and returns them padded: (x float32 [B, T, D], lengths int32 [B]).

    Accepts either a padded batch ``[B, T, D]`` (with optional `lengths` [B], default all T) or
    hmmlearn's layout: frames concatenated ``[sum(lengths), D]`` with `lengths` (default: one
    sequence).

    Raises:
      DataError: wrong rank, lengths that do not add up or are < 1, NaN/inf frames, too few
        frames, wrong feature count.
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: cannot be read as a numeric array ({e})") from e
    if arr.ndim not in (2, 3) or arr.shape[-1] == 0:
        raise DataError(
            f"{where}: expected sequences [B, T, D] or concatenated frames [sum(lengths), D] "
            f"with `lengths`, got shape {arr.shape}"
        )
    if lengths is not None:
        lens = np.asarray(lengths)
        if lens.ndim != 1 or not np.issubdtype(lens.dtype, np.integer) or lens.size == 0:
            raise DataError(f"{where}: lengths must be a non-empty 1-D integer array, got {lens!r}")
        if (lens < 1).any():
            i = int(np.flatnonzero(lens < 1)[0])
            raise DataError(
                f"{where}: sequence {i} has length {int(lens[i])}; lengths must be >= 1"
            )
    if arr.ndim == 2:
        lens = np.array([arr.shape[0]]) if lengths is None else lens
        if int(lens.sum()) != arr.shape[0]:
            raise DataError(
                f"{where}: lengths sum to {int(lens.sum())} but there are {arr.shape[0]} frames"
            )
        _finite_rows(arr, where, "frame")
        out = np.zeros((lens.size, int(lens.max()), arr.shape[1]), np.float32)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        for b, (s, n) in enumerate(zip(starts, lens, strict=True)):
            out[b, :n] = arr[s : s + n]
        arr = out
    else:
        lens = np.full(arr.shape[0], arr.shape[1]) if lengths is None else lens
        if lens.size != arr.shape[0] or int(lens.max()) > arr.shape[1]:
            raise DataError(
                f"{where}: lengths (size {lens.size}, max {int(lens.max())}) do not fit sequences "
                f"of shape {arr.shape}"
            )
        valid = np.arange(arr.shape[1])[None] < lens[:, None]  # [B, T]
        bad = ~(np.isfinite(arr).all(axis=2) | ~valid)  # padding may hold anything
        if bad.any():
            b, t = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(
                f"{where}: sequence {b}, step {t} contains NaN or inf; drop or impute it"
            )
        arr = np.where(valid[..., None], arr, 0.0).astype(np.float32)
    if expect_dim is not None and arr.shape[2] != expect_dim:
        raise DataError(f"{where}: has {arr.shape[2]} features but the model expects {expect_dim}")
    if int(lens.sum()) < min_frames:
        raise DataError(
            f"{where}: has {int(lens.sum())} frame(s), fewer than the {min_frames} needed; "
            "supply more data or use fewer states/mixtures"
        )
    return np.ascontiguousarray(arr), lens.astype(np.int32)
