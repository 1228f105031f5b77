"""Tests for aura.nn.language: SpikingLanguageCore, "lif" and "srwkv" backends."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.language import LANG_BACKENDS, LIFCoreState, SpikingLanguageCore
from aura.nn.srwkv import SRWKVState

B, T, D, S, MAX_LEN = 2, 24, 16, 3, 64
BACKENDS = ["lif", "srwkv"]


def _core(backend, **kw):
    kw = {
        "lang_backend": backend,
        "num_layers": 2,
        "dim": D,
        "internal_steps": S,
        "rope_max_len": MAX_LEN,
        "lif_threshold": 0.3,
        "ffn_mult": 2,
        **kw,
    }
    return SpikingLanguageCore(**kw)


def _x(seed=0, t=T):
    return jax.random.normal(jax.random.PRNGKey(seed), (B, t, D), jnp.float32)


@functools.cache
def _setup(backend, use_rope=True):
    core = _core(backend, use_rope=use_rope)
    params = core.init(jax.random.PRNGKey(1), _x())
    seq = jax.jit(lambda p, x, s: core.apply(p, x, s))
    step = jax.jit(lambda p, x, s: core.apply(p, x, s, method="step"))
    return core, params, seq, step


def _steps(step, params, x, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = step(params, x[:, t], state)
        ys.append(y)
    return jnp.stack(ys, 1), state  # -> [B, T, D]


def _close(a, b, tol=1e-4):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequence_equals_recurrent(backend):
    core, params, seq, step = _setup(backend)
    x = _x(2)
    y_seq, st_seq = seq(params, x, core.init_state(B))
    y_rec, st_rec = _steps(step, params, x, core.init_state(B))
    assert y_seq.shape == (B, T, D) and y_rec.shape == (B, T, D)
    np.testing.assert_allclose(y_rec, y_seq, rtol=1e-4, atol=1e-4)
    _close(st_rec, st_seq)
    np.testing.assert_array_equal(st_seq.position, [T, T])
    kind = LIFCoreState if backend == "lif" else SRWKVState
    assert isinstance(st_seq.core, kind)
    assert all(leaf.shape == (2, B, D) for leaf in st_seq.core)
    # The comparison is only meaningful if the neurons actually fired.
    _, inter = core.apply(params, x, capture_intermediates=True, mutable=["intermediates"])
    inter = inter["intermediates"]
    lif = inter["layers_0"]["lif"] if backend == "lif" else inter["core"]["blocks_0"]["lif_att"]
    rate = float(jnp.mean(lif["__call__"][0][0]))
    assert 0.01 < rate < 0.99, rate


@pytest.mark.parametrize("backend", BACKENDS)
def test_prompt_then_generation_equals_sequence(backend):
    core, params, seq, step = _setup(backend)
    x = _x(3)
    y_full, st_full = seq(params, x, core.init_state(B))
    y_a, st = seq(params, x[:, :10], core.init_state(B))
    y_b, st = _steps(step, params, x[:, 10:], st)
    np.testing.assert_allclose(jnp.concatenate([y_a, y_b], 1), y_full, rtol=1e-4, atol=1e-4)
    _close(st, st_full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_explicit_step_position_is_used(backend):
    core, params, _, _ = _setup(backend)
    x = _x(4, t=1)[:, 0]
    state = core.init_state(B)
    y_state, st = core.apply(params, x, state._replace(position=jnp.full((B,), 5)), method="step")
    y_pos, st_pos = core.apply(params, x, state, 5, method="step")
    np.testing.assert_allclose(y_pos, y_state, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(st_pos.position, [6, 6])
    y_zero, _ = core.apply(params, x, state, 0, method="step")
    assert float(jnp.abs(y_zero - y_pos).max()) > 1e-3  # RoPE makes the position matter


@pytest.mark.parametrize("backend", BACKENDS)
def test_rope_on_off_changes_output(backend):
    core, params, seq, _ = _setup(backend, True)
    off, params_off, seq_off, _ = _setup(backend, False)
    # RoPE has no parameters: the same weights serve both cores.
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(params_off)
    x = _x(5)
    y_on, _ = seq(params, x, core.init_state(B))
    y_off, _ = seq_off(params, x, off.init_state(B))
    assert float(jnp.abs(y_on - y_off).max()) > 1e-2
    # srwkv rotates its input by the token position, the identity at position 0, so its first
    # output is unchanged (the lif core also rotates the internal steps s > 0 of token 0).
    if backend == "srwkv":
        np.testing.assert_allclose(y_on[:, 0], y_off[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_nonzero_and_finite(backend):
    core, params, _, _ = _setup(backend)
    x = _x(6)
    target = jax.random.normal(jax.random.PRNGKey(7), (B, T, D))

    def loss(p, inp):
        y, _ = core.apply(p, inp)
        return jnp.mean((y - target) ** 2)

    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    leaves = jax.tree_util.tree_leaves(gp)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert float(jnp.abs(gx).max()) > 0
    if backend == "lif":  # the drive reaches the output only through the spikes
        for i in range(2):
            layer = gp["params"][f"layers_{i}"]
            for name in ("drive", "gate", "readout"):
                assert float(jnp.abs(layer[name]["kernel"]).max()) > 0, (i, name)
            assert float(jnp.abs(layer["lam_logit"]).max()) > 0
    else:
        att = gp["params"]["core"]["blocks_0"]["att"]
        assert float(jnp.abs(att["key"]["kernel"]).max()) > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_matches_eager_and_bf16_finite(backend):
    core, params, seq, _ = _setup(backend)
    x = _x(8, t=6)
    y_e, _ = core.apply(params, x)
    y_j, _ = seq(params, x, core.init_state(B))
    np.testing.assert_allclose(y_j, y_e, rtol=1e-5, atol=1e-5)
    half = _core(backend, dtype=jnp.bfloat16)
    y_h, st = jax.jit(half.apply)(params, x.astype(jnp.bfloat16))
    assert y_h.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(y_h, np.float32)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_positions_beyond_rope_max_len_raise(backend):
    core, params, _, _ = _setup(backend)
    with pytest.raises(ValueError, match=f"{MAX_LEN} is beyond rope_max_len = {MAX_LEN}"):
        core.apply(params, _x(t=MAX_LEN + 1))
    state = core.init_state(B)._replace(position=jnp.full((B,), MAX_LEN - 4))
    with pytest.raises(ValueError, match=f"{MAX_LEN + 1} is beyond rope_max_len"):
        core.apply(params, _x(t=6), state)
    x1 = _x(t=1)[:, 0]
    with pytest.raises(ValueError, match=f"{MAX_LEN} is beyond rope_max_len = {MAX_LEN}"):
        core.apply(params, x1, core.init_state(B), MAX_LEN, method="step")
    core.apply(params, x1, core.init_state(B), MAX_LEN - 1, method="step")  # the last valid one
    # Under jit a traced position cannot raise: the output becomes NaN instead.
    _, _, _, step = _setup(backend)
    y, _ = step(params, x1, core.init_state(B)._replace(position=jnp.full((B,), MAX_LEN)))
    assert np.all(np.isnan(y))
    # Without RoPE there is no limit.
    off, params_off, _, _ = _setup(backend, False)
    y, _ = off.apply(params_off, x1, off.init_state(B), 10 * MAX_LEN, method="step")
    assert np.all(np.isfinite(y))


def test_unknown_backend_and_bad_config_raise():
    with pytest.raises(ValueError, match=", ".join(LANG_BACKENDS)):
        _core("transformer")
    with pytest.raises(ValueError, match="even"):
        _core("lif", dim=15)
    _core("lif", dim=15, use_rope=False)  # odd widths are fine without RoPE
    with pytest.raises(ValueError, match="internal_steps"):
        _core("lif", internal_steps=0)
    with pytest.raises(ValueError, match="rope_base"):
        _core("srwkv", rope_base=0.5)
    with pytest.raises(ValueError, match="lif_beta"):
        _core("lif", lif_beta=1.5)
    core, params, _, _ = _setup("lif")
    with pytest.raises(ValueError, match="D = 16"):
        core.apply(params, jnp.zeros((B, T, D + 2)))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        core.apply(params, jnp.zeros((B, T, D)), core.init_state(B), method="step")
