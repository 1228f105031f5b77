"""`MultiMixtureTransformer`: VAE + latent GMM-HMM + LSTM state network + Transformer (+ optional
diffusion-refined plan and draft scorer), the "mmm" hybrid of the Cerebrum design.

A sequence x [B, T, D] is encoded frame by frame to q(z_t | x_t) (VAE encoder); the latent
trajectory is scored by an HMM whose emissions are Gaussian mixtures in latent space and whose
transition matrix is the LSTM `RecurrentNetwork`'s learned transition; the LSTM also learns to
filter the HMM state online (its per-step state log-probabilities are trained towards the HMM
posteriors); a causal encoder-decoder Transformer forecasts the next frame from the latents.

Loss per sequence (`loss`): reconstruction (Gaussian, unit variance) + kl_weight * KL(q || N(0,
I)) + hmm_weight * HMM NLL of z + state_weight * CE(LSTM states, HMM posteriors) +
forecast_weight * next-frame MSE, plus the auxiliary rules (`rules_loss`) on the four learned
latent gate vectors pred/recog/gen/reg (each gates latent dims through a sigmoid in its head):

* ``Rule(name, label, "mean", target, reward)``: reward * (mean gate - target)^2 -- a budget of
  open latent dims for that head;
* ``Rule(name, label, "disjoint", other=label2, reward)``: reward * mean(gate1 * gate2) -- the
  two heads use different latent dims;
* ``Rule(name, label, "match", other=label2, reward)``: reward * mean((gate1 - gate2)^2).

Rule sets are tuples (static arguments of a jitted loss), edited with `add_rule`,
`remove_rule` and `check_rule` (the original API's names).

Heads: `predict` (next frame from the HMM-filtered state), `recognize` (Viterbi state path,
LSTM state posteriors and a gated sequence embedding), `generate` (sample the latent HMM and
decode), and with ``vocab_size > 0`` `regression` (plan latent -> DDPM refinement -> top-p
drafts -> pick the draft with the best autoregressive log-likelihood) with `regression_loss`.

Shapes: B batch, T time, L context length, D input width, Z latent width, S states,
M mixtures per state, V vocabulary, N drafts.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from aura.nn import gaussian as gauss
from aura.nn import generative as gen
from aura.nn import hmm as hmm_ops
from aura.nn.sequence_blocks import (
    DraftScorer,
    RecurrentNetwork,
    TimeSeriesTransformer,
    draft_log_likelihood,
)

GATES = ("pred", "recog", "gen", "reg")
RULE_KINDS = ("mean", "disjoint", "match")


@dataclasses.dataclass(frozen=True)
class Rule:
    """An auxiliary rule on a learned gate vector (see the module docstring)."""

    name: str
    label: str
    kind: str = "mean"
    target: float = 0.5
    reward: float = 1.0
    other: str | None = None

    def __post_init__(self) -> None:
        if self.label not in GATES or (self.other is not None and self.other not in GATES):
            raise ValueError(f"rule {self.name!r}: labels must be in {GATES}")
        if self.kind not in RULE_KINDS:
            raise ValueError(f"rule {self.name!r}: kind {self.kind!r} not in {RULE_KINDS}")
        if self.kind != "mean" and (self.other is None or self.other == self.label):
            raise ValueError(f"rule {self.name!r}: kind {self.kind!r} needs another label")
        if self.reward < 0 or not 0.0 <= self.target <= 1.0:
            raise ValueError(f"rule {self.name!r}: reward >= 0 and target in [0, 1] required")


def add_rule(rules: tuple[Rule, ...], rule: Rule) -> tuple[Rule, ...]:
    """A new rule set with `rule` added (replacing a rule of the same name). Rule sets are
    tuples: static, hashable arguments of a jitted loss."""
    return tuple(r for r in rules if r.name != rule.name) + (rule,)


def remove_rule(rules: tuple[Rule, ...], name: str) -> tuple[Rule, ...]:
    """The rule set without the rule called `name` (unchanged if absent)."""
    return tuple(r for r in rules if r.name != name)


def check_rule(rules: tuple[Rule, ...], name: str) -> Rule | None:
    """The rule called `name`, or None."""
    return next((r for r in rules if r.name == name), None)


def rules_loss(params: dict, rules: tuple[Rule, ...]) -> jax.Array:
    """Sum of the rules' penalties on ``params[<label>_weights]`` (sigmoid gates)."""
    total = jnp.zeros(())
    for r in rules:
        g = jax.nn.sigmoid(params[f"{r.label}_weights"])
        if r.kind == "mean":
            total += r.reward * jnp.square(jnp.mean(g) - r.target)
        else:
            h = jax.nn.sigmoid(params[f"{r.other}_weights"])
            pen = jnp.mean(g * h) if r.kind == "disjoint" else jnp.mean(jnp.square(g - h))
            total += r.reward * pen
    return total


def kl_anneal(step: jax.Array, total: int, kind: str = "linear") -> jax.Array:
    """KL weight in [0, 1] at `step` of a `total`-step warm-up ("linear", "cosine", "step")."""
    p = jnp.clip(step / max(total, 1), 0.0, 1.0)
    if kind == "linear":
        return p
    if kind == "cosine":
        return 0.5 * (1.0 - jnp.cos(math.pi * p))
    if kind == "step":
        return jnp.where(p < 0.2, 0.0, jnp.where(p < 0.6, 0.5, 1.0))
    raise ValueError(f"anneal kind {kind!r}; use linear, cosine or step")


class MultiMixtureTransformer(nn.Module):
    """The hybrid; field names follow the original configuration."""

    input_dim: int
    hidden_dim: int
    z_dim: int
    rnn_hidden: int
    num_states: int
    n_mix: int
    trans_d_model: int
    trans_nhead: int
    trans_layers: int
    output_dim: int
    vocab_size: int = 0
    diffusion_steps: int = 50
    refine_steps: int = 10
    max_len: int = 512

    def setup(self) -> None:
        s, m, z = self.num_states, self.n_mix, self.z_dim
        self.encoder = gen.VAEEncoder(self.hidden_dim, z)
        self.decoder = gen.VAEDecoder(self.hidden_dim, self.input_dim)
        self.rn = RecurrentNetwork(self.rnn_hidden, s)
        self.pi_logits = self.param("pi_logits", nn.initializers.zeros, (s,))
        self.weight_logits = self.param("weight_logits", nn.initializers.zeros, (s, m))
        self.hmm_means = self.param("hmm_means", nn.initializers.normal(1.0), (s, m, z))
        self.hmm_log_vars = self.param("hmm_log_vars", nn.initializers.zeros, (s, m, z))
        self.transformer = TimeSeriesTransformer(
            self.trans_d_model, self.trans_nhead, self.trans_layers, self.output_dim,
            max_len=self.max_len,
        )  # fmt: skip
        for g in GATES:
            setattr(self, f"{g}_weights", self.param(f"{g}_weights", nn.initializers.ones, (z,)))
        if self.vocab_size > 0:
            self.denoiser = gen.TinyDiffusionBlock(z)
            self.scorer = DraftScorer(self.vocab_size, z, self.trans_nhead, self.trans_layers)

    def init_all(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """Touches every submodule once on a tiny slice of x (for `init`; compiles far less
        than a full loss)."""
        x = x[:1, :2]  # [1, 2, D]
        mu, _ = self.encoder(x)
        out = [self.decoder(mu), self.rn(mu)[0], self.transformer(mu, mu)]
        if self.vocab_size > 0:
            out.append(self.denoiser(mu[:, 0], jnp.zeros((1,), jnp.int32)))
            out.append(self.scorer(jnp.zeros((1, 2), jnp.int32), mu[:, 0]))
        return sum(jnp.sum(o) for o in out)

    # ---------------------------------------------------------------- latent HMM

    def _emission_log_b(self, z: jax.Array) -> jax.Array:
        """log p(z_t | state) [B, T, S] under the latent GMM emissions."""
        b, t, zd = z.shape
        s, m = self.num_states, self.n_mix
        comp = gauss.component_log_prob(
            z.reshape(b * t, zd), self.hmm_means.reshape(s * m, zd),
            jnp.exp(self.hmm_log_vars).reshape(s * m, zd), "diag",
        ).reshape(b, t, s, m)  # fmt: skip
        return jax.nn.logsumexp(comp + jax.nn.log_softmax(self.weight_logits)[None, None], -1)

    def hmm_terms(self, z: jax.Array, mask: jax.Array):
        """(log_pi, log_A, log_b) of the latent HMM for z [B, T, Z]."""
        _, log_a = self.rn(z)
        return jax.nn.log_softmax(self.pi_logits), log_a, self._emission_log_b(z)

    # ---------------------------------------------------------------- forward and loss

    def __call__(self, x: jax.Array, key: jax.Array, mask: jax.Array | None = None) -> dict:
        """Encodes, samples z, decodes and scores: a dict of outputs (see `loss`)."""
        mask = jnp.ones(x.shape[:2], bool) if mask is None else mask
        mu, logvar = self.encoder(x)
        z = gen.reparameterize(key, mu, logvar)
        emissions, log_a = self.rn(z)
        log_b = self._emission_log_b(z)
        log_pi = jax.nn.log_softmax(self.pi_logits)
        hmm_ll, gamma, _ = hmm_ops.posteriors(log_pi, log_a, log_b, mask)
        return {
            "mu": mu, "logvar": logvar, "z": z, "reconstruction": self.decoder(z),
            "emissions": emissions, "transitions": log_a, "hmm_ll": hmm_ll,
            "state_posteriors": gamma, "forecast": self.transformer(z, z), "mask": mask,
        }  # fmt: skip

    def loss(self, x: jax.Array, key: jax.Array, mask=None, kl_weight=1.0, weights=None):
        """Mean per-sequence loss and its parts; `weights` overrides the term weights."""
        w = {"hmm": 1.0, "state": 1.0, "forecast": 1.0, **(weights or {})}
        out = self(x, key, mask)
        m = out["mask"].astype(x.dtype)
        recon = 0.5 * jnp.sum(jnp.square(out["reconstruction"] - x) * m[..., None], (1, 2))
        kl = jnp.sum(gen.gaussian_kl(out["mu"], out["logvar"]) * m, axis=1)
        post = jax.lax.stop_gradient(out["state_posteriors"])
        state_ce = -jnp.sum(post * out["emissions"], axis=(1, 2))
        fc = out["forecast"][:, :-1, : x.shape[-1]] - x[:, 1:, : out["forecast"].shape[-1]]
        forecast = 0.5 * jnp.sum(jnp.square(fc) * (m[:, 1:] * m[:, :-1])[..., None], (1, 2))
        parts = {
            "recon": jnp.mean(recon), "kl": jnp.mean(kl), "hmm_nll": -jnp.mean(out["hmm_ll"]),
            "state_ce": jnp.mean(state_ce), "forecast": jnp.mean(forecast),
        }  # fmt: skip
        total = parts["recon"] + kl_weight * parts["kl"] + w["hmm"] * parts["hmm_nll"]
        total += w["state"] * parts["state_ce"] + w["forecast"] * parts["forecast"]
        return total, parts

    def elbo(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Per-sequence evidence lower bound [B] at the posterior mean (nats; unit-variance
        Gaussian decoder, KL to N(0, I)): the "mmm" log-likelihood score."""
        mask = jnp.ones(x.shape[:2], bool) if mask is None else mask
        mu, logvar = self.encoder(x)
        sq = jnp.sum(jnp.square(self.decoder(mu) - x), axis=-1) + x.shape[-1] * math.log(
            2 * math.pi
        )
        per_t = -0.5 * sq - gen.gaussian_kl(mu, logvar)
        return jnp.sum(per_t * mask, axis=1)

    # ---------------------------------------------------------------- heads

    def predict(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Next frame [B, D]: HMM-filtered state -> expected next latent (gated) -> decode."""
        mask = jnp.ones(x.shape[:2], bool) if mask is None else mask
        mu, _ = self.encoder(x)
        log_pi, log_a, log_b = self.hmm_terms(mu, mask)
        alpha, ll = hmm_ops.forward(log_pi, log_a, log_b, mask)
        filt = jnp.exp(alpha[:, -1] - ll[:, None])  # [B, S] p(state_T | x)
        nxt = filt @ jnp.exp(log_a)  # [B, S]
        state_mean = jnp.einsum("sm,smz->sz", jax.nn.softmax(self.weight_logits), self.hmm_means)
        return self.decoder((nxt @ state_mean) * jax.nn.sigmoid(self.pred_weights))

    def recognize(self, x: jax.Array, mask: jax.Array | None = None) -> dict:
        """Viterbi latent states [B, T], LSTM state log-probs [B, T, S], embedding [B, Z]."""
        mask = jnp.ones(x.shape[:2], bool) if mask is None else mask
        mu, _ = self.encoder(x)
        log_pi, log_a, log_b = self.hmm_terms(mu, mask)
        states, _ = hmm_ops.viterbi(log_pi, log_a, log_b, mask)
        m = mask.astype(x.dtype)[..., None]
        emb = jnp.sum(mu * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)
        return {
            "states": states, "state_log_probs": self.rn(mu)[0],
            "embedding": emb * jax.nn.sigmoid(self.recog_weights),
        }  # fmt: skip

    def generate(self, key: jax.Array, num_steps: int, batch_size: int = 1) -> jax.Array:
        """Samples the latent HMM (states and GMM emissions), gates by gen_weights, decodes:
        [B, num_steps, D]."""
        _, log_a = self.rn(jnp.zeros((1, 1, self.z_dim)))
        k0, kloop = jax.random.split(key)
        state0 = jax.random.categorical(k0, self.pi_logits, shape=(batch_size,))

        def step(state, k):
            km, kz, kt = jax.random.split(k, 3)
            mix = jax.random.categorical(km, self.weight_logits[state])
            var = jnp.exp(self.hmm_log_vars[state, mix])
            z = gauss.sample_components(kz, self.hmm_means[state, mix], var, "diag")
            return jax.random.categorical(kt, log_a[state]), z

        _, zs = jax.lax.scan(step, state0, jax.random.split(kloop, num_steps))  # [T, B, Z]
        return self.decoder(jnp.swapaxes(zs, 0, 1) * jax.nn.sigmoid(self.gen_weights))

    def _plan(self, context: jax.Array, key: jax.Array, refine: bool) -> jax.Array:
        mu, _ = self.encoder(context)
        plan = jnp.mean(mu, axis=1) * jax.nn.sigmoid(self.reg_weights)  # [B, Z]
        if not refine:
            return plan
        sched = gen.cosine_schedule(self.diffusion_steps)
        return gen.ddpm_sample(
            self.denoiser, sched, key, plan.shape, x_init=plan, start_step=self.refine_steps
        )

    def regression_loss(self, context, target_tokens, key, label_smoothing=0.1, entropy_coef=0.01):
        """CE (label-smoothed) of target tokens [B, T] given the plan of `context` [B, L, D],
        minus an entropy bonus, plus the denoiser's diffusion loss on the (detached) plan."""
        if self.vocab_size <= 0:
            raise ValueError("regression needs vocab_size > 0 in the model configuration")
        plan = self._plan(context, key, refine=False)
        logits = self.scorer(target_tokens, plan)  # [B, T, V]
        onehot = optax.smooth_labels(
            jax.nn.one_hot(target_tokens, self.vocab_size), label_smoothing
        )
        ce = jnp.mean(optax.softmax_cross_entropy(logits, onehot))
        logp = jax.nn.log_softmax(logits)
        entropy = -jnp.mean(jnp.sum(jnp.exp(logp) * logp, axis=-1))
        sched = gen.cosine_schedule(self.diffusion_steps)
        diff = gen.diffusion_loss(self.denoiser, sched, jax.lax.stop_gradient(plan), key)
        return ce - entropy_coef * entropy + diff

    def regression(self, context, key, max_len: int, num_drafts: int = 3, top_p: float = 0.9):
        """Plan -> refine -> N top-p drafts -> best by AR log-likelihood.

        Returns ``(best [B, max_len] int32, scores [N, B])``.
        """
        if self.vocab_size <= 0:
            raise ValueError("regression needs vocab_size > 0 in the model configuration")
        k_plan, k_draft = jax.random.split(key)
        plan = self._plan(context, k_plan, refine=True)
        b = plan.shape[0]

        def draft(k):
            def step(tokens, inputs):
                t, kt = inputs
                logits = self.scorer(tokens, plan)[:, t]  # [B, V]
                nxt = _top_p_sample(kt, logits, top_p)
                return tokens.at[:, t].set(nxt), None

            tokens0 = jnp.zeros((b, max_len), jnp.int32)
            ks = jax.random.split(k, max_len)
            tokens, _ = jax.lax.scan(step, tokens0, (jnp.arange(max_len), ks))
            return tokens, draft_log_likelihood(self.scorer(tokens, plan), tokens)

        drafts, scores = jax.vmap(draft)(jax.random.split(k_draft, num_drafts))  # [N, B, T]
        best = jnp.argmax(scores, axis=0)  # [B]
        return jnp.take_along_axis(drafts, best[None, :, None], axis=0)[0], scores


def init_params(model: MultiMixtureTransformer, key: jax.Array, x: jax.Array) -> dict:
    """All parameters of `model` for inputs shaped like x [B, T, D] (one jitted init)."""
    k_param, k_noise = jax.random.split(key)
    init = jax.jit(lambda kp, kn, xx: model.init(kp, xx, kn, method=model.init_all))
    return init(k_param, k_noise, x)["params"]


def _top_p_sample(key: jax.Array, logits: jax.Array, top_p: float) -> jax.Array:
    """Nucleus sampling over the last axis: [B, V] -> int32 [B]."""
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    keep = jnp.cumsum(probs, axis=-1) - probs < top_p  # always keeps the top token
    choice = jax.random.categorical(key, jnp.where(keep, sorted_logits, -jnp.inf))
    return jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
