"""The Cerebrum controller as pure functions: state pytree, scoring, routing, one step.

A Cerebrum holds E expert slots (capacity fixed at init; activity is a mask, as in LiquidMoE).
A slot is empty, a *legacy* expert (a fitted mixture model scored by likelihood on the host and
passed in as ``legacy_ll [B, E]``) or an *adapter* expert: a small diagonal Gaussian mixture on
the standardised features, trained by gradient descent (Adam), stacked on the E axis.

Novelty (it fires with a single expert): every expert e carries a calibrated threshold
``threshold[e]`` = the q-quantile of its log-likelihood on its own held-out data (legacy experts:
held-out data at `fit_and_add`; adapters: the held-out half of the batch that spawned them), and
a centre (the median). A sample is novel when ``ll[e] < threshold[e] - margin`` for EVERY
active expert. When at least ``novel_fraction`` of a batch is novel and a slot is free, the step
spawns an adapter in the first free slot, fitted by a few EM iterations on the novel samples of
one half of the batch and calibrated on those of the other half. Thresholds then track each
expert's own data by an EMA of the quantile over the samples routed to it, but only in clean
batches (novel fraction < ``clean_fraction``), so the estimate is neither truncated at the
threshold (which would creep upwards) nor dragged down by a new regime.

Routing: the target of a sample is the active expert with the best calibrated score
``(ll - centre) / (centre - threshold)``. The gate's logits are that calibrated likelihood
evidence plus a learned linear correction on the standardised features (cross-entropy towards
the target, a Switch-style load-balance loss and an L2 pull towards zero). Because the evidence
term comes from the experts' own likelihoods, the gate cannot forget a regime it has not seen
for a while (a purely learned gate trained on a regime-by-regime stream does).
`mixture_log_prob` mixes the top-k gate experts' likelihoods. Adapters learn from the samples
routed to them; rows of experts that got no sample in a step receive no update (so old
experts do not drift).

Shapes: B batch, D features, E expert slots, C adapter components, K top-k.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from aura.mixtures import gmm_em
from aura.nn import gaussian as gauss

EMPTY, LEGACY, ADAPTER = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class CerebrumConfig:
    """Static settings of a Cerebrum (hashable: a jit static argument)."""

    dim: int
    capacity: int = 8
    adapter_components: int = 2
    top_k: int = 2
    novelty_quantile: float = 0.02
    novelty_margin: float = 0.0
    novel_fraction: float = 0.5
    clean_fraction: float = 0.1
    threshold_ema: float = 0.1
    spawn_em_iters: int = 15
    adapter_reg: float = 1e-3
    adapter_lr: float = 3e-3
    gate_lr: float = 3e-2
    load_balance_weight: float = 1e-3
    min_routed: int = 8
    gate_l2: float = 1e-2

    def __post_init__(self) -> None:
        if self.dim < 1 or self.capacity < 1 or self.adapter_components < 1:
            raise ValueError("dim, capacity and adapter_components must be >= 1")
        if self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1 (it is capped at the capacity)")
        for name in ("novelty_quantile", "novel_fraction", "clean_fraction", "threshold_ema"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in (0, 1]")


class CerebrumState(NamedTuple):
    """All arrays of a Cerebrum (a pytree; leading axis E where per-expert)."""

    kind: jax.Array  # int32 [E]: EMPTY / LEGACY / ADAPTER
    threshold: jax.Array  # f32 [E]
    center: jax.Array  # f32 [E]
    count: jax.Array  # int32 [E] samples routed so far
    born: jax.Array  # int32 [E] step of arrival (-1: empty)
    adapters: dict  # logits [E, C], means [E, C, D], log_vars [E, C, D]
    adapter_opt: optax.OptState
    gate: dict  # w [D, E], b [E]
    gate_opt: optax.OptState
    feat_mean: jax.Array  # [D]
    feat_std: jax.Array  # [D]
    step: jax.Array  # int32 []


def _adapter_opt(cfg: CerebrumConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.adapter_lr)


def _gate_opt(cfg: CerebrumConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.gate_lr)


def init_state(cfg: CerebrumConfig) -> CerebrumState:
    """An empty Cerebrum (all slots free, identity feature standardisation)."""
    e, c, d = cfg.capacity, cfg.adapter_components, cfg.dim
    adapters = {
        "logits": jnp.zeros((e, c)),
        "means": jnp.zeros((e, c, d)),
        "log_vars": jnp.zeros((e, c, d)),
    }
    gate = {"w": jnp.zeros((d, e)), "b": jnp.zeros((e,))}
    return CerebrumState(
        kind=jnp.zeros((e,), jnp.int32), threshold=jnp.zeros((e,)), center=jnp.zeros((e,)),
        count=jnp.zeros((e,), jnp.int32), born=jnp.full((e,), -1, jnp.int32),
        adapters=adapters, adapter_opt=_adapter_opt(cfg).init(adapters), gate=gate,
        gate_opt=_gate_opt(cfg).init(gate), feat_mean=jnp.zeros((d,)), feat_std=jnp.ones((d,)),
        step=jnp.zeros((), jnp.int32),
    )  # fmt: skip


def standardize(state: CerebrumState, x: jax.Array) -> jax.Array:
    return (x - state.feat_mean) / state.feat_std


def adapter_log_prob(state: CerebrumState, x: jax.Array) -> jax.Array:
    """Log-density of raw features x [B, D] under every adapter slot: [B, E] (raw-space
    density: includes the Jacobian of the standardisation)."""
    z = standardize(state, x)
    a = state.adapters

    def one(logits, means, log_vars):
        lp, _ = gauss.mixture_log_prob(
            z, jax.nn.log_softmax(logits), means, jnp.exp(log_vars), "diag"
        )
        return lp  # [B]

    ll = jax.vmap(one, out_axes=1)(a["logits"], a["means"], a["log_vars"])  # [B, E]
    return ll - jnp.sum(jnp.log(state.feat_std))


@jax.jit
def expert_log_prob(state: CerebrumState, x: jax.Array, legacy_ll: jax.Array) -> jax.Array:
    """[B, E] log-likelihood per slot; -inf for empty slots."""
    ll = jnp.where(state.kind == LEGACY, legacy_ll, adapter_log_prob(state, x))
    return jnp.where(state.kind != EMPTY, ll, -jnp.inf)


def calibrated(state: CerebrumState, ll: jax.Array) -> jax.Array:
    """(ll - centre) / (centre - threshold): 0 at the median, -1 at the novelty threshold."""
    spread = jnp.maximum(state.center - state.threshold, 1e-3)
    return jnp.where(state.kind != EMPTY, (ll - state.center) / spread, -jnp.inf)


def novel_mask(cfg: CerebrumConfig, state: CerebrumState, ll: jax.Array) -> jax.Array:
    """Bool [B]: novel for every active expert (True for all if there is none)."""
    accepted = (ll >= state.threshold - cfg.novelty_margin) & (state.kind != EMPTY)
    return ~jnp.any(accepted, axis=1)


def masked_quantile(values: jax.Array, mask: jax.Array, q: float) -> jax.Array:
    """The q-quantile (lower, by rank) of values[mask]; 0 when the mask is empty."""
    n = jnp.sum(mask)
    ranked = jnp.sort(jnp.where(mask, values, jnp.inf))
    idx = jnp.clip(jnp.floor(q * (n - 1)).astype(jnp.int32), 0, values.shape[0] - 1)
    return jnp.where(n > 0, ranked[idx], 0.0)


def gate_logits(state: CerebrumState, gate: dict, z: jax.Array, ll: jax.Array) -> jax.Array:
    """[B, E]: calibrated likelihood evidence (clipped to [-30, 10]) plus the learned linear
    correction on standardised features z; -inf on empty slots."""
    evidence = jnp.clip(calibrated(state, ll), -30.0, 10.0)
    logits = evidence + z @ gate["w"] + gate["b"]
    return jnp.where(state.kind != EMPTY, logits, -jnp.inf)


def gate_probs(state: CerebrumState, x: jax.Array, ll: jax.Array) -> jax.Array:
    """Gate probabilities [B, E] over active experts (ll: `expert_log_prob`)."""
    return jax.nn.softmax(gate_logits(state, state.gate, standardize(state, x), ll), axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def mixture_log_prob(
    cfg: CerebrumConfig, state: CerebrumState, x: jax.Array, legacy_ll: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top-k mixture: ``(log p [B], top-k slots [B, K], renormalised weights [B, K])``."""
    all_ll = expert_log_prob(state, x, legacy_ll)
    probs = gate_probs(state, x, all_ll)
    k = min(cfg.top_k, cfg.capacity)
    w, idx = jax.lax.top_k(probs, k)  # [B, K]
    w = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-30)
    ll = jnp.take_along_axis(all_ll, idx, axis=1)  # [B, K]
    terms = jnp.where(w > 0, jnp.log(jnp.maximum(w, 1e-30)) + ll, -jnp.inf)
    return jax.nn.logsumexp(terms, axis=-1), idx, w


def _spawn_candidate(cfg, state, x, novel, key):
    """Adapter params fitted on the novel samples of the even rows, calibrated on the odd."""
    z = standardize(state, x)
    fit_w = (novel & (jnp.arange(x.shape[0]) % 2 == 0)).astype(z.dtype)
    cal = novel & (jnp.arange(x.shape[0]) % 2 == 1)
    fit_w = jnp.where(jnp.sum(fit_w) > 0, fit_w, jnp.ones_like(fit_w))  # unused if no spawn
    c = cfg.adapter_components
    p = gmm_em.init_params(key, z, fit_w, c, "diag", cfg.adapter_reg, "k-means++")

    def em_step(_, p):
        _, log_resp = gauss.mixture_log_prob(
            z, jnp.log(p["weights"]), p["means"], p["covariances"], "diag"
        )
        return gmm_em.m_step(z, fit_w, jnp.exp(log_resp), "diag", cfg.adapter_reg)

    p = jax.lax.fori_loop(0, cfg.spawn_em_iters, em_step, p)
    params = {
        "logits": jnp.log(p["weights"]),
        "means": p["means"],
        "log_vars": jnp.log(p["covariances"]),
    }
    lp, _ = gauss.mixture_log_prob(z, jnp.log(p["weights"]), p["means"], p["covariances"], "diag")
    ll = lp - jnp.sum(jnp.log(state.feat_std))
    return params, masked_quantile(ll, cal, cfg.novelty_quantile), masked_quantile(ll, cal, 0.5)


def _insert(state: CerebrumState, slot, spawn, params, threshold, center) -> CerebrumState:
    hit = (jnp.arange(state.kind.shape[0]) == slot) & spawn  # [E]

    def put(old, new):
        return jnp.where(hit.reshape((-1,) + (1,) * (old.ndim - 1)), new[None], old)

    adapters = {k: put(state.adapters[k], params[k]) for k in state.adapters}
    return state._replace(
        kind=jnp.where(hit, ADAPTER, state.kind),
        threshold=jnp.where(hit, threshold, state.threshold),
        center=jnp.where(hit, center, state.center),
        born=jnp.where(hit, state.step, state.born),
        adapters=adapters,
    )


def _train(cfg, state, x, ll, target, routed):
    """One Adam step for the gate (all samples) and the adapters (routed samples only)."""
    z = standardize(state, x)
    active = state.kind != EMPTY
    n_active = jnp.maximum(jnp.sum(active), 1)

    def gate_loss(g):
        logits = jnp.where(active, gate_logits(state, g, z, ll), -1e9)  # [B, E]
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, target))
        probs = jax.nn.softmax(logits)
        frac = jnp.mean(jax.nn.one_hot(jnp.argmax(logits, -1), cfg.capacity), axis=0)
        lb = n_active * jnp.sum(frac * jnp.mean(probs, axis=0))
        l2 = jnp.sum(jnp.square(g["w"])) + jnp.sum(jnp.square(g["b"]))
        return ce + cfg.load_balance_weight * lb + cfg.gate_l2 * l2, (ce, lb)

    (_, (ce, lb)), g_grad = jax.value_and_grad(gate_loss, has_aux=True)(state.gate)
    g_upd, gate_opt = _gate_opt(cfg).update(g_grad, state.gate_opt, state.gate)
    gate = optax.apply_updates(state.gate, g_upd)

    own = jax.nn.one_hot(target, cfg.capacity) * routed[:, None]  # [B, E]
    own = own * (state.kind == ADAPTER)[None]

    def nll(a):
        ll = adapter_log_prob(state._replace(adapters=a), x)  # [B, E]
        return -jnp.sum(ll * own) / jnp.maximum(jnp.sum(own), 1.0)

    a_grad = jax.grad(nll)(state.adapters)
    a_upd, adapter_opt = _adapter_opt(cfg).update(a_grad, state.adapter_opt, state.adapters)
    has = jnp.sum(own, axis=0) > 0  # [E]: rows without samples get no update (no drift)
    a_upd = jax.tree.map(lambda u: u * has.reshape((-1,) + (1,) * (u.ndim - 1)), a_upd)
    adapters = optax.apply_updates(state.adapters, a_upd)
    state = state._replace(gate=gate, gate_opt=gate_opt, adapters=adapters, adapter_opt=adapter_opt)
    return state, ce, lb


def _recalibrate(cfg, state, ll, target, clean):
    """EMA of each expert's quantile/median over the samples routed to it in a clean batch."""
    own = jax.nn.one_hot(target, cfg.capacity, dtype=bool)  # [B, E]
    q = jax.vmap(lambda v, m: masked_quantile(v, m, cfg.novelty_quantile), in_axes=1)(ll, own)
    med = jax.vmap(lambda v, m: masked_quantile(v, m, 0.5), in_axes=1)(ll, own)
    ok = clean & (jnp.sum(own, axis=0) >= cfg.min_routed) & (state.kind != EMPTY)
    r = cfg.threshold_ema
    return state._replace(
        threshold=jnp.where(ok, (1 - r) * state.threshold + r * q, state.threshold),
        center=jnp.where(ok, (1 - r) * state.center + r * med, state.center),
    )


@functools.partial(jax.jit, static_argnums=0)
def train_step(
    cfg: CerebrumConfig, state: CerebrumState, x: jax.Array, legacy_ll: jax.Array, key: jax.Array
) -> tuple[CerebrumState, dict]:
    """One controller step on a batch x [B, D] (legacy_ll [B, E]: host-computed likelihoods
    of the legacy experts, anything in other columns). Pure: returns the new state."""
    ll = expert_log_prob(state, x, legacy_ll)
    novel = novel_mask(cfg, state, ll)
    frac = jnp.mean(novel)
    free = state.kind == EMPTY
    spawn = (frac >= cfg.novel_fraction) & jnp.any(free)
    slot = jnp.argmax(free)
    params, thr, ctr = _spawn_candidate(cfg, state, x, novel, key)
    state = _insert(state, slot, spawn, params, thr, ctr)
    ll = expert_log_prob(state, x, legacy_ll)
    target = jnp.argmax(calibrated(state, ll), axis=1)
    # After a spawn the batch's novel samples belong to the new expert.
    target = jnp.where(spawn & novel, slot, target)
    routed = ~novel_mask(cfg, state, ll) | (spawn & novel)
    state = _recalibrate(cfg, state, ll, target, (~spawn) & (frac < cfg.clean_fraction))
    state, ce, lb = _train(cfg, state, x, ll, target, routed)
    counts = jnp.sum(jax.nn.one_hot(target, cfg.capacity, dtype=jnp.int32) * routed[:, None], 0)
    state = state._replace(count=state.count + counts, step=state.step + 1)
    metrics = {
        "novel_fraction": frac, "spawned": jnp.where(spawn, slot, -1),
        "active": jnp.sum(state.kind != EMPTY), "gate_ce": ce, "load_balance": lb,
    }  # fmt: skip
    return state, metrics
