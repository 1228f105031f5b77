"""VAE blocks, the cosine DDPM schedule, TinyDiffusionBlock + sampler, sequence blocks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aura.nn import generative as gen
from aura.nn import sequence_blocks as sb


def test_cosine_schedule_matches_closed_form():
    sched = gen.cosine_schedule(100)
    t = np.arange(101) / 100
    f = np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(sched.alpha_bars, (f / f[0])[1:], rtol=2e-4, atol=1e-6)
    assert np.all(np.diff(sched.alpha_bars) < 0) and float(sched.alpha_bars[-1]) < 1e-3
    assert float(sched.betas.max()) <= 0.999 + 1e-6
    with pytest.raises(ValueError):
        gen.cosine_schedule(0)


def test_gaussian_kl_and_reparameterize():
    mu, logvar = jnp.array([[0.5, -1.0]]), jnp.array([[0.2, -0.3]])
    ref = 0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar)
    np.testing.assert_allclose(gen.gaussian_kl(mu, logvar), [ref], rtol=1e-6)
    z = gen.reparameterize(jax.random.key(0), jnp.zeros((20000, 2)), jnp.log(jnp.full((2,), 4.0)))
    np.testing.assert_allclose(jnp.std(z, 0), [2.0, 2.0], rtol=0.03)


def test_tiny_diffusion_learns_a_two_mode_distribution():
    sched = gen.cosine_schedule(40)
    model = gen.TinyDiffusionBlock(dim=1, hidden_dim=64, num_blocks=2)
    key = jax.random.key(0)
    data = jnp.where(jax.random.bernoulli(key, 0.5, (4096, 1)), 2.0, -2.0)
    data = data + 0.2 * jax.random.normal(jax.random.key(1), data.shape)
    params = model.init(key, data[:4], jnp.zeros(4, jnp.int32))["params"]
    opt = optax.adam(3e-3)

    @jax.jit
    def train(params, key):
        def step(carry, k):
            p, s = carry
            kb, kl = jax.random.split(k)
            batch = data[jax.random.randint(kb, (128,), 0, data.shape[0])]
            loss, g = jax.value_and_grad(
                lambda p: gen.diffusion_loss(
                    lambda xt, t: model.apply({"params": p}, xt, t), sched, batch, kl
                )
            )(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 800))
        return p, losses

    params, losses = train(params, jax.random.key(2))
    assert float(losses[-100:].mean()) < float(losses[:100].mean())
    eps_fn = lambda xt, t: model.apply({"params": params}, xt, t)
    samples = np.asarray(gen.ddpm_sample(eps_fn, sched, jax.random.key(3), (2000, 1)))[:, 0]
    near = np.minimum(np.abs(samples - 2), np.abs(samples + 2))
    assert np.mean(near < 0.6) > 0.85  # mass sits at the two modes ...
    assert 0.3 < np.mean(samples > 0) < 0.7  # ... and both are used
    # Refining a point already at a mode with few steps keeps it there.
    x0 = jnp.full((500, 1), 2.0)
    refined = gen.ddpm_sample(eps_fn, sched, jax.random.key(4), (500, 1), x_init=x0, start_step=5)
    assert abs(float(jnp.mean(refined)) - 2.0) < 0.3


def test_recurrent_network_outputs_log_probabilities():
    net = sb.RecurrentNetwork(hidden_dim=8, num_states=4)
    z = jax.random.normal(jax.random.key(0), (3, 7, 5))
    params = jax.jit(net.init)(jax.random.key(1), z)
    apply = jax.jit(net.apply)
    em, tr = apply(params, z)
    assert em.shape == (3, 7, 4) and tr.shape == (4, 4)
    np.testing.assert_allclose(jnp.exp(em).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(tr).sum(-1), 1.0, rtol=1e-5)
    # Causal: changing the last step does not change earlier emissions.
    em2, _ = apply(params, z.at[:, -1].set(9.0))
    np.testing.assert_allclose(em2[:, :-1], em[:, :-1], rtol=1e-6)


def test_transformer_decoder_is_causal():
    tst = sb.TimeSeriesTransformer(d_model=16, nhead=2, num_layers=1, output_dim=3)
    src, tgt = jnp.ones((2, 5, 4)), jax.random.normal(jax.random.key(0), (2, 6, 4))
    p = jax.jit(tst.init)(jax.random.key(1), src, tgt)
    apply = jax.jit(tst.apply)
    y = apply(p, src, tgt)
    assert y.shape == (2, 6, 3)
    y2 = apply(p, src, tgt.at[:, 4:].set(5.0))
    np.testing.assert_allclose(y2[:, :4], y[:, :4], atol=1e-5)
    assert not np.allclose(apply(p, src * 2, tgt), y)  # the source is attended


def test_draft_scorer_is_causal_and_scores_drafts():
    ds = sb.DraftScorer(vocab_size=7, dim=8, num_heads=2)
    tokens, plan = jnp.array([[1, 2, 3, 4]]), jnp.ones((1, 8))
    q = jax.jit(ds.init)(jax.random.key(2), tokens, plan)
    score = jax.jit(ds.apply)
    logits = score(q, tokens, plan)
    assert logits.shape == (1, 4, 7)
    # logits[:, t] depend only on tokens[:, :t]
    changed = score(q, tokens.at[:, 2:].set(6), plan)
    np.testing.assert_allclose(changed[:, :3], logits[:, :3], atol=1e-5)
    ll = sb.draft_log_likelihood(logits, tokens)
    ref = sum(float(jax.nn.log_softmax(logits[0, t])[tokens[0, t]]) for t in range(4))
    np.testing.assert_allclose(ll, [ref], rtol=1e-5)
