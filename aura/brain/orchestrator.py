"""The brain between steps: one object that runs every controller of a growing LiquidMoE.

Shapes: E expert capacity.

``Brain`` composes the pure controllers of this package (growth schedule, clone/teach, merit
bandits, pruning, neurogenesis, personality) into the two calls a training loop makes:

* ``routing(state)`` before a step: the :class:`RoutingControls` (active/frozen/pruned masks,
  logit bias from the bandit policy and the personality, temperature) and the distillation
  arguments of the step;
* ``after_step(state, stats, trees)`` after it: merit, utilisation, pruning and neurogenesis
  updates, and the growth/clone events at epoch boundaries (``begin_epoch``).

Its state is a NamedTuple of arrays (checkpointed with the model). Cloning rewrites the
``experts`` rows of every tree passed in (params and optimizer moments alike), so a new expert
starts as a copy of its teacher, optimizer statistics included.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aura.brain import cloning, growth, merit, neurogenesis, personality, pruning
from aura.nn.moe import RoutingControls


@dataclasses.dataclass(frozen=True)
class BrainConfig:
    """Controller settings (the ``mnist``/``continual`` flags map onto these)."""

    capacity: int
    growth_schedule: str = "0:1,2:3,4:6"
    bandit_policy: str = "none"
    bandit_scale: float = 0.5
    merit_momentum: float = 0.9
    prune_threshold: float = 0.0  # utilisation below which an expert idles; 0 disables pruning
    prune_patience: int = 200
    utilisation_decay: float = 0.98
    spawn_entropy: float = 0.0  # fraction of log(n_active); 0 disables neurogenesis
    spawn_patience: int = 200
    teach_steps: int = 100
    bootstrap_steps: int = 30
    clone_noise: float = 1e-3
    traits: str = ""  # personality traits "curiosity=0.8,..."; empty disables the engine

    def __post_init__(self):
        if self.bandit_policy not in merit.POLICIES:
            raise ValueError(
                f"bandit_policy = {self.bandit_policy!r}; valid: {', '.join(merit.POLICIES)}"
            )
        growth.parse_growth_schedule(self.growth_schedule, self.capacity)
        if self.traits:
            personality.parse_traits(self.traits)
        if not 0.0 <= self.spawn_entropy <= 1.0:
            raise ValueError(f"spawn_entropy = {self.spawn_entropy} must be in [0, 1]")


class BrainState(NamedTuple):
    """Controller state; every field is an array so it checkpoints with orbax."""

    active: jax.Array  # int32 [] number of grown experts
    pruned: jax.Array  # bool [E]
    frozen: jax.Array  # bool [E]
    merit: merit.MeritState
    pruning: pruning.PruningState
    neuro: neurogenesis.NeurogenesisState
    teacher: jax.Array  # int32 [] teacher of the expert being taught (-1: none)
    student: jax.Array  # int32 [] expert being taught (-1: none)
    taught: jax.Array  # int32 [] steps since the student was activated
    loss_ema: jax.Array  # f32 []
    loss_trend: jax.Array  # f32 [] EMA of the loss change (personality signal)


class DistillArgs(NamedTuple):
    """What the step needs to distill: ``weight · distill(teacher -> student)`` when on."""

    on: jax.Array  # bool []
    alpha: jax.Array  # f32 []
    teacher: jax.Array  # int32 []
    student: jax.Array  # int32 []


class Brain:
    """Runs the controllers; see the module docstring."""

    def __init__(self, config: BrainConfig):
        self.config = config
        self.schedule = growth.parse_growth_schedule(config.growth_schedule, config.capacity)
        self.board = merit.MeritBoard(config.capacity)
        self.engine = (
            personality.PersonalityEngine(personality.parse_traits(config.traits))
            if config.traits
            else None
        )

    # ---------------------------------------------------------------- state
    def init(self) -> BrainState:
        E = self.config.capacity
        return BrainState(
            active=jnp.asarray(growth.active_at(self.schedule, 0), jnp.int32),
            pruned=jnp.zeros((E,), bool),
            frozen=jnp.zeros((E,), bool),
            merit=self.board.init(),
            pruning=pruning.init_pruning(E),
            neuro=neurogenesis.init_neurogenesis(),
            teacher=jnp.asarray(-1, jnp.int32),
            student=jnp.asarray(-1, jnp.int32),
            taught=jnp.asarray(0, jnp.int32),
            loss_ema=jnp.asarray(0.0, jnp.float32),
            loss_trend=jnp.asarray(0.0, jnp.float32),
        )

    def active_mask(self, st: BrainState) -> np.ndarray:
        return np.arange(self.config.capacity) < int(st.active)

    # ---------------------------------------------------------------- before a step
    def routing(self, st: BrainState) -> tuple[RoutingControls, DistillArgs]:
        """Controls and distillation arguments for the next step."""
        c = self.config
        active = jnp.asarray(self.active_mask(st))
        routable = active & ~st.pruned
        bias = self.board.routing_bias(st.merit, c.bandit_policy, c.bandit_scale, routable)
        temperature = jnp.asarray(1.0, jnp.float32)
        alpha_default = cloning.distill_alpha(int(st.taught), c.bootstrap_steps)
        alpha = jnp.asarray(alpha_default, jnp.float32)
        if self.engine is not None:
            pc = self._personality(st, routable)
            bias = bias + pc.bias_logits
            temperature = pc.temperature
            if int(st.taught) >= c.bootstrap_steps:  # bootstrap stays pure imitation
                alpha = pc.distill_alpha
        controls = RoutingControls(
            active_count=st.active,
            freeze_mask=st.frozen,
            inactive_mask=st.pruned,
            bias=bias.astype(jnp.float32),
            temperature=temperature,
        )
        on = (st.student >= 0) & (st.taught < c.teach_steps)
        distill = DistillArgs(
            on=on,
            alpha=alpha,
            teacher=jnp.maximum(st.teacher, 0),
            student=jnp.maximum(st.student, 0),
        )
        return controls, distill

    @staticmethod
    def _entropy_fraction(st: BrainState, routable) -> jax.Array:
        """Entropy of the utilisation EMA over routable experts / log(n): 1 = balanced."""
        u = jnp.where(routable, st.pruning.utilisation, 0.0)
        u = u / jnp.maximum(u.sum(), 1e-9)
        h = -jnp.sum(jnp.where(u > 0, u * jnp.log(jnp.where(u > 0, u, 1.0)), 0.0))
        n = jnp.maximum(jnp.sum(routable), 2).astype(jnp.float32)
        return h / jnp.log(n)

    # ---------------------------------------------------------------- growth and spawning
    def _activate(self, st: BrainState, student: int, trees: list[Any], rng, reason: str):
        teacher = cloning.choose_teacher(
            st.merit.merit, self.active_mask(st) & ~np.asarray(st.pruned), exclude=student
        )
        keys = jax.random.split(rng, len(trees))
        noise = self.config.clone_noise
        trees = [
            cloning.clone_expert(t, teacher, student, noise_scale=noise if i == 0 else 0.0, rng=k)
            for i, (t, k) in enumerate(zip(trees, keys, strict=True))
        ]
        mask = jnp.zeros((self.config.capacity,), bool).at[student].set(True)
        fair = 1.0 / max(int(st.active), 1)
        st = st._replace(
            active=jnp.maximum(st.active, student + 1).astype(jnp.int32),
            pruning=pruning.reset_experts(st.pruning, mask, fair),
            pruned=st.pruned & ~mask,
            merit=st.merit._replace(merit=st.merit.merit.at[student].set(st.merit.merit[teacher])),
            teacher=jnp.asarray(teacher, jnp.int32),
            student=jnp.asarray(student, jnp.int32),
            taught=jnp.asarray(0, jnp.int32),
        )
        return st, trees, f"{reason}: expert {student} cloned from teacher {teacher}"

    def begin_epoch(self, st: BrainState, epoch: int, trees: list[Any], rng) -> tuple:
        """Applies the growth schedule at an epoch boundary; returns (state, trees, events)."""
        events = []
        target = growth.active_at(self.schedule, epoch)
        while int(st.active) < target:
            rng, key = jax.random.split(rng)
            st, trees, ev = self._activate(st, int(st.active), trees, key, f"growth@epoch{epoch}")
            events.append(ev)
        return st, trees, events

    # ---------------------------------------------------------------- after a step
    def after_step(self, st: BrainState, stats: dict, trees: list[Any], rng) -> tuple:
        """Folds one step's statistics into the controllers.

        Args:
          st: brain state.
          stats: host values of this step: ``loss`` [], ``load`` [E], ``routed_correct`` [E],
            ``routed_count`` [E], ``gate_entropy`` [] (nats).
          trees: param-shaped trees (params, optimizer moments) cloning must rewrite.
          rng: PRNG key for clone noise.

        Returns:
          (state, trees, events).
        """
        c = self.config
        events = []
        counts = np.asarray(stats["routed_count"], np.float32)
        reward = np.asarray(stats["routed_correct"], np.float32) / np.maximum(counts, 1.0)
        active = self.active_mask(st)
        momentum = c.merit_momentum
        if self.engine is not None:
            routable = jnp.asarray(active) & ~st.pruned
            momentum = float(self._personality(st, routable).merit_momentum)
        st = st._replace(
            merit=self.board.update(st.merit, reward, counts, momentum, jnp.asarray(active))
        )
        loss = float(stats["loss"])
        ema = loss if float(st.loss_ema) == 0.0 else 0.9 * float(st.loss_ema) + 0.1 * loss
        st = st._replace(
            loss_trend=jnp.asarray(0.9 * float(st.loss_trend) + 0.1 * (ema - float(st.loss_ema))),
            loss_ema=jnp.asarray(ema, jnp.float32),
            taught=st.taught + 1,
        )
        pst = pruning.update_utilisation(st.pruning, stats["load"], c.utilisation_decay)
        if c.prune_threshold > 0:
            pst, pruned = pruning.prune_mask(pst, active, c.prune_threshold, c.prune_patience)
            newly = np.flatnonzero(np.asarray(pruned) & ~np.asarray(st.pruned))
            events += [
                f"pruned expert {int(i)} (utilisation below {c.prune_threshold})" for i in newly
            ]
            st = st._replace(pruned=jnp.asarray(pruned))
        st = st._replace(pruning=pst)
        if c.spawn_entropy > 0:
            n = max(int((active & ~np.asarray(st.pruned)).sum()), 1)
            threshold = c.spawn_entropy * float(np.log(max(n, 2)))
            neuro, spawn = neurogenesis.update(
                st.neuro, stats["gate_entropy"], threshold, c.spawn_patience, c.teach_steps
            )
            st = st._replace(neuro=neuro)
            slot = neurogenesis.next_free_slot(active, np.asarray(st.pruned))
            if bool(spawn) and slot >= 0:
                st, trees, ev = self._activate(st, slot, trees, rng, "neurogenesis")
                events.append(ev)
        return st, trees, events

    def _personality(self, st: BrainState, routable) -> personality.PersonalityControls:
        """The personality's controls from the loss trend and the routing balance."""
        signals = personality.Signals(
            loss_trend=st.loss_trend,
            gate_entropy=self._entropy_fraction(st, routable),
            utilisation=st.pruning.utilisation,
        )
        return self.engine.controls(signals, self.config.capacity, routable)

    def freeze(self, st: BrainState, experts) -> BrainState:
        """Freezes the given experts (exactly zero gradient and no optimizer update)."""
        mask = np.asarray(st.frozen).copy()
        mask[list(experts)] = True
        return st._replace(frozen=jnp.asarray(mask))
