"""Tests for aura.nn.hopfield: chunked retrieval against a naive reference, storage rules."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.hopfield import HopfieldMemory, ModernHopfield, init_memory, retrieve, store

HIGHEST = jax.lax.Precision.HIGHEST


def _memory(key, capacity, dim, count, dtype=jnp.float32):
    patterns = jax.random.normal(key, (count, dim), jnp.float32)
    return store(init_memory(capacity, dim, dtype), patterns)


def _naive_logits(mem, queries, beta):
    """Full [B, M] logits with slots >= count masked."""
    p = mem.patterns.astype(jnp.float32)
    logits = beta * jnp.matmul(queries.astype(jnp.float32), p.T, precision=HIGHEST)  # [B, M]
    valid = jnp.arange(p.shape[0]) < mem.count
    return jnp.where(valid[None, :], logits, -jnp.inf)


def _naive_topk(mem, queries, beta, k):
    logits = _naive_logits(mem, queries, beta)
    vals, idx = jax.lax.top_k(logits, k)  # [B, K]
    weights = jax.nn.softmax(vals, axis=-1)
    gathered = mem.patterns.astype(jnp.float32)[idx]  # [B, K, D]
    retrieved = jnp.einsum("bk,bkd->bd", weights, gathered, precision=HIGHEST)
    return retrieved, weights, idx, vals


def _naive_full(mem, queries, beta, k):
    logits = _naive_logits(mem, queries, beta)
    probs = jax.nn.softmax(logits, axis=-1)  # [B, M]
    retrieved = jnp.matmul(probs, mem.patterns.astype(jnp.float32), precision=HIGHEST)
    weights, idx = jax.lax.top_k(probs, k)
    return retrieved, weights, idx, jnp.take_along_axis(logits, idx, axis=1)


def _assert_same(got, want, atol=1e-5):
    r, w, i, lg = got
    r0, w0, i0, lg0 = want
    np.testing.assert_array_equal(np.asarray(i), np.asarray(i0))
    np.testing.assert_allclose(np.asarray(lg), np.asarray(lg0), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(np.asarray(w), np.asarray(w0), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(np.asarray(r), np.asarray(r0), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("count", [83, 100])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 30, 100, 4096])
def test_topk_matches_naive(chunk_size, count):
    mem = _memory(jax.random.key(0), 100, 32, count)
    q = jax.random.normal(jax.random.key(1), (6, 32))
    got = retrieve(mem, q, beta=0.4, top_k=5, chunk_size=chunk_size, precision=HIGHEST)
    _assert_same(got, _naive_topk(mem, q, 0.4, 5))
    assert got[2].dtype == jnp.int32
    np.testing.assert_allclose(np.asarray(got[1]).sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("count", [83, 100])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 30, 100, 4096])
def test_full_mode_matches_naive(chunk_size, count):
    mem = _memory(jax.random.key(2), 100, 32, count)
    q = jax.random.normal(jax.random.key(3), (6, 32))
    got = retrieve(mem, q, beta=0.4, top_k=5, chunk_size=chunk_size, mode="full", precision=HIGHEST)
    _assert_same(got, _naive_full(mem, q, 0.4, 5))


def test_top1_recall_noisy_unit_patterns():
    m, d, b = 10_000, 384, 2000
    x = jax.random.normal(jax.random.key(4), (m, d))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    mem = store(init_memory(m, d), x)
    target = jax.random.randint(jax.random.key(5), (b,), 0, m)
    q = x[target] + 0.1 * jax.random.normal(jax.random.key(6), (b, d))
    retrieved, _, idx, _ = jax.jit(functools.partial(retrieve, beta=16.0, top_k=1))(mem, q)
    recall = float(jnp.mean(idx[:, 0] == target))
    assert recall >= 0.999, recall
    # With top_k=1 the read-out is the stored pattern itself.
    np.testing.assert_allclose(np.asarray(retrieved), np.asarray(x[idx[:, 0]]), atol=1e-6)


@pytest.mark.parametrize("mode", ["topk", "full"])
def test_slots_past_count_never_returned(mode):
    # Unfilled slots hold patterns aligned with the query and huge: only the mask keeps them out.
    capacity, d = 32, 8
    q = jnp.ones((2, d))
    garbage = jnp.full((capacity, d), 100.0)
    stored = jax.random.normal(jax.random.key(7), (3, d))
    mem = HopfieldMemory(garbage.at[:3].set(stored), jnp.int32(3), jnp.int32(0))
    r, w, idx, lg = retrieve(mem, q, beta=1.0, top_k=8, chunk_size=5, mode=mode)
    idx = np.asarray(idx)
    assert set(idx[:, :3].ravel()) <= {0, 1, 2}
    assert (idx[:, 3:] == -1).all()
    assert (np.asarray(w)[:, 3:] == 0).all() and np.isneginf(np.asarray(lg)[:, 3:]).all()
    np.testing.assert_allclose(np.asarray(w).sum(axis=1), 1.0, rtol=1e-6)
    assert float(jnp.max(jnp.abs(r))) < 100.0


@pytest.mark.parametrize("mode", ["topk", "full"])
def test_empty_memory_retrieves_zeros(mode):
    mem = init_memory(16, 4)
    r, w, idx, lg = retrieve(mem, jnp.ones((3, 4)), beta=1.0, top_k=2, chunk_size=5, mode=mode)
    assert not np.isnan(np.asarray(r)).any() and not np.asarray(r).any()
    assert not np.asarray(w).any() and (np.asarray(idx) == -1).all()
    assert np.isneginf(np.asarray(lg)).all()


def test_store_appends_and_accepts_single_pattern():
    mem = init_memory(6, 3)
    a = jnp.arange(6.0).reshape(2, 3)
    mem = store(store(mem, a), jnp.array([9.0, 9.0, 9.0]))
    assert int(mem.count) == 3 and int(mem.dropped) == 0
    np.testing.assert_array_equal(np.asarray(mem.patterns[:3]), [[0, 1, 2], [3, 4, 5], [9, 9, 9]])
    assert not np.asarray(mem.patterns[3:]).any()


def test_store_past_capacity_raises_eagerly():
    mem = store(init_memory(4, 3), jnp.ones((3, 3)))
    with pytest.raises(ValueError, match=r"storing 2 patterns at count=3 exceeds capacity=4"):
        store(mem, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"capacity=4"):
        store(init_memory(4, 3), jnp.ones((5, 3)))


def test_store_under_jit_drops_overflow_without_overwriting():
    old = jax.random.normal(jax.random.key(8), (5, 4))
    new = jax.random.normal(jax.random.key(9), (5, 4)) + 10.0
    mem = store(init_memory(8, 4), old)
    jstore = jax.jit(store)
    mem = jstore(mem, new)
    assert int(mem.count) == 8 and int(mem.dropped) == 2
    np.testing.assert_array_equal(np.asarray(mem.patterns[:5]), np.asarray(old))
    np.testing.assert_array_equal(np.asarray(mem.patterns[5:]), np.asarray(new[:3]))
    full = jstore(mem, new[:1])
    assert int(full.count) == 8 and int(full.dropped) == 3
    np.testing.assert_array_equal(np.asarray(full.patterns), np.asarray(mem.patterns))


def test_bad_configuration_raises_informative_errors():
    mem = store(init_memory(10, 4), jnp.ones((2, 4)))
    q = jnp.ones((1, 4))
    with pytest.raises(ValueError, match=r"pattern width 5 != memory dim 4"):
        store(mem, jnp.ones((1, 5)))
    with pytest.raises(ValueError, match=r"query width 3 != memory dim 4"):
        retrieve(mem, jnp.ones((1, 3)), beta=1.0, top_k=1)
    with pytest.raises(ValueError, match=r"top_k=0 must be in \[1, capacity=10\]"):
        retrieve(mem, q, beta=1.0, top_k=0)
    with pytest.raises(ValueError, match=r"top_k=11 must be in \[1, capacity=10\]"):
        retrieve(mem, q, beta=1.0, top_k=11)
    for beta in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match=r"beta=.* must be finite and > 0"):
            retrieve(mem, q, beta=beta, top_k=1)
    with pytest.raises(ValueError, match=r"chunk_size=0 must be >= 1"):
        retrieve(mem, q, beta=1.0, top_k=1, chunk_size=0)
    with pytest.raises(ValueError, match=r"mode='soft' must be one of"):
        retrieve(mem, q, beta=1.0, top_k=1, mode="soft")
    with pytest.raises(ValueError, match=r"capacity=0 must be >= 1"):
        init_memory(0, 4)


def test_jit_matches_eager():
    mem = _memory(jax.random.key(10), 50, 16, 37)
    q = jax.random.normal(jax.random.key(11), (4, 16))
    for mode in ("topk", "full"):
        fn = functools.partial(retrieve, beta=0.5, top_k=3, chunk_size=8, mode=mode)
        for a, b in zip(jax.jit(fn)(mem, q), fn(mem, q), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mem_dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("mode", ["topk", "full"])
def test_bf16_queries(mem_dtype, mode):
    mem = _memory(jax.random.key(12), 64, 32, 50, dtype=mem_dtype)
    q = jax.random.normal(jax.random.key(13), (4, 32)).astype(jnp.bfloat16)
    r, w, idx, lg = retrieve(mem, q, beta=0.3, top_k=4, chunk_size=24, mode=mode)
    assert lg.dtype == jnp.float32 and w.dtype == jnp.float32
    assert r.dtype == jnp.result_type(jnp.bfloat16, mem_dtype)
    # Reference in f32 on the same (bf16-rounded) values: logits are accumulated in f32.
    naive = _naive_topk if mode == "topk" else _naive_full
    r0, w0, i0, lg0 = naive(mem, q.astype(jnp.float32), 0.3, 4)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(i0))
    np.testing.assert_allclose(np.asarray(lg), np.asarray(lg0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w), np.asarray(w0), rtol=1e-5, atol=1e-5)
    # bf16 output keeps 8 mantissa bits: compare at bf16 resolution.
    np.testing.assert_allclose(np.asarray(r, np.float32), np.asarray(r0), rtol=2**-7, atol=2**-7)


def test_linen_wrapper_uses_memory_collection():
    hop = ModernHopfield(capacity=20, dim=8, beta=2.0, top_k=3, chunk_size=6)
    variables = hop.init(jax.random.key(0), jnp.zeros((1, 8)))
    assert set(variables) == {"memory"}
    assert set(variables["memory"]) == {"patterns", "count", "dropped"}
    keys = jax.random.normal(jax.random.key(14), (7, 8))
    _, variables = hop.apply(variables, keys, method=ModernHopfield.store, mutable=["memory"])
    assert set(variables) == {"memory"} and int(variables["memory"]["count"]) == 7
    q = keys[:2] + 0.01
    got = jax.jit(hop.apply)(variables, q)
    mem = store(init_memory(20, 8), keys)
    want = retrieve(mem, q, beta=2.0, top_k=3, chunk_size=6)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert (np.asarray(got[2])[:, 0] == [0, 1]).all()
    with pytest.raises(ValueError, match="capacity=20"):
        hop.apply(variables, jnp.ones((14, 8)), method=ModernHopfield.store, mutable=["memory"])


def _intermediate_shapes(jaxpr) -> list[tuple[int, ...]]:
    """Shapes of every array produced by an equation, looking inside scan/jit bodies."""
    shapes = []
    for eqn in jaxpr.eqns:
        shapes += [tuple(v.aval.shape) for v in eqn.outvars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    shapes += _intermediate_shapes(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    shapes += _intermediate_shapes(sub)
    return shapes


@pytest.mark.parametrize("mode", ["topk", "full"])
def test_chunked_path_never_builds_batch_by_memory_arrays(mode):
    m, d, b, chunk = 100_000, 384, 4, 4096
    x = jax.random.normal(jax.random.key(15), (m, d))
    mem = HopfieldMemory(x, jnp.int32(m), jnp.int32(0))
    target = jnp.array([3, 50_000, 77_777, 99_999])
    q = x[target] * 0.2  # [B, D]
    fn = functools.partial(retrieve, beta=1.0, top_k=4, chunk_size=chunk, mode=mode)
    # No intermediate spans the memory axis (no [B, M], let alone [B, M, D]); the biggest is
    # one [chunk, D] block.
    shapes = _intermediate_shapes(jax.make_jaxpr(fn)(mem, q).jaxpr)
    assert not [s for s in shapes if m in s], [s for s in shapes if m in s]
    assert max(int(np.prod(s)) for s in shapes) <= chunk * d
    # The walker does see the [B, M] logits of the naive reference.
    naive = functools.partial(_naive_topk, beta=1.0, k=4)
    assert (b, m) in _intermediate_shapes(jax.make_jaxpr(naive)(mem, q).jaxpr)
    compiled = jax.jit(fn).lower(mem, q).compile()
    stats = compiled.memory_analysis()
    if stats is not None:
        assert stats.temp_size_in_bytes < b * m * d * 4 // 20, stats.temp_size_in_bytes
    _, _, idx, _ = compiled(mem, q)
    np.testing.assert_array_equal(np.asarray(idx[:, 0]), np.asarray(target))
