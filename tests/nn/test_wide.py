"""``SparseLinear`` against the dense product it stands for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from aura.nn.wide import SparseLinear


def test_sparse_rows_times_kernel_equal_the_dense_product():
    rng = np.random.default_rng(0)
    F, L, B, K = 50, 3, 4, 6
    ids = rng.integers(0, F, (B, K)).astype(np.int32)
    vals = rng.normal(size=(B, K)).astype(np.float32)
    vals[:, -2:] = 0.0  # padding entries
    layer = SparseLinear(F, L)
    params = layer.init(jax.random.key(0), ids, vals)["params"]
    assert not np.any(params["kernel"])  # starts at zero: adds nothing until trained
    kernel = jnp.asarray(rng.normal(size=(F, L)), jnp.float32)
    dense = np.zeros((B, F), np.float32)
    np.add.at(dense, (np.arange(B)[:, None], ids), vals)  # repeated ids add up
    out = layer.apply({"params": {"kernel": kernel}}, ids, vals)
    np.testing.assert_allclose(out, dense @ np.asarray(kernel), rtol=1e-5, atol=1e-5)
