"""SelfTeachingAdapter: sequence form == prompt + recurrent steps; sampling; RoPE matters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.models.adapter import SelfTeachingAdapter, adapter_config
from aura.serve.sampling import Generator, sample_logits


def small(backend="srwkv", use_rope=True):
    c = adapter_config()
    c.update(vocab_size=64, dim=32, expert_hidden=64, num_layers=2, num_experts=2)
    c.update(lang_backend=backend, use_rope=use_rope, rope_max_len=128)
    return SelfTeachingAdapter(c)


@pytest.mark.parametrize("backend", ["srwkv", "lif"])
def test_prompt_then_recurrent_steps_equal_the_sequence_form(backend):
    model = small(backend)
    tokens = jax.random.randint(jax.random.key(0), (2, 10), 0, 64)
    params = model.init(jax.random.key(1), tokens)["params"]
    full, _, _ = model.apply({"params": params}, tokens)
    gen = Generator(model, params)
    logits, state = gen.ingest(tokens[:, :6])
    np.testing.assert_allclose(logits, full[:, 5], atol=1e-4)
    for t in range(6, 10):
        logits, state = gen.step(tokens[:, t], state)
        np.testing.assert_allclose(logits, full[:, t], atol=1e-4)


def test_rope_in_the_retrieval_inputs_changes_routing():
    tokens = jnp.full((1, 8), 5, jnp.int32)  # the same token at every position
    with_rope, without = small(use_rope=True), small(use_rope=False)
    params = with_rope.init(jax.random.key(1), tokens)["params"]
    g1 = with_rope.apply({"params": params}, tokens, method=SelfTeachingAdapter.gate_weights)
    g0 = without.apply({"params": params}, tokens, method=SelfTeachingAdapter.gate_weights)
    assert np.allclose(g0.probs, g0.probs[0])  # position-blind without RoPE
    assert not np.allclose(g1.probs, g1.probs[0])  # position-aware with it


def test_sampling_respects_top_k_top_p_and_greedy():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.key(0), 300)
    draw = lambda **kw: np.array([int(sample_logits(k, logits, 1.0, **kw)[0]) for k in keys])  # noqa: E731
    assert set(draw(top_k=2)) <= {0, 1}
    assert set(draw(top_p=0.7)) <= {0, 1}  # 0.5 + 0.3 covers 0.7
    assert set(draw()) == {0, 1, 2, 3}
    assert int(sample_logits(keys[0], logits, 0.0)[0]) == 0
