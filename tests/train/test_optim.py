"""The shared optimizers and the per-row expert update mask (aura.train.optim)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from aura.train.optim import expert_row_mask, is_expert_leaf, make_optimizer


def test_mask_zeroes_exactly_the_masked_rows_and_shared_leaves():
    updates = {"experts": {"w": jnp.ones((3, 2, 2))}, "router": {"k": jnp.ones((4,))}}
    tx = expert_row_mask()
    out, _ = tx.update(
        updates, tx.init(updates), expert_keep=jnp.array([False, True, False]),
        shared_keep=jnp.asarray(False),
    )  # fmt: skip
    np.testing.assert_array_equal(out["experts"]["w"][:, 0, 0], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(out["router"]["k"], 0.0)
    same, _ = tx.update(updates, tx.init(updates))  # no masks: nothing changes
    np.testing.assert_array_equal(same["experts"]["w"], 1.0)


def test_per_zone_masks_select_by_top_level_key():
    updates = {
        "a": {"core": {"experts": {"w": jnp.ones((2, 3))}}, "head": jnp.ones(2)},
        "b": {"core": {"experts": {"w": jnp.ones((4, 3))}}, "head": jnp.ones(2)},
    }
    tx = expert_row_mask()
    keep = {"a": jnp.array([True, False]), "b": jnp.array([False, False, True, True])}
    out, _ = tx.update(updates, None, expert_keep=keep, shared_keep={"a": True, "b": False})
    np.testing.assert_array_equal(out["a"]["core"]["experts"]["w"][:, 0], [1.0, 0.0])
    np.testing.assert_array_equal(out["b"]["core"]["experts"]["w"][:, 0], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(out["a"]["head"], 1.0)
    np.testing.assert_array_equal(out["b"]["head"], 0.0)


def test_weight_decay_cannot_move_masked_rows():
    """AdamW decays every parameter; after the mask, a frozen row stays bit-identical."""
    params = {"experts": {"w": jnp.ones((2, 3))}, "router": jnp.ones(3)}
    tx = make_optimizer(1e-1, 10, weight_decay=0.5)
    state = tx.init(params)
    grads = {"experts": {"w": jnp.zeros((2, 3))}, "router": jnp.ones(3)}
    for _ in range(3):
        upd, state = tx.update(grads, state, params, expert_keep=jnp.array([False, True]))
        params = optax.apply_updates(params, upd)
    np.testing.assert_array_equal(params["experts"]["w"][0], 1.0)  # frozen: untouched
    assert np.all(np.asarray(params["experts"]["w"][1]) < 1.0)  # decayed


def test_expert_leaf_paths():
    from jax.tree_util import DictKey

    assert is_expert_leaf((DictKey("core"), DictKey("experts"), DictKey("w")))
    assert not is_expert_leaf((DictKey("core"), DictKey("router")))
