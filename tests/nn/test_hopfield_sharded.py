"""Tests for aura.nn.hopfield_sharded: the memory split over 8 devices equals one device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aura.nn.hopfield import HopfieldMemory, init_memory, retrieve, store
from aura.nn.hopfield_sharded import shard_memory, sharded_retrieve

HIGHEST = jax.lax.Precision.HIGHEST


def _mesh(shape=(8,), names=("data",)) -> Mesh:
    n = int(np.prod(shape))
    return Mesh(np.asarray(jax.devices()[:n], dtype=object).reshape(shape), names)


def _memory(capacity, dim, count, seed=0):
    x = jax.random.normal(jax.random.key(seed), (count, dim))
    return store(init_memory(capacity, dim), x)


def _assert_same(got, want):
    r, w, i, lg = got
    r0, w0, i0, lg0 = want
    np.testing.assert_array_equal(np.asarray(i), np.asarray(i0))
    np.testing.assert_allclose(np.asarray(lg), np.asarray(lg0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(w), np.asarray(w0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(r), np.asarray(r0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["topk", "full"])
@pytest.mark.parametrize(
    ("count", "top_k", "chunk"), [(64, 5, 3), (37, 10, 8), (20, 12, 4096), (5, 8, 2)]
)
def test_eight_devices_equal_one(mode, count, top_k, chunk):
    # 64 slots over 8 devices (8 each): partly filled shards, empty shards, top_k > slots/device.
    mem = _memory(64, 16, count)
    q = jax.random.normal(jax.random.key(1), (6, 16))
    kw = dict(beta=0.7, top_k=top_k, chunk_size=chunk, mode=mode, precision=HIGHEST)
    want = retrieve(mem, q, **kw)
    mesh = _mesh()
    got = jax.jit(functools.partial(sharded_retrieve, mesh=mesh, **kw))(shard_memory(mem, mesh), q)
    _assert_same(got, want)
    assert got[0].sharding.is_fully_replicated


def test_ties_go_to_the_lower_slot_like_one_device():
    # Every slot holds the same pattern: all logits tie; one device keeps slots 0..K-1.
    mem = store(init_memory(32, 4), jnp.ones((30, 4)))
    q = jnp.ones((2, 4))
    want = retrieve(mem, q, beta=1.0, top_k=6)
    with jax.set_mesh(_mesh()):
        got = jax.jit(functools.partial(sharded_retrieve, beta=1.0, top_k=6))(mem, q)
    _assert_same(got, want)
    assert np.asarray(got[2])[0].tolist() == [0, 1, 2, 3, 4, 5]


def test_two_mesh_axes_and_context_mesh():
    mem = _memory(48, 8, 45, seed=2)
    q = jax.random.normal(jax.random.key(3), (3, 8))
    mesh = _mesh((2, 4), ("data", "expert"))
    for mode in ("topk", "full"):
        kw = dict(beta=1.3, top_k=4, chunk_size=5, mode=mode, precision=HIGHEST)
        with jax.set_mesh(mesh):
            got = jax.jit(functools.partial(sharded_retrieve, **kw))(shard_memory(mem, mesh), q)
        _assert_same(got, retrieve(mem, q, **kw))
    # Only the expert axis splits the memory (replicated over data).
    kw = dict(beta=1.3, top_k=4, chunk_size=5, precision=HIGHEST)
    with jax.set_mesh(mesh):
        got = sharded_retrieve(shard_memory(mem, mesh, "expert"), q, axes="expert", **kw)
    _assert_same(got, retrieve(mem, q, **kw))


def test_no_mesh_is_plain_retrieve_and_bad_capacity_raises():
    mem = _memory(30, 8, 30)
    q = jnp.ones((2, 8))
    _assert_same(sharded_retrieve(mem, q, beta=1.0, top_k=3), retrieve(mem, q, beta=1.0, top_k=3))
    with pytest.raises(ValueError, match=r"capacity 30 must be a multiple of the 8 devices"):
        sharded_retrieve(mem, q, beta=1.0, top_k=3, mesh=_mesh())
    with pytest.raises(ValueError, match=r"capacity 30 must be a multiple"):
        shard_memory(mem, _mesh())
    with pytest.raises(ValueError, match=r"memory axes \['model'\] are not mesh axes"):
        sharded_retrieve(_memory(32, 8, 3), q, beta=1.0, top_k=3, mesh=_mesh(), axes="model")


def _shapes(jaxpr) -> list[tuple[int, ...]]:
    out = []
    for eqn in jaxpr.eqns:
        out += [tuple(v.aval.shape) for v in eqn.outvars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    out += _shapes(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    out += _shapes(sub)
    return out


@pytest.mark.parametrize("devices", [1, 8])
def test_one_million_patterns_without_a_batch_by_memory_tensor(devices):
    # 1M x 384 f32 (1.5 GB) is only described, never allocated: shapes and XLA's memory plan.
    m, d, b, chunk = 1_000_000, 384, 16, 4096
    mesh = _mesh((devices,), ("data",))
    pat = jax.ShapeDtypeStruct((m, d), jnp.float32, sharding=NamedSharding(mesh, P("data", None)))
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P()))
    q = jax.ShapeDtypeStruct((b, d), jnp.float32, sharding=NamedSharding(mesh, P()))
    fn = functools.partial(sharded_retrieve, beta=20.0, top_k=10, chunk_size=chunk, mesh=mesh)
    mem = HopfieldMemory(pat, scalar, scalar)
    shapes = _shapes(jax.make_jaxpr(fn)(mem, q).jaxpr)
    local = m // devices
    # No intermediate has a memory-sized axis besides the (local) pattern buffer itself.
    big = [s for s in shapes if (m in s or local in s) and s != (local, d) and s != (m, d)]
    assert not big, big
    assert max(int(np.prod(s)) for s in shapes if s not in ((local, d), (m, d))) <= chunk * d
    stats = jax.jit(fn).lower(mem, q).compile().memory_analysis()
    if stats is not None:  # per device: far below one [B, N, D] (24.6 GB) or even [B, N] tensor
        assert stats.temp_size_in_bytes < b * m * 4 // 4, stats.temp_size_in_bytes


@pytest.mark.parametrize("mode", ["topk", "full"])
def test_gradients_through_the_sharded_memory_equal_one_device(mode):
    # The router is trained through retrieval: d(loss)/d(queries) must not change with sharding.
    mem = _memory(64, 16, 50, seed=4)
    q = jax.random.normal(jax.random.key(5), (4, 16))

    def loss(q, fn, **kw):
        r, w, _, lg = fn(mem, q, beta=0.5, top_k=5, chunk_size=7, mode=mode, **kw)
        return jnp.sum(r**2) + jnp.sum(lg[:, 0]) - jnp.sum(jnp.log(w[:, 0]))

    want = jax.grad(loss)(q, retrieve, precision=HIGHEST)
    fn = functools.partial(sharded_retrieve, mesh=_mesh(), precision=HIGHEST)
    got = jax.jit(jax.grad(functools.partial(loss, fn=fn)))(q)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
