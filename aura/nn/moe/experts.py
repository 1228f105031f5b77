"""Expert banks with parameters stacked on a leading expert axis ``[E, ...]``.

Shapes: E experts, C tokens per expert (capacity), M routed rows, D input width, F hidden width,
O output width, W conv kernel width, H conv channels.

Every bank offers the same three ways to run its experts, so dispatch code never cares which
kind of expert it drives:

* ``batched(x [E, C, D], freeze)``: expert e runs on its own rows ``x[e]`` (capacity dispatch and
  the compute-every-expert reference);
* ``grouped(x [M, D], group_sizes [E], freeze)``: rows sorted by expert, run with
  ``jax.lax.ragged_dot`` (dropless; the fast path on GPU/TPU);
* ``subset(x [N, D], idx [J], freeze)``: experts ``idx`` each run on all rows (distillation).

``freeze`` is a bool [E] mask: a frozen expert's parameters pass through ``stop_gradient``, so
they receive exactly zero gradient while everything else trains.

``batched_parts(freeze)`` and ``grouped_parts(freeze)`` return the same computations as
``batched`` and ``grouped`` split into their parameters (frozen and cast, ``[E, ...]``) and a pure
function of them, so expert parallelism (``parallel.py``) can hand each device only its slice of
the expert axis inside ``shard_map``.

With ``partition_params=True`` every parameter is boxed with its logical axis names
(``nn.with_logical_partitioning``: ``("expert", "embed", "mlp")`` and so on) so a sharded init can
read them (``aura.train.sharding``); the default returns plain arrays from ``init``.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype
BatchedFn = Callable[[dict, jax.Array], jax.Array]  # (params [E, ...], x [E, C, D]) -> [E, C, O]
# (params [E, ...], x [M, D] sorted by expert, group_sizes [E]) -> [M, O]
GroupedFn = Callable[[dict, jax.Array, jax.Array], jax.Array]


def logical(init, names: tuple[str | None, ...], enabled: bool):
    """``init`` boxed with logical axis ``names`` when ``enabled`` (plain ``init`` otherwise)."""
    return nn.with_logical_partitioning(init, names) if enabled else init


def freeze_rows(param: jax.Array, freeze: jax.Array | None) -> jax.Array:
    """Stops the gradient of rows ``param[e]`` where ``freeze[e]`` (exactly zero gradient)."""
    if freeze is None:
        return param
    mask = freeze.reshape((-1,) + (1,) * (param.ndim - 1))
    return jnp.where(mask, jax.lax.stop_gradient(param), param)


def _stacked_init(base, fan_in_axis: int = 1):
    """Initialiser for [E, fan_in, fan_out] kernels: each expert gets its own draw of ``base``."""

    def init(key, shape, dtype=jnp.float32):
        keys = jax.random.split(key, shape[0])
        return jax.vmap(lambda k: base(k, shape[1:], dtype))(keys)

    return init


def _frozen_cast(params: dict, freeze: jax.Array | None, dtype) -> dict:
    return {k: freeze_rows(v, freeze).astype(dtype) for k, v in params.items()}


class MLPExperts(nn.Module):
    """E two-layer MLP experts ``x -> act(x W1 + b1) W2 + b2``, stacked ``[E, ...]``."""

    num_experts: int
    in_dim: int
    hidden_dim: int
    out_dim: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    activation: str = "gelu"
    partition_params: bool = False

    def setup(self):
        E, D, F = self.num_experts, self.in_dim, self.hidden_dim
        out = self.out_dim or D
        on = self.partition_params
        kinit = _stacked_init(nn.initializers.lecun_normal())
        zeros = nn.initializers.zeros
        w1_init = logical(kinit, ("expert", "embed", "mlp"), on)
        self.w1 = self.param("w1", w1_init, (E, D, F), self.param_dtype)
        self.b1 = self.param("b1", logical(zeros, ("expert", "mlp"), on), (E, F), self.param_dtype)
        w2_init = logical(kinit, ("expert", "mlp", "embed"), on)
        self.w2 = self.param("w2", w2_init, (E, F, out), self.param_dtype)
        b2_init = logical(zeros, ("expert", "embed"), on)
        self.b2 = self.param("b2", b2_init, (E, out), self.param_dtype)

    def _params(self, freeze):
        p = {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}
        return _frozen_cast(p, freeze, self.dtype)

    def _act(self, h):
        return getattr(jax.nn, self.activation)(h)

    def batched_parts(self, freeze: jax.Array | None = None) -> tuple[dict, BatchedFn]:
        """(params [E, ...] frozen and cast, pure ``fn(params, x [E, C, D]) -> [E, C, O]``)."""
        act, dtype = getattr(jax.nn, self.activation), self.dtype

        def fn(p: dict, x: jax.Array) -> jax.Array:
            x = x.astype(dtype)
            h = jnp.einsum("ecd,edf->ecf", x, p["w1"]) + p["b1"][:, None]  # [E, C, F]
            return jnp.einsum("ecf,efo->eco", act(h), p["w2"]) + p["b2"][:, None]  # [E, C, O]

        return self._params(freeze), fn

    def batched(self, x: jax.Array, freeze: jax.Array | None = None) -> jax.Array:
        p, fn = self.batched_parts(freeze)
        return fn(p, x)

    def grouped_parts(self, freeze: jax.Array | None = None) -> tuple[dict, GroupedFn]:
        """(params [E, ...] frozen and cast, pure ``fn(params, x [M, D], sizes [E]) -> [M, O]``)."""
        act, dtype = getattr(jax.nn, self.activation), self.dtype

        def fn(p: dict, x: jax.Array, group_sizes: jax.Array) -> jax.Array:
            x = x.astype(dtype)
            row_expert = _row_expert(group_sizes, x.shape[0])  # [M]
            h = jax.lax.ragged_dot(x, p["w1"], group_sizes) + p["b1"][row_expert]  # [M, F]
            return jax.lax.ragged_dot(act(h), p["w2"], group_sizes) + p["b2"][row_expert]

        return self._params(freeze), fn

    def grouped(self, x: jax.Array, group_sizes: jax.Array, freeze=None) -> jax.Array:
        p, fn = self.grouped_parts(freeze)
        return fn(p, x, group_sizes)

    def subset(self, x: jax.Array, idx: jax.Array, freeze=None) -> jax.Array:
        p = jax.tree.map(lambda a: a[idx], self._params(freeze))  # [J, ...]
        x = x.astype(self.dtype)
        h = jnp.einsum("nd,jdf->jnf", x, p["w1"]) + p["b1"][:, None]  # [J, N, F]
        return jnp.einsum("jnf,jfo->jno", self._act(h), p["w2"]) + p["b2"][:, None]  # [J, N, O]


class Conv1DExperts(nn.Module):
    """E experts that read each token's features as a 1-D signal.

    Expert e: ``y = (act(conv1d_W(x) + b) · u + c) Wmix + bmix`` — a width-W "same" convolution
    over the D feature positions into H channels, a pointwise read-out back to one channel, and a
    D -> O mixing layer. Stacked ``[E, ...]`` like every bank.
    """

    num_experts: int
    in_dim: int
    channels: int = 8
    kernel_size: int = 5
    out_dim: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    partition_params: bool = False

    def setup(self):
        E, D, H, W = self.num_experts, self.in_dim, self.channels, self.kernel_size
        out = self.out_dim or D
        on = self.partition_params
        kinit = _stacked_init(nn.initializers.lecun_normal())
        zeros = nn.initializers.zeros
        pd = self.param_dtype
        self.conv = self.param("conv", logical(kinit, ("expert", None, None), on), (E, W, H), pd)
        self.conv_b = self.param("conv_b", logical(zeros, ("expert", None), on), (E, H), pd)
        self.read = self.param("read", logical(kinit, ("expert", None, None), on), (E, H, 1), pd)
        self.read_b = self.param("read_b", logical(zeros, ("expert", "embed"), on), (E, D), pd)
        mix_init = logical(kinit, ("expert", "embed", None), on)
        self.mix = self.param("mix", mix_init, (E, D, out), pd)
        self.mix_b = self.param("mix_b", logical(zeros, ("expert", None), on), (E, out), pd)

    def _params(self, freeze):
        names = ("conv", "conv_b", "read", "read_b", "mix", "mix_b")
        return _frozen_cast({k: getattr(self, k) for k in names}, freeze, self.dtype)

    def _patches(self, x: jax.Array) -> jax.Array:
        return _patches(x, self.kernel_size)

    def batched_parts(self, freeze: jax.Array | None = None) -> tuple[dict, BatchedFn]:
        """(params [E, ...] frozen and cast, pure ``fn(params, x [E, C, D]) -> [E, C, O]``)."""
        W, dtype = self.kernel_size, self.dtype

        def fn(p: dict, x: jax.Array) -> jax.Array:
            x = x.astype(dtype)
            h = jnp.einsum("ecdw,ewh->ecdh", _patches(x, W), p["conv"])  # [E, C, D, H]
            h = jax.nn.gelu(h + p["conv_b"][:, None, None])
            r = jnp.einsum("ecdh,eh->ecd", h, p["read"][..., 0]) + p["read_b"][:, None]  # [E,C,D]
            return jnp.einsum("ecd,edo->eco", r, p["mix"]) + p["mix_b"][:, None]  # [E, C, O]

        return self._params(freeze), fn

    def batched(self, x: jax.Array, freeze: jax.Array | None = None) -> jax.Array:
        p, fn = self.batched_parts(freeze)
        return fn(p, x)

    def grouped_parts(self, freeze: jax.Array | None = None) -> tuple[dict, GroupedFn]:
        """(params [E, ...] frozen and cast, pure ``fn(params, x [M, D], sizes [E]) -> [M, O]``)."""
        W, dtype = self.kernel_size, self.dtype

        def fn(p: dict, x: jax.Array, group_sizes: jax.Array) -> jax.Array:
            x = x.astype(dtype)
            M, D = x.shape
            row_expert = _row_expert(group_sizes, M)  # [M]
            patches = _patches(x, W).reshape(M * D, W)  # [M·D, W]
            h = jax.lax.ragged_dot(patches, p["conv"], group_sizes * D)  # [M·D, H]
            h = jax.nn.gelu(h.reshape(M, D, -1) + p["conv_b"][row_expert][:, None])  # [M, D, H]
            r = jax.lax.ragged_dot(h.reshape(M * D, -1), p["read"], group_sizes * D)  # [M·D, 1]
            r = r.reshape(M, D) + p["read_b"][row_expert]  # [M, D]
            return jax.lax.ragged_dot(r, p["mix"], group_sizes) + p["mix_b"][row_expert]  # [M, O]

        return self._params(freeze), fn

    def grouped(self, x: jax.Array, group_sizes: jax.Array, freeze=None) -> jax.Array:
        p, fn = self.grouped_parts(freeze)
        return fn(p, x, group_sizes)

    def subset(self, x: jax.Array, idx: jax.Array, freeze=None) -> jax.Array:
        p = jax.tree.map(lambda a: a[idx], self._params(freeze))  # [J, ...]
        x = x.astype(self.dtype)
        h = jnp.einsum("ndw,jwh->jndh", self._patches(x), p["conv"])  # [J, N, D, H]
        h = jax.nn.gelu(h + p["conv_b"][:, None, None])
        r = jnp.einsum("jndh,jh->jnd", h, p["read"][..., 0]) + p["read_b"][:, None]  # [J, N, D]
        return jnp.einsum("jnd,jdo->jno", r, p["mix"]) + p["mix_b"][:, None]  # [J, N, O]


def _patches(x: jax.Array, W: int) -> jax.Array:
    """[..., D] -> [..., D, W] "same"-padded sliding windows over the feature axis."""
    left = (W - 1) // 2
    pad = [(0, 0)] * (x.ndim - 1) + [(left, W - 1 - left)]
    xp = jnp.pad(x, pad)
    D = x.shape[-1]
    return jnp.stack([xp[..., i : i + D] for i in range(W)], axis=-1)  # [..., D, W]


def _row_expert(group_sizes: jax.Array, num_rows: int) -> jax.Array:
    """int32 [M]: expert of each row of an expert-sorted buffer (rows past the groups -> last)."""
    ends = jnp.cumsum(group_sizes)  # [E]
    rows = jnp.arange(num_rows)
    idx = jnp.searchsorted(ends, rows, side="right")
    return jnp.minimum(idx, group_sizes.shape[0] - 1).astype(jnp.int32)


EXPERT_KINDS = {"mlp": MLPExperts, "conv1d": Conv1DExperts}
