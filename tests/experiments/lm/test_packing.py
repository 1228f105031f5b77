"""Packed rows: every record's loss and gradient equal the record's alone (f32, tight).

Three records share one packed row (`aura.data.stream.pack_rows`, first fit) and are compared
with the same records one per row: per-record next-token losses, per-record gradients of every
parameter, for each WKV form (scan, associative scan, chunked with a chunk that straddles the
record boundaries) and the LIF backend; and the packed logits against the generation path
(`SelfTeachingAdapter.step` token by token from an empty state). The WKV forms and the LIF
membrane reset are also checked on their own, fast, in tests/nn/test_packed_resets.py.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from aura.data.instruct import Encoded
from aura.data.stream import pack_rows
from aura.models.adapter import SelfTeachingAdapter, adapter_config

WIDTH = 48
LENGTHS = (11, 17, 14)  # 42 real tokens, 6 pads in the packed row


def model_for(**over) -> SelfTeachingAdapter:
    c = adapter_config()
    c.update(vocab_size=64, dim=16, expert_hidden=32, num_layers=2, num_experts=2,
             rope_max_len=64, capacity_factor=2.0, **over)  # fmt: skip
    return SelfTeachingAdapter(ml_collections.ConfigDict(c.to_dict()))


def records():
    rng = np.random.default_rng(0)
    out = []
    for n in LENGTHS:
        mask = np.zeros(n, np.float32)
        mask[n // 2 :] = 1.0  # the response: the second half
        out.append(Encoded(rng.integers(1, 64, n).astype(np.int32), mask, n, False))
    return out


def per_record_losses(model, params, rows, owner):
    """CE sums per record [R] from rows {ids, mask, positions} and owner [N, W] (record index
    of each target token, -1: none)."""
    logits, _, _ = model.apply({"params": params}, rows["ids"], positions=rows["positions"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], rows["ids"][:, 1:])
    w = rows["mask"][:, 1:] * (owner[:, 1:] >= 0)
    onehot = jax.nn.one_hot(owner[:, 1:], len(LENGTHS))  # [N, W-1] -> [N, W-1, R]
    return jnp.einsum("nt,ntr->r", ce * w, onehot)  # [R]


def owners(rows):
    return np.where(rows["segments"] > 0, rows["segments"] - 1, -1)


@pytest.fixture(scope="module")
def data():
    enc = records()
    packed = pack_rows(enc, WIDTH)
    single = pack_rows(enc, WIDTH, pack=False)
    assert packed["ids"].shape == (1, WIDTH) and single["ids"].shape == (3, WIDTH)
    # one per row: the owner of row i is record i
    single_owner = np.where(single["segments"] > 0, np.arange(3)[:, None], -1)
    return enc, packed, owners(packed), single, single_owner


slow = pytest.mark.slow  # 30-110 s each on the shared 2 cores (compiling the gradient)
IMPLS = [
    pytest.param(dict(wkv_impl="scan"), id="scan", marks=slow),  # nn: test_packed_resets.py
    pytest.param(dict(wkv_impl="assoc"), id="assoc", marks=slow),
    pytest.param(dict(wkv_impl="chunked", wkv_chunk=8), id="chunked", marks=slow),
    pytest.param(dict(lang_backend="lif"), id="lif", marks=slow),
]


@pytest.mark.parametrize("over", IMPLS)
def test_packed_records_have_their_own_losses_and_gradients(data, over):
    _, packed, p_owner, single, s_owner = data
    # In float64: f32 sums in another order (1 packed row vs 3 rows) came within 1.3x of the
    # bound below on the LIF backend; a leak between records is O(1) of a leaf's scale anyway.
    with jax.enable_x64(True):
        model = model_for(dtype="float64", **over)
        params = model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"]
        params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
        coef = jnp.asarray([0.7, -1.3, 2.1])  # a random mix: a leak between records changes it

        def objective(p, rows, owner):
            losses = per_record_losses(model, p, rows, owner)  # [R]
            return jnp.sum(coef * losses), losses

        fn = jax.jit(jax.value_and_grad(objective, has_aux=True))
        (_, lp), gp = fn(params, packed, p_owner)
        (_, ls), gs = fn(params, single, s_owner)
    np.testing.assert_allclose(lp, ls, rtol=1e-6)
    # A gradient leaf sums over the tokens: packed (1 row) and alone (3 rows) sum in another
    # order, so the bound is relative to the leaf's scale (a leak is O(1) of it).
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(gp), jax.tree.leaves(gs), strict=True
    ):
        scale = float(np.abs(b).max()) + 1e-12
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale, err_msg=str(path))


@pytest.mark.parametrize("over", [dict(), dict(lang_backend="lif")], ids=["srwkv", "lif"])
def test_packed_logits_equal_the_generation_path(data, over):
    enc, packed, _, _, _ = data
    model = model_for(**over)
    params = model.init(jax.random.key(2), jnp.zeros((1, 8), jnp.int32))["params"]
    logits, _, _ = model.apply({"params": params}, packed["ids"], positions=packed["positions"])
    step = jax.jit(lambda p, t, s: model.apply({"params": p}, t, s, method=model.step))
    start = 0
    for e in enc:
        state = model.apply({"params": params}, 1, method=model.init_state)
        gen = []
        for t in range(e.length):
            out, state = step(params, jnp.asarray(e.ids[t : t + 1]), state)
            gen.append(out[0])
        np.testing.assert_allclose(
            np.stack(gen), logits[0, start : start + e.length], rtol=1e-5, atol=1e-5
        )
        start += e.length
