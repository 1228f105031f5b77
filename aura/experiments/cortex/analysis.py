"""Phase 2 analysis: answer metrics, baselines, and whether experts specialise by question type.

Shapes: N samples, D embedding width, E experts, T question types.

* :func:`answer_metrics`: close_answer_mean (mean cosine to the answer-window embedding) and
  exact_match (share with cosine > threshold).
* :func:`ridge_fit`: closed-form ridge regression question -> answer window (with a bias).
* :func:`mutual_information` between two label arrays (nats, from their contingency table) and
  :func:`permutation_test`: the p-value of the observed MI against MIs with one side shuffled,
  ``(1 + #{MI_perm >= MI}) / (1 + n)``.
* :func:`plot_gate_pca`: a PNG of the 2-D PCA of per-sample gate vectors coloured by type (drawn
  off-screen with matplotlib's Agg canvas).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "answer_metrics",
    "encode_labels",
    "mutual_information",
    "pca_2d",
    "permutation_test",
    "plot_gate_pca",
    "ridge_fit",
    "utilisation",
]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def answer_metrics(pred: np.ndarray, target: np.ndarray, threshold: float = 0.9) -> dict:
    """``{"close_answer_mean", "exact_match"}`` of predictions [N, D] against targets [N, D]."""
    cos = np.sum(_unit(np.asarray(pred, np.float64)) * _unit(np.asarray(target, np.float64)), 1)
    return {"close_answer_mean": float(cos.mean()), "exact_match": float((cos > threshold).mean())}


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``(W [D_in, D_out], b [D_out])`` minimising ``|xW + b - y|^2 + alpha |W|^2``."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mx, my = x64.mean(0), y64.mean(0)
    xc, yc = x64 - mx, y64 - my
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return w, my - mx @ w


def encode_labels(labels) -> tuple[np.ndarray, list]:
    """Integer codes [N] and the sorted distinct labels."""
    names, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.astype(np.int64), names.tolist()


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(A; B) in nats of two integer label arrays [N] (plug-in estimate)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    n = len(a)
    if n == 0:
        return 0.0
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= n
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])))


def permutation_test(a: np.ndarray, b: np.ndarray, n: int = 1000, seed: int = 0):
    """``(MI, p)``: MI of ``a`` and ``b`` and its permutation p-value (``b`` shuffled ``n``
    times; ``p = (1 + #{MI_perm >= MI}) / (1 + n)``, never 0)."""
    mi = mutual_information(a, b)
    rng = np.random.default_rng(seed)
    perms = np.array([mutual_information(a, rng.permutation(b)) for _ in range(n)])
    return mi, float((1 + np.sum(perms >= mi - 1e-12)) / (1 + n))


def utilisation(gates: np.ndarray, top_k: int) -> dict:
    """Per-expert shares: ``top1`` (argmax) and ``topk`` (in the k best) of the samples."""
    e = gates.shape[1]
    top1 = np.bincount(np.argmax(gates, 1), minlength=e) / len(gates)
    topk_idx = np.argsort(-gates, axis=1)[:, :top_k]
    topk = np.bincount(topk_idx.ravel(), minlength=e) / topk_idx.size
    return {"top1": [round(float(v), 4) for v in top1], "topk": [round(float(v), 4) for v in topk]}


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components' scores [N, 2]."""
    xc = np.asarray(x, np.float64) - np.mean(x, axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:2].T


def plot_gate_pca(gates: np.ndarray, types, path: str, title: str = "") -> str:
    """Writes a scatter of the gate vectors' 2-D PCA coloured by question type; returns path."""
    xy = pca_2d(gates)
    codes, names = encode_labels(types)
    fig = Figure(figsize=(6.5, 5))
    FigureCanvasAgg(fig)  # off-screen: no pyplot, no global backend switch
    ax = fig.add_subplot()
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    for i, name in enumerate(names):
        sel = codes == i
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.6, color=cmap(i % cmap.N), label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "gate vectors (PCA) by question type")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path
