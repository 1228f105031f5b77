"""Cortex settings: one frozen dataclass per part, built from a ``configs/cortex.py`` preset.

Every value is checked by :meth:`CortexConfig.validate` (a ``ValueError`` names the field), so a
bad ``--config.<field>`` is refused before any data is read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = [
    "CortexConfig",
    "DataConfig",
    "MemoryConfig",
    "Phase1Config",
    "Phase2Config",
    "ReasonerConfig",
    "RouterConfig",
]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """QA data: split by context, embedding."""

    split: tuple[float, ...] = (0.7, 0.1, 0.2)  # train, dev, test (fractions of the contexts)
    split_seed: int = 0
    report_split: str = "test"  # the held-out split every reported number comes from
    on_bad_record: str = "skip"
    encoder: str | None = None  # a sentence-transformers directory (None: packaged MiniLM)
    embed_batch: int = 64


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """The Hopfield memory of the contexts (read on the cosine scale: logits = beta * cos)."""

    beta: float = 32.0
    top_k: int = 10
    chunk_size: int = 4096
    beta_grid: tuple[float, ...] = (1.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


@dataclasses.dataclass(frozen=True)
class RouterConfig:
    """The phase 1 router (``aura.models.cortex.CortexRouter``)."""

    width: int = 256
    gray_hidden: int = 512
    gray_layers: int = 2
    gru_layers: int = 3
    settle_steps: int = 2
    residual: bool = True


@dataclasses.dataclass(frozen=True)
class Phase1Config:
    """Phase 1 training on noisy copies of the training contexts."""

    steps: int = 600
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    sigmas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)  # trained on and reported at
    ce_weight: float = 0.1
    eval_draws: int = 4  # noisy copies of each held-out context per sigma


@dataclasses.dataclass(frozen=True)
class ReasonerConfig:
    """The phase 2 reasoner (``aura.models.cortex.Reasoner``)."""

    width: int = 128
    num_experts: int = 16
    expert_layers: int = 4
    expert_hidden: int = 64
    top_k: int = 4
    capacity_factor: float = 2.0
    shared_experts: int = 4  # S expert slots merged into one always-on shared expert
    route_on: str = "input"  # what the MoE gate reads: "input" (block input) or "question"
    input_noise: float = 0.05  # training noise sigma on the branch inputs (both kinds alike)
    gate_noise: float = 0.0  # training noise sigma on the MoE gate logits (noisy top-k)
    dropout: float = 0.0  # training dropout on the block output (both kinds alike)


@dataclasses.dataclass(frozen=True)
class Phase2Config:
    """Phase 2 training of the reasoner on the frozen phase 1."""

    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-4  # the MoE's peak learning rate (and the dense one's when dense_lr is None)
    dense_lr: float | None = None  # the dense ablation's own peak learning rate (None: lr)
    weight_decay: float = 1e-4
    load_balance_weight: float = 1e-2
    z_loss_weight: float = 1e-3
    exact_threshold: float = 0.9
    permutations: int = 1000
    ridge_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    select_every: int = 10  # steps between dev scorings for model selection (0: the last step)
    ema: float = 0.0  # decay of a Polyak (EMA) average of the reasoner's parameters (0: off)


_GROUPS = {"data": DataConfig, "memory": MemoryConfig, "router": RouterConfig,
           "phase1": Phase1Config, "reasoner": ReasonerConfig, "phase2": Phase2Config}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class CortexConfig:
    """Everything a Cortex run needs besides the data source and the workdir."""

    data: DataConfig = DataConfig()
    memory: MemoryConfig = MemoryConfig()
    router: RouterConfig = RouterConfig()
    phase1: Phase1Config = Phase1Config()
    reasoner: ReasonerConfig = ReasonerConfig()
    phase2: Phase2Config = Phase2Config()
    seed: int = 0
    mesh: dict | None = None  # e.g. {"data": -1}; None: one device
    eval_every: int | None = None  # loop steps between evaluations (None: at the end)
    log_every: int = 50

    @classmethod
    def from_dict(cls, c: Any) -> CortexConfig:
        """From a (nested) mapping such as ``configs/cortex.py``'s ConfigDict (unknown keys are
        refused, naming them)."""
        c = c.to_dict() if hasattr(c, "to_dict") else dict(c)
        top = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(c) - top)
        if unknown:
            raise ValueError(f"unknown cortex config field(s) {unknown}; valid: {sorted(top)}")
        kw: dict[str, Any] = {}
        for key, value in c.items():
            group = _GROUPS.get(key)
            if group is None:
                kw[key] = dict(value) if isinstance(value, dict) else value
                continue
            names = {f.name for f in dataclasses.fields(group)}
            bad = sorted(set(value) - names)
            if bad:
                raise ValueError(f"unknown field(s) config.{key}.{bad}; valid: {sorted(names)}")
            kw[key] = group(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in value.items()})  # fmt: skip
        return cls(**kw).validate()

    def validate(self) -> CortexConfig:
        """Returns self; raises ValueError naming the first bad field."""
        d, m, r, p1, rs, p2 = (self.data, self.memory, self.router, self.phase1, self.reasoner,
                               self.phase2)  # fmt: skip
        checks = [
            (len(d.split) == 3 and all(f > 0 for f in d.split) and abs(sum(d.split) - 1) < 1e-6,
             "data.split", d.split, "three positive fractions (train, dev, test) summing to 1"),
            (d.report_split in ("dev", "test"), "data.report_split", d.report_split, "dev or test"),
            (d.on_bad_record in ("skip", "fail"), "data.on_bad_record", d.on_bad_record,
             "skip or fail"),
            (d.embed_batch >= 1, "data.embed_batch", d.embed_batch, ">= 1"),
            (m.beta > 0, "memory.beta", m.beta, "> 0"),
            (m.top_k >= 10, "memory.top_k", m.top_k, ">= 10 (recall@10 is reported)"),
            (m.chunk_size >= 1, "memory.chunk_size", m.chunk_size, ">= 1"),
            (all(b > 0 for b in m.beta_grid), "memory.beta_grid", m.beta_grid, "all > 0"),
            (min(r.width, r.gray_hidden, r.gray_layers, r.gru_layers, r.settle_steps) >= 1,
             "router", dataclasses.asdict(r), "sizes >= 1"),
            (p1.steps >= 1 and p1.batch_size >= 1, "phase1.steps/batch_size",
             (p1.steps, p1.batch_size), ">= 1"),
            (p1.lr > 0, "phase1.lr", p1.lr, "> 0"),
            (len(p1.sigmas) >= 1 and all(0 <= s < 10 for s in p1.sigmas), "phase1.sigmas",
             p1.sigmas, "values in [0, 10)"),
            (p1.ce_weight >= 0, "phase1.ce_weight", p1.ce_weight, ">= 0"),
            (p1.eval_draws >= 1, "phase1.eval_draws", p1.eval_draws, ">= 1"),
            (min(rs.width, rs.num_experts, rs.expert_layers, rs.expert_hidden) >= 1, "reasoner",
             dataclasses.asdict(rs), "sizes >= 1"),
            (0 <= rs.shared_experts < rs.num_experts, "reasoner.shared_experts",
             rs.shared_experts, f"in [0, num_experts={rs.num_experts})"),
            (1 <= rs.top_k <= rs.num_experts - rs.shared_experts, "reasoner.top_k", rs.top_k,
             f"in [1, num_experts - shared_experts={rs.num_experts - rs.shared_experts}]"),
            (rs.capacity_factor > 0, "reasoner.capacity_factor", rs.capacity_factor, "> 0"),
            (rs.route_on in ("input", "question"), "reasoner.route_on", rs.route_on,
             "input or question"),
            (0 <= rs.input_noise < 10, "reasoner.input_noise", rs.input_noise, "in [0, 10)"),
            (0 <= rs.dropout < 1, "reasoner.dropout", rs.dropout, "in [0, 1)"),
            (rs.gate_noise >= 0, "reasoner.gate_noise", rs.gate_noise, ">= 0"),
            (p2.steps >= 1 and p2.batch_size >= 1, "phase2.steps/batch_size",
             (p2.steps, p2.batch_size), ">= 1"),
            (p2.lr > 0, "phase2.lr", p2.lr, "> 0"),
            (p2.dense_lr is None or p2.dense_lr > 0, "phase2.dense_lr", p2.dense_lr,
             "> 0 or None"),
            (0 < p2.exact_threshold < 1, "phase2.exact_threshold", p2.exact_threshold, "in (0, 1)"),
            (p2.select_every >= 0, "phase2.select_every", p2.select_every, ">= 0"),
            (0 <= p2.ema < 1, "phase2.ema", p2.ema, "in [0, 1)"),
            (p2.permutations >= 1, "phase2.permutations", p2.permutations, ">= 1"),
            (len(p2.ridge_alphas) >= 1 and all(a > 0 for a in p2.ridge_alphas),
             "phase2.ridge_alphas", p2.ridge_alphas, "positive values"),
            (self.log_every >= 1, "log_every", self.log_every, ">= 1"),
            (self.eval_every is None or self.eval_every >= 1, "eval_every", self.eval_every,
             ">= 1 or None"),
        ]  # fmt: skip
        for ok, name, value, want in checks:
            if not ok:
                raise ValueError(f"config.{name}={value!r} must be {want}")
        return self
