"""Zone heads that steer the language adapter at inference, and how each is fitted.

Shapes: N samples (documents or tokens), T prompt tokens, D embedding width, E experts,
A = 3 affect dimensions, G temperatures tried, V vocabulary.

* Amygdala ``AffectBiasHead``: an affect vector a [A] -> routing bias [E] = a W + b.
* Thalamus ``ThalamusGateHead``: routing centroids c [E, D]; a token embedding x gets the bias
  ``-scale * ||x - c_e||^2``; a prompt gets the mean over its tokens, centred over experts, minus
  the corpus' average document bias ``offset`` [E] (so a typical prompt is barely pushed, and
  the gate's own preferences are not counted twice).
* Hypothalamus ``ControlHead``: an affect vector -> (generation temperature, merit momentum).

How affect vectors are derived from text (:func:`affect_vector`) — deliberately simple: words
are lower-cased ASCII letter runs; a word (or the word without a plural/tense suffix: -s, -es,
-ed, -d, -ing, -ly) found in ``AFFECT_LEXICON`` contributes its (valence, arousal, dominance)
triple, and the text's affect vector is the mean over matched words (zeros when none match).
The lexicon is ~140 words frequent in technical English (error, fail, safe, fast, kill, ...)
with values in [-1, 1] that were assigned by hand for this project, in the spirit of published
VAD norms (Warriner et al. 2013; Mohammad 2018) but not taken from them. It is a crude,
transparent signal: it sees "error" in "no error is raised" as negative.

Fitting (pure numerics; the caller supplies arrays computed with the adapter):

* amygdala (:func:`fit_affect_bias`): ridge regression from documents' affect vectors to how
  the adapter's gate routes them (per-document mean log gate probability, centred over experts
  and over documents). With ``a_bar`` the corpus-mean affect, the head's bias is
  ``gain * (a - a_bar) W``: a prompt with the corpus' average affect gets no bias, and a more
  negative/aroused one is pushed towards the experts such documents used.
* thalamus (:func:`fit_centroids`): k-means (Lloyd) of token embeddings, cluster e seeded with
  the mean embedding of the tokens the adapter's gate sends to expert e (top-1), so cluster e
  stays expert e's region; ``offset`` is the mean document bias and ``scale`` makes the standard
  deviation of a document's bias around it (what a prompt gets) equal ``target_std`` logits.
* hypothalamus (:func:`fit_temperature`, :func:`routing_volatility`): the temperature is the one
  that minimises held-out response NLL of ``logits / T`` (temperature scaling, Guo et al. 2017);
  the merit momentum is ``1 - v`` clipped to [0.5, 0.999], where v is the mean total-variation
  distance between consecutive documents' routing distributions (volatile routing -> shorter
  merit memory). Arousal raises and dominance lowers the temperature by hand-set gains.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aura.nn.moe import RoutingControls
from aura.nn.thalamus import centroid_scores

__all__ = [
    "AFFECT_DIMS",
    "AFFECT_LEXICON",
    "AffectBiasHead",
    "ControlHead",
    "ThalamusGateHead",
    "affect_vector",
    "control_params",
    "fit_affect_bias",
    "fit_centroids",
    "fit_temperature",
    "routing_volatility",
]

AFFECT_DIMS = ("valence", "arousal", "dominance")
TEMPERATURE_RANGE = (0.05, 2.0)
MOMENTUM_RANGE = (0.5, 0.999)

_LEX = """
success .8 .5 .6|succeed .8 .5 .6|successful .8 .5 .6|valid .5 .1 .4|safe .7 -.3 .4
secure .7 -.1 .6|correct .6 .1 .5|good .7 .1 .4|simple .4 -.4 .3|easy .6 -.3 .4|fast .4 .6 .5
quick .4 .6 .4|efficient .6 .2 .6|useful .6 .1 .4|support .5 0 .4|allow .4 .1 .4|enable .4 .3 .5
create .5 .4 .6|new .4 .4 .3|complete .5 .1 .5|ready .5 .4 .5|clean .5 -.2 .3|help .6 .2 .3
preserve .4 -.2 .4|protect .5 .2 .6|best .8 .3 .6|improve .6 .3 .5|free .6 .2 .5|stable .5 -.4 .5
recommend .5 0 .3|optional .2 -.3 .3|default .1 -.4 .1|true .4 0 .3|ok .5 -.1 .3|happy .9 .5 .5
nice .7 .2 .4|friendly .7 .1 .4|robust .6 .1 .6|reliable .7 -.2 .6|accurate .6 .1 .5|exact .4 .1 .5
power .5 .6 .8|powerful .6 .7 .8|control .2 .2 .8|manage .3 .2 .7|strong .5 .5 .8|win .8 .7 .7
gain .6 .4 .6|grow .6 .4 .5|build .5 .4 .6|start .3 .5 .5|open .3 .3 .3|share .5 .2 .3
accept .4 .1 .3|agree .5 0 .3|confirm .4 .2 .5|resolve .5 .3 .6|fix .5 .4 .5|restore .4 .2 .5
benefit .7 .2 .5|advantage .6 .3 .6|elegant .7 .2 .5|fresh .5 .3 .3|welcome .7 .3 .4
error -.7 .5 -.3|fail -.8 .5 -.5|failure -.8 .5 -.5|invalid -.6 .3 -.3|wrong -.7 .4 -.4
bad -.7 .3 -.3|broken -.7 .4 -.5|corrupt -.8 .5 -.4|crash -.8 .8 -.5|abort -.6 .6 -.1
kill -.9 .8 .3|exception -.4 .5 -.2|warning -.5 .6 -.1|warn -.5 .6 -.1|deprecate -.5 -.1 -.4
danger -.8 .8 -.5|dangerous -.8 .8 -.5|unsafe -.7 .6 -.5|insecure -.7 .5 -.5|attack -.8 .8 .3
raise -.2 .5 .2|lost -.7 .3 -.6|lose -.7 .3 -.6|missing -.5 .2 -.4|timeout -.5 .4 -.3
delete -.4 .4 .4|remove -.2 .2 .3|destroy -.8 .7 .4|overflow -.5 .6 -.3|leak -.6 .4 -.4
deadlock -.8 .5 -.6|interrupt -.4 .6 .1|forbid -.6 .4 .3|forbidden -.6 .4 .3|deny -.6 .4 .4
denied -.6 .4 .4|reject -.6 .4 .4|ignore -.3 -.3 .2|slow -.4 -.5 -.3|expensive -.4 .3 -.2
unknown -.3 .3 -.4|undefined -.3 .2 -.4|empty -.3 -.4 -.3|urgent -.3 .9 .2|wait -.2 -.3 -.2
sleep .2 -.8 -.2|idle 0 -.7 -.2|quiet .3 -.7 0|silent .1 -.6 0|calm .6 -.8 .3|pause 0 -.5 .1
block -.3 .2 .2|strict -.1 .3 .6|force -.2 .6 .7|must -.1 .3 .6|require -.1 .2 .5|limit -.2 0 .1
problem -.6 .4 -.3|bug -.6 .4 -.3|fatal -.9 .8 -.6|panic -.8 .9 -.6|risk -.5 .6 -.3
unsupported -.4 .1 -.4|conflict -.6 .6 -.2|violate -.7 .6 .2|violation -.7 .6 .2
stop -.3 .3 .4|exit -.2 .3 .2|terminate -.5 .5 .5
obsolete -.5 -.3 -.4|poor -.6 -.2 -.5|weak -.4 -.2 -.6|hard -.3 .4 -.1|difficult -.4 .4 -.3
""".replace("\n", "|")
AFFECT_LEXICON: dict[str, tuple[float, float, float]] = {
    parts[0]: (float(parts[1]), float(parts[2]), float(parts[3]))
    for parts in (item.split() for item in _LEX.split("|") if item.strip())
}
_WORD = re.compile(r"[a-z]+")
_SUFFIXES = ("ing", "es", "ed", "ly", "s", "d")


def _lookup(word: str) -> tuple[float, float, float] | None:
    if word in AFFECT_LEXICON:
        return AFFECT_LEXICON[word]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and word[: -len(suffix)] in AFFECT_LEXICON:
            return AFFECT_LEXICON[word[: -len(suffix)]]
    return None


def affect_vector(text: str) -> np.ndarray:
    """(valence, arousal, dominance) of ``text``: f32 [3] in [-1, 1] (see the module docstring)."""
    hits = [v for w in _WORD.findall(text.lower()) if (v := _lookup(w)) is not None]
    if not hits:
        return np.zeros((len(AFFECT_DIMS),), np.float32)
    return np.mean(np.asarray(hits, np.float32), axis=0)


# ----------------------------------------------------------------------------- heads


class AffectBiasHead(nn.Module):
    """Amygdala: affect [..., A] -> routing bias [..., E] (one linear map)."""

    num_experts: int

    @nn.compact
    def __call__(self, affect: jax.Array) -> jax.Array:
        return nn.Dense(self.num_experts, name="proj")(jnp.asarray(affect, jnp.float32))


class ThalamusGateHead(nn.Module):
    """Thalamus: routing centroids [E, D]; token embeddings [..., D] -> bias [..., E].

    ``offset`` [E] is only used by :meth:`prompt_bias`.
    """

    num_experts: int
    dim: int

    @nn.compact
    def __call__(self, emb: jax.Array) -> jax.Array:
        c = self.param("centroids", nn.initializers.normal(1.0), (self.num_experts, self.dim))
        scale = self.param("scale", nn.initializers.ones, ())
        self.param("offset", nn.initializers.zeros, (self.num_experts,))
        return centroid_scores(emb, c, scale)

    def prompt_bias(self, emb: jax.Array) -> jax.Array:
        """One bias [E] for a prompt's embeddings [T, D]: token mean, centred, minus the offset."""
        b = jnp.mean(self(emb).reshape(-1, self.num_experts), axis=0)  # [T, E] -> [E]
        return b - jnp.mean(b) - self.get_variable("params", "offset")


class ControlHead(nn.Module):
    """Hypothalamus: affect [A] -> (generation temperature [], merit momentum [])."""

    @nn.compact
    def __call__(self, affect: jax.Array) -> tuple[jax.Array, jax.Array]:
        a = jnp.asarray(affect, jnp.float32).reshape(len(AFFECT_DIMS))
        log_t = self.param("log_temperature", nn.initializers.zeros, ())
        t_aff = self.param("temperature_affect", nn.initializers.zeros, (len(AFFECT_DIMS),))
        m_logit = self.param("momentum_logit", nn.initializers.constant(2.1972246), ())
        m_aff = self.param("momentum_affect", nn.initializers.zeros, (len(AFFECT_DIMS),))
        temperature = jnp.clip(jnp.exp(log_t + a @ t_aff), *TEMPERATURE_RANGE)
        momentum = jnp.clip(jax.nn.sigmoid(m_logit + a @ m_aff), *MOMENTUM_RANGE)
        return temperature, momentum


# ----------------------------------------------------------------------------- fitting


def fit_affect_bias(
    affects: np.ndarray, routing: np.ndarray, ridge: float = 1e-2, gain: float = 1.0
) -> tuple[dict[str, Any], dict[str, float]]:
    """Amygdala params from documents' affect [N, A] and mean log gate probabilities [N, E].

    Returns:
      ``(params for AffectBiasHead, metrics)``; metrics: ``r2`` (share of the centred routing
      variance the affect explains), ``documents``, ``affect_coverage`` (documents with a
      non-zero affect vector).

    Raises:
      ValueError: mismatched rows, fewer than 2 documents, or a negative ridge.
    """
    a = np.asarray(affects, np.float64)
    r = np.asarray(routing, np.float64)
    if a.ndim != 2 or r.ndim != 2 or a.shape[0] != r.shape[0]:
        raise ValueError(f"affects {a.shape} and routing {r.shape} must be [N, A] and [N, E]")
    if a.shape[0] < 2:
        raise ValueError(f"need at least 2 documents to fit the amygdala head, got {a.shape[0]}")
    if ridge < 0:
        raise ValueError(f"ridge={ridge} must be >= 0")
    r = r - r.mean(axis=1, keepdims=True)  # only relative preferences matter to a softmax
    a_bar, r_bar = a.mean(0), r.mean(0)
    ac, rc = a - a_bar, r - r_bar  # [N, A], [N, E]
    w = np.linalg.solve(ac.T @ ac + ridge * len(a) * np.eye(a.shape[1]), ac.T @ rc)  # [A, E]
    resid = rc - ac @ w
    total = float(np.sum(rc**2))
    r2 = 1.0 - float(np.sum(resid**2)) / total if total > 0 else 0.0
    kernel = gain * w
    params = {
        "proj": {"kernel": kernel.astype(np.float32), "bias": (-a_bar @ kernel).astype(np.float32)}
    }
    metrics = {
        "r2": r2,
        "documents": int(len(a)),
        "affect_coverage": float(np.mean(np.any(a != 0, axis=1))),
    }
    return params, metrics


def fit_centroids(
    emb: np.ndarray,
    assign: np.ndarray,
    num_experts: int,
    iters: int = 10,
    seed: int = 0,
    target_std: float = 1.0,
    groups: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Thalamus params: k-means of token embeddings [N, D] seeded by gate assignments [N].

    Cluster e starts at the mean embedding of the tokens whose top-1 expert is e (a random token
    when none is), then ``iters`` Lloyd iterations; an emptied cluster keeps its centroid.
    ``groups`` [N] (document ids) sets the scale and offset from per-document mean biases (as a
    prompt's bias is computed); without it, from per-token biases.

    Returns:
      ``(params for ThalamusGateHead, metrics)``; metrics: ``inertia`` (mean squared distance
      to the nearest centroid), ``gate_agreement`` (tokens whose nearest centroid is their
      gate's top-1 expert), ``cluster_sizes``, ``tokens``, ``iters``.

    Raises:
      ValueError: mismatched inputs, fewer tokens than experts, or an index out of range.
    """
    x = np.asarray(emb, np.float32)
    g = np.asarray(assign).reshape(-1)
    if x.ndim != 2 or g.shape[0] != x.shape[0]:
        raise ValueError(f"emb {x.shape} and assign {g.shape} must be [N, D] and [N]")
    if x.shape[0] < num_experts:
        raise ValueError(f"{x.shape[0]} tokens cannot seed {num_experts} centroids")
    if g.size and (g.min() < 0 or g.max() >= num_experts):
        raise ValueError(f"assignments must be in [0, {num_experts}); got {g.min()}..{g.max()}")
    rng = np.random.default_rng(seed)
    c = np.stack(
        [
            x[g == e].mean(0) if np.any(g == e) else x[rng.integers(len(x))]
            for e in range(num_experts)
        ]
    )  # [E, D]

    def dist2(c):
        return np.maximum((x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None], 0.0)

    for _ in range(iters):
        near = np.argmin(dist2(c), axis=1)  # [N]
        for e in range(num_experts):
            if np.any(near == e):
                c[e] = x[near == e].mean(0)
    d2 = dist2(c)  # [N, E]
    near = np.argmin(d2, axis=1)
    centred = (d2.mean(1, keepdims=True) - d2).astype(np.float64)  # [N, E] bias at scale 1
    if groups is not None:
        g_ids, inverse = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
        sums = np.zeros((len(g_ids), num_experts))
        np.add.at(sums, inverse, centred)
        centred = sums / np.bincount(inverse)[:, None]  # [documents, E]
    mean = centred.mean(0)  # [E]
    spread = float(np.std(centred - mean))
    scale = target_std / spread if spread > 0 else 1.0
    params = {
        "centroids": c.astype(np.float32),
        "scale": np.asarray(scale, np.float32),
        "offset": (scale * mean).astype(np.float32),
    }
    metrics = {
        "inertia": float(d2[np.arange(len(x)), near].mean()),
        "gate_agreement": float(np.mean(near == g)),
        "cluster_sizes": np.bincount(near, minlength=num_experts).tolist(),
        "tokens": int(len(x)),
        "iters": int(iters),
    }
    return params, metrics


@jax.jit
def _nll_per_temperature(logits, targets, weights, temps):
    """Summed NLL of targets [N, T] under logits [N, T, V] / t for each t in temps [G] -> [G]."""

    def one(t):
        logp = jax.nn.log_softmax(logits.astype(jnp.float32) / t, axis=-1)  # [N, T, V]
        picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [N, T]
        return -jnp.sum(picked * weights)

    return jax.lax.map(one, temps)


def fit_temperature(batches, grid: np.ndarray | None = None) -> tuple[float, dict[str, Any]]:
    """Temperature minimising the masked NLL over ``batches`` of (logits, targets, weights).

    Args:
      batches: iterable of ``(logits [N, T, V], targets [N, T] int, weights [N, T])``.
      grid: temperatures to try (default: 97 log-spaced values in TEMPERATURE_RANGE, ~4% apart).

    Returns:
      ``(temperature, metrics)``; metrics: ``nll_at_1`` and ``nll_best`` (per scored token),
      ``tokens``.

    Raises:
      ValueError: no scored token.
    """
    temps = np.geomspace(*TEMPERATURE_RANGE, 97) if grid is None else np.asarray(grid)
    temps = np.unique(np.append(temps, 1.0)).astype(np.float32)
    total, count = np.zeros(len(temps)), 0.0
    for logits, targets, weights in batches:
        total += np.asarray(_nll_per_temperature(logits, targets, weights, jnp.asarray(temps)))
        count += float(np.sum(weights))
    if count == 0:
        raise ValueError("no scored (response) tokens to fit the temperature on")
    nll = total / count
    best = int(np.argmin(nll))
    one = int(np.argmin(np.abs(temps - 1.0)))
    return float(temps[best]), {
        "nll_at_1": float(nll[one]),
        "nll_best": float(nll[best]),
        "tokens": int(count),
    }


def routing_volatility(routing: np.ndarray) -> float:
    """Mean total-variation distance between consecutive rows of routing distributions [N, E]."""
    p = np.asarray(routing, np.float64)
    if p.ndim != 2 or p.shape[0] < 2:
        return 0.0
    return float(np.mean(0.5 * np.abs(np.diff(p, axis=0)).sum(axis=1)))


def control_params(
    temperature: float,
    momentum: float,
    arousal_gain: float = 0.25,
    dominance_gain: float = -0.15,
) -> dict[str, Any]:
    """ControlHead params for a base temperature and momentum (clipped to their ranges)."""
    t = float(np.clip(temperature, *TEMPERATURE_RANGE))
    m = float(np.clip(momentum, *MOMENTUM_RANGE))
    return {
        "log_temperature": np.asarray(np.log(t), np.float32),
        "temperature_affect": np.asarray([0.0, arousal_gain, dominance_gain], np.float32),
        "momentum_logit": np.asarray(np.log(m / (1.0 - m)), np.float32),
        "momentum_affect": np.zeros((len(AFFECT_DIMS),), np.float32),
    }


# ----------------------------------------------------------------------------- composition


def compose_controls(
    model, params, heads: dict[str, Any], text_ids: list[int], text: str
) -> tuple[Any, dict[str, Any]]:
    """RoutingControls for one prompt from the zone heads present in ``heads``.

    Args:
      model: the SelfTeachingAdapter (its embedding embeds the prompt for the thalamus).
      params: the adapter's params.
      heads: zone name -> head params, for any of amygdala, thalamus, hypothalamus.
      text_ids: the prompt's text token ids (no special symbols).
      text: the prompt text (its affect vector drives the amygdala and hypothalamus).

    Returns:
      ``(RoutingControls with bias [E] = thalamus + amygdala biases, info)``; info holds the
      affect vector, each bias, and the hypothalamus' temperature and merit momentum (if any).
    """
    E, D = model.config.num_experts, model.config.dim
    affect = affect_vector(text)
    bias = np.zeros((E,), np.float32)
    info: dict[str, Any] = {"affect": affect.tolist()}
    if "thalamus" in heads and text_ids:
        tokens = jnp.asarray([text_ids], jnp.int32)  # [1, T]
        emb = model.apply({"params": params}, tokens, method=lambda m, t: m.embed(t))[0]  # [T, D]
        tb = ThalamusGateHead(E, D).apply(
            {"params": heads["thalamus"]}, emb, method=ThalamusGateHead.prompt_bias
        )
        info["thalamus_bias"] = np.asarray(tb).tolist()
        bias = bias + np.asarray(tb)
    if "amygdala" in heads:
        ab = np.asarray(AffectBiasHead(E).apply({"params": heads["amygdala"]}, affect))
        info["amygdala_bias"] = ab.tolist()
        bias = bias + ab
    if "hypothalamus" in heads:
        t, m = ControlHead().apply({"params": heads["hypothalamus"]}, affect)
        info["temperature"], info["merit_momentum"] = float(t), float(m)
    return RoutingControls.create(E, bias=bias), info
