"""``LiquidMoE``: the liquid mixture-of-experts core (EnhancedSpikingRetrievalCore of the design).

Shapes: B batch, T tokens, N = B·T flattened tokens, D input width, O output width, E expert
capacity, K top-k, J a subset of experts.

A softmax gate over bio-signal features (temperature, additive logit bias, optional hierarchical
groups) picks the top-k of the routable experts for each token; a sparse dispatch runs each token
through only those experts. The expert capacity E is fixed at init; which experts are active,
frozen or pruned is a :class:`RoutingControls` value passed to each call, so growing, freezing and
pruning never change a shape or trigger a recompile.

Under a device mesh (``jax.set_mesh``) the non-dense dispatch modes run per device with
``shard_map`` (``parallel.py``): each device dispatches its own tokens. With the mesh's
``expert_axis`` of size 1 the resolved mode applies per device (``"ragged"``, the GPU/TPU
default: sort + ``ragged_dot``, dropless; ``"capacity"``: the capacity buffer). With an expert
axis larger than 1 the tokens travel to the devices holding their experts (expert parallelism):
``"capacity"`` and ``"auto"`` use capacity buffers and a dense all-to-all (static shapes);
``"ragged"`` uses a dropless ragged all-to-all (``ragged_parallel.py``; GPU/TPU, emulated on
CPU). Without a mesh nothing changes.

Example::

    moe = LiquidMoE(num_experts=6, in_dim=64, hidden_dim=128, top_k=2)
    controls = RoutingControls.create(6, active=3, frozen=[0])
    params = moe.init(key, x, controls)["params"]
    y, aux = moe.apply({"params": params}, x, controls)          # y [B, T, D], aux: MoEAux
    loss = task_loss(y) + 1e-2 * aux.load_balance_loss + 1e-3 * aux.router_z_loss
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from aura.nn.moe import dispatch as dispatch_lib
from aura.nn.moe import parallel, ragged_parallel
from aura.nn.moe.experts import EXPERT_KINDS
from aura.nn.moe.losses import MoEAux, gate_entropy, load_balance_loss, router_z_loss
from aura.nn.moe.reference import reference_moe
from aura.nn.moe.router import Router, RouterOutput, RoutingControls


class LiquidMoE(nn.Module):
    """Sparse mixture of stacked experts with growth/freeze/prune masks.

    Attributes:
      num_experts: expert capacity E (fixed; activity is a mask).
      in_dim: token width D.
      hidden_dim: MLP expert hidden width F.
      out_dim: output width O (default D).
      top_k: experts per token K (weights renormalised over the chosen ones).
      group_count: G > 1 enables hierarchical group gating; must divide E.
      expert_kind: "mlp" or "conv1d".
      conv_channels, conv_kernel: Conv1D expert channels H and kernel width W.
      dispatch: "auto" | "capacity" | "blocked" | "ragged" | "dense" (reference; compute every
        expert). "auto" is "ragged" on GPU/TPU (also per device under a mesh whose expert axis
        is 1) and "capacity" elsewhere, or "blocked" where that computes at most 3/4 of the
        capacity buffer's rows (``dispatch.prefer_blocked``); under a mesh the blocked mode
        falls back to the capacity buffer; with expert parallelism "auto" keeps the capacity
        all-to-all and "ragged" selects the dropless ragged all-to-all.
      capacity_factor: capacity dispatch buffer size per expert, relative to a perfect balance.
      dtype: compute dtype of the experts (the router always computes in f32).
      param_dtype: parameter dtype (keep f32 master weights).
      expert_axis: mesh axis that splits the experts (expert parallelism when its size > 1);
        None: the experts are replicated on every device of a mesh.
      partition_params: box the expert parameters with logical axis names
        (``("expert", "embed", "mlp")``, ...) for a sharded init; off: ``init`` returns plain
        arrays.
    """

    num_experts: int
    in_dim: int
    hidden_dim: int
    out_dim: int | None = None
    top_k: int = 2
    group_count: int = 1
    expert_kind: str = "mlp"
    conv_channels: int = 8
    conv_kernel: int = 5
    dispatch: str = "auto"
    capacity_factor: float = 1.25
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    expert_axis: str | None = "expert"
    partition_params: bool = False

    def setup(self):
        if self.num_experts < 1:
            raise ValueError(f"num_experts = {self.num_experts} must be >= 1")
        if self.expert_kind not in EXPERT_KINDS:
            raise ValueError(
                f"expert_kind = {self.expert_kind!r}; valid kinds: {', '.join(EXPERT_KINDS)}"
            )
        dispatch_lib.resolve_mode(self.dispatch)  # validates the name
        dispatch_lib.expert_capacity(1, 1, self.capacity_factor)  # validates the factor
        self.router = Router(self.num_experts, self.top_k, self.group_count, name="router")
        common = dict(
            num_experts=self.num_experts,
            in_dim=self.in_dim,
            out_dim=self.out_dim,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            partition_params=self.partition_params,
            name="experts",
        )
        if self.expert_kind == "mlp":
            self.experts = EXPERT_KINDS["mlp"](hidden_dim=self.hidden_dim, **common)
        else:
            self.experts = EXPERT_KINDS["conv1d"](
                channels=self.conv_channels, kernel_size=self.conv_kernel, **common
            )

    # ------------------------------------------------------------------ helpers
    def _controls(self, controls: RoutingControls | None) -> RoutingControls:
        if controls is None:
            return RoutingControls.create(self.num_experts)
        if controls.num_experts != self.num_experts:
            raise ValueError(
                f"controls are for {controls.num_experts} experts, the core has {self.num_experts}"
            )
        if controls.bias.ndim > 1:  # [B, T, E] -> [N, E]
            controls = controls.replace(bias=controls.bias.reshape(-1, self.num_experts))
        return controls

    def _flatten(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"input width {x.shape[-1]} != LiquidMoE in_dim {self.in_dim}")
        return x.reshape(-1, self.in_dim)  # [..., D] -> [N, D]

    def _route(self, x2, controls, gate_features) -> RouterOutput:
        g = x2 if gate_features is None else gate_features.reshape(x2.shape[0], -1)  # [N, Dg]
        return self.router(g, controls)

    # ------------------------------------------------------------------ API
    def __call__(
        self,
        x: jax.Array,
        controls: RoutingControls | None = None,
        gate_features: jax.Array | None = None,
    ) -> tuple[jax.Array, MoEAux]:
        """Routes tokens ``x`` [..., D] through their top-k experts.

        Args:
          x: tokens [..., D].
          controls: active/freeze/prune masks, logit bias and temperature (default: all active).
          gate_features: optional [..., Dg] bio-signal features the gate reads instead of x.

        Returns:
          (y [..., O], MoEAux).
        """
        controls = self._controls(controls)
        lead = x.shape[:-1]
        x2 = self._flatten(x)
        r = self._route(x2, controls, gate_features)
        freeze = controls.freeze_mask
        mode = dispatch_lib.resolve_mode(self.dispatch)
        E = self.num_experts
        pairs = x2.shape[0] * self.top_k
        auto_cpu = self.dispatch == "auto" and mode == "capacity"
        if auto_cpu and dispatch_lib.prefer_blocked(pairs, E, self.capacity_factor):
            mode = "blocked"
        mesh = None
        if mode != "dense":
            mesh = parallel.dispatch_mesh(self.expert_axis, x2.shape[0], E)
        if mesh is not None:
            y, dropped = self._sharded(x2, r, freeze, mode, mesh)
            stats = dispatch_lib.DispatchStats(
                dispatch_lib.routing_load(r.indices, r.valid, E), dropped
            )
        elif mode == "capacity":
            y, stats = dispatch_lib.capacity_dispatch(
                x2,
                r.indices,
                r.weights,
                r.valid,
                lambda xb: self.experts.batched(xb, freeze),
                E,
                self.capacity_factor,
            )
        elif mode == "blocked":
            params, run = self.experts.batched_parts(freeze)
            y, stats = dispatch_lib.blocked_dispatch(
                x2, r.indices, r.weights, r.valid, params, run, E, self.capacity_factor
            )
        elif mode == "ragged":
            y, stats = dispatch_lib.ragged_dispatch(
                x2,
                r.indices,
                r.weights,
                r.valid,
                lambda xs, gs: self.experts.grouped(xs, gs, freeze),
                E,
            )
        else:
            y = reference_moe(
                x2, r.indices, r.weights, r.valid, lambda xb: self.experts.batched(xb, freeze), E
            )
            onehot = jax.nn.one_hot(jnp.where(r.valid, r.indices, E), E + 1)[..., :E]
            load = jnp.sum(onehot, axis=(0, 1)) / jnp.maximum(jnp.sum(r.valid), 1)
            stats = dispatch_lib.DispatchStats(load, jnp.zeros((), jnp.float32))
        routable = controls.routable()
        aux = MoEAux(
            load_balance_loss=load_balance_loss(stats.load, r.probs, routable),
            router_z_loss=router_z_loss(r.logits, routable),
            load=stats.load,
            importance=jnp.mean(r.probs, axis=0),
            gate_entropy=gate_entropy(r.probs),
            dropped_fraction=stats.dropped_fraction,
        )
        return y.reshape(*lead, y.shape[-1]), aux

    def _sharded(self, x2, r: RouterOutput, freeze, mode: str, mesh) -> tuple[jax.Array, jax.Array]:
        """Per-device dispatch under ``mesh`` (``parallel.py``): (y [N, O], dropped fraction)."""
        E, route = self.num_experts, (x2, r.indices, r.weights, r.valid)
        X = parallel.expert_axis_size(mesh, self.expert_axis)
        none_dropped = jnp.zeros((), jnp.float32)
        if mode == "ragged" and X == 1:
            params, run = self.experts.grouped_parts(freeze)
            return parallel.local_ragged_dispatch(*route, params, run, E, mesh), none_dropped
        if mode == "ragged" and self.dispatch == "ragged":  # explicit: dropless all-to-all
            params, run = self.experts.grouped_parts(freeze)
            y = ragged_parallel.ragged_expert_parallel_dispatch(
                *route, params, run, E, mesh, self.expert_axis
            )
            return y, none_dropped
        params, run = self.experts.batched_parts(freeze)  # "capacity", "blocked", "auto"
        return parallel.expert_parallel_dispatch(
            *route, params, run, E, self.capacity_factor, mesh, self.expert_axis
        )

    def compute_gate_weights(
        self, x: jax.Array, controls: RoutingControls | None = None, gate_features=None
    ) -> RouterOutput:
        """Routing-only pass (no expert runs): gate probabilities and top-k over [N, ...]."""
        return self._route(self._flatten(x), self._controls(controls), gate_features)

    def expert_outputs(self, x: jax.Array, controls: RoutingControls | None = None) -> jax.Array:
        """Every expert on every token: [E, ..., O] (for distillation and analysis)."""
        controls = self._controls(controls)
        x2 = self._flatten(x)
        E = self.num_experts
        out = self.experts.batched(jnp.broadcast_to(x2[None], (E, *x2.shape)), controls.freeze_mask)
        return out.reshape(E, *x.shape[:-1], out.shape[-1])  # [E, N, O] -> [E, ..., O]

    def distill_loss(
        self,
        x: jax.Array,
        teacher_idx: int | jax.Array,
        student_idx: int | jax.Array,
        controls: RoutingControls | None = None,
    ) -> jax.Array:
        """MSE of expert ``student_idx`` towards a stop-gradient expert ``teacher_idx``.

        Only the two experts run (cost independent of E); indices may be traced.
        """
        controls = self._controls(controls)
        idx = jnp.stack([jnp.asarray(teacher_idx), jnp.asarray(student_idx)])  # [2]
        outs = self.experts.subset(self._flatten(x), idx, controls.freeze_mask)  # [2, N, O]
        teacher = jax.lax.stop_gradient(outs[0])
        return jnp.mean(jnp.square(outs[1].astype(jnp.float32) - teacher.astype(jnp.float32)))

    def committee_distill_loss(
        self,
        x: jax.Array,
        student_idx: int | jax.Array,
        controls: RoutingControls | None = None,
        gate_features: jax.Array | None = None,
    ) -> jax.Array:
        """MSE of expert ``student_idx`` towards the stop-gradient weighted top-k ensemble."""
        teacher, _ = self(x, controls, gate_features)
        teacher = jax.lax.stop_gradient(teacher.reshape(-1, teacher.shape[-1]))  # [N, O]
        controls = self._controls(controls)
        idx = jnp.asarray(student_idx).reshape(1)  # [1]
        student = self.experts.subset(self._flatten(x), idx, controls.freeze_mask)[0]  # [N, O]
        return jnp.mean(jnp.square(student.astype(jnp.float32) - teacher.astype(jnp.float32)))
