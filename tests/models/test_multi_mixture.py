"""MultiMixtureTransformer: the latent HMM agrees with the EM library, training lowers the
loss, the heads have the documented shapes, the gate rules do what they say."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aura.mixtures.hmm import HiddenMarkov
from aura.models import multi_mixture as mmt
from aura.nn import hmm as hmm_ops

CFG = dict(input_dim=5, hidden_dim=16, z_dim=4, rnn_hidden=8, num_states=3, n_mix=2,
           trans_d_model=8, trans_nhead=2, trans_layers=1, output_dim=5, max_len=32)  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    model = mmt.MultiMixtureTransformer(**CFG)
    x = jax.random.normal(jax.random.key(0), (6, 10, 5))
    x = x + jnp.where(jnp.arange(10)[None, :, None] < 5, 0.0, 2.0)  # two phases in time
    return model, x, mmt.init_params(model, jax.random.key(1), x)


def test_latent_hmm_likelihood_equals_the_em_library(setup):
    model, x, params = setup
    z = jax.random.normal(jax.random.key(2), (4, 10, CFG["z_dim"]))
    lengths = jnp.array([10, 7, 3, 10])
    mask = hmm_ops.lengths_mask(lengths, 10)

    def ll_fn(mdl, z, mask):
        return hmm_ops.forward(*mdl.hmm_terms(z, mask), mask)[1]

    ll = jax.jit(lambda p: model.apply({"params": p}, z, mask, method=ll_fn))(params)
    log_a = jax.jit(lambda p: model.apply({"params": p}, z, method=lambda m, z: m.rn(z)[1]))(params)
    hm = HiddenMarkov(3, 2)
    hm.params = {
        "startprob": np.asarray(jax.nn.softmax(params["pi_logits"])),
        "transmat": np.asarray(jnp.exp(log_a)),
        "weights": np.asarray(jax.nn.softmax(params["weight_logits"])),
        "means": np.asarray(params["hmm_means"]),
        "covariances": np.asarray(jnp.exp(params["hmm_log_vars"])),
    }
    np.testing.assert_allclose(ll, hm.score_sequences(np.asarray(z), np.asarray(lengths)),
                               rtol=1e-4)  # fmt: skip


def test_training_lowers_the_loss_and_heads_have_shapes(setup):
    model, x, params = setup
    opt = optax.adam(1e-2)
    rules = (mmt.Rule("budget", "pred", "mean", target=0.2, reward=5.0),)

    @jax.jit
    def run(params):
        def step(carry, i):
            p, s = carry

            def loss_fn(p):
                kl = mmt.kl_anneal(i, 20)
                total, _ = model.apply({"params": p}, x, jax.random.key(i), None, kl,
                                       method=model.loss)  # fmt: skip
                return total + mmt.rules_loss(p, rules)

            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(60))
        return p, losses

    trained, losses = run(params)
    assert float(losses[-10:].mean()) < float(losses[:10].mean())
    gate = float(jax.nn.sigmoid(trained["pred_weights"]).mean())
    assert abs(gate - 0.2) < abs(float(jax.nn.sigmoid(params["pred_weights"]).mean()) - 0.2)
    heads = jax.jit(
        lambda p: (
            model.apply({"params": p}, x, method=model.predict),
            model.apply({"params": p}, x, method=model.recognize),
            model.apply({"params": p}, jax.random.key(3), 7, 2, method=model.generate),
            model.apply({"params": p}, x, method=model.elbo),
        )
    )
    pred, rec, gen, elbo = heads(trained)
    assert pred.shape == (6, 5) and gen.shape == (2, 7, 5) and elbo.shape == (6,)
    assert rec["states"].shape == (6, 10) and rec["embedding"].shape == (6, 4)
    assert rec["state_log_probs"].shape == (6, 10, 3)
    assert np.isfinite(np.asarray(elbo)).all()


def test_rules_mean_matches_disjoint_and_validation():
    z = 6
    params = {f"{g}_weights": jnp.zeros(z) for g in mmt.GATES}  # sigmoid gates all 0.5
    assert float(mmt.rules_loss(params, (mmt.Rule("m", "pred", "mean", 0.5),))) == 0.0
    match = mmt.Rule("same", "pred", "match", other="gen", reward=2.0)
    assert float(mmt.rules_loss(params, (match,))) == 0.0
    disjoint = (mmt.Rule("split", "recog", "disjoint", other="gen", reward=1.0),)
    before = float(mmt.rules_loss(params, disjoint))
    assert before == pytest.approx(0.25)
    grads = jax.grad(lambda p: mmt.rules_loss(p, disjoint))(params)
    after = float(mmt.rules_loss(jax.tree.map(lambda p, g: p - 5.0 * g, params, grads), disjoint))
    assert after < before
    book = mmt.add_rule(mmt.add_rule((), match), disjoint[0])
    book = mmt.add_rule(book, mmt.Rule("same", "pred", "match", other="reg", reward=1.0))
    assert [r.name for r in book] == ["split", "same"] and mmt.check_rule(
        book, "same"
    ).other == "reg"
    assert mmt.check_rule(mmt.remove_rule(book, "same"), "same") is None
    with pytest.raises(ValueError, match="labels must be in"):
        mmt.Rule("x", "foo")
    with pytest.raises(ValueError, match="needs another label"):
        mmt.Rule("x", "pred", "disjoint")
    with pytest.raises(ValueError, match="reward >= 0"):
        mmt.Rule("x", "pred", "mean", target=1.5)
    np.testing.assert_allclose(
        [float(mmt.kl_anneal(s, 10, k)) for k in ("linear", "cosine", "step") for s in (0, 5, 10)],
        [0.0, 0.5, 1.0, 0.0, 0.5, 1.0, 0.0, 0.5, 1.0], atol=1e-6,
    )  # fmt: skip


@pytest.mark.slow
def test_regression_drafts_and_loss():
    model = mmt.MultiMixtureTransformer(**CFG, vocab_size=11, diffusion_steps=20, refine_steps=4)
    x = jax.random.normal(jax.random.key(0), (3, 6, 5))
    params = mmt.init_params(model, jax.random.key(1), x)
    best, scores = jax.jit(
        lambda p: model.apply({"params": p}, x, jax.random.key(2), 5, 3, method=model.regression)
    )(params)
    assert best.shape == (3, 5) and scores.shape == (3, 3)
    assert ((best >= 0) & (best < 11)).all()
    loss = model.apply({"params": params}, x, jnp.ones((3, 5), jnp.int32), jax.random.key(3),
                       method=model.regression_loss)  # fmt: skip
    assert np.isfinite(float(loss))
