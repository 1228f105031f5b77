"""`Cerebrum`: a gate over registered experts that spawns adapter experts on novel data.

The host-side shell over `aura.mixtures.cerebrum_core` (read that docstring for the novelty
rule, routing and training). It owns the legacy experts (fitted `MM` models of any registered
type: "gmm", "hmm", "mmm", custom) and the jit-able state with the stacked adapter experts.

* `fit_and_add(data, model_type, config)`: fits a legacy expert on 80% of `data` and calibrates
  its novelty threshold on the other 20%; `add_model(mm, calibration_data=...)` adds a fitted one.
* `observe(x)`: one controller step on a batch (may spawn an adapter); `score(x)` is the top-k
  mixture log-likelihood per sample, `route(x)` the top-k expert ids and weights,
  `score_experts(x)` every expert's per-sample log-likelihood.
* `export_model(id)` returns an `MM` (adapters become diagonal "gmm" models) carrying its
  calibration; `import_model(mm_or_path)` adds one; `assimilate(other)` merges another
  controller's experts; `save(path)` / `Cerebrum.load(path)` write orbax arrays + JSON.

Sequence data (a Cerebrum built with ``data_kind="sequences"``): the gate and the adapters see
per-sequence summary features (mean and standard deviation of the frames, width 2 D), legacy
sequence models score the raw sequences; calibrated scores make the two comparable.

Shapes: B batch, D features, E expert slots, K top-k.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aura.data.errors import DataError
from aura.mixtures import cerebrum_core as core
from aura.mixtures import store
from aura.mixtures.manager import MM, check_id
from aura.mixtures.registry import get_model_type, split_sequences
from aura.mixtures.validate import as_points, as_sequences

__all__ = ["Cerebrum", "CerebrumConfig"]

CerebrumConfig = core.CerebrumConfig


class Cerebrum:
    """Mixture-of-experts controller over legacy (fitted) and adapter (spawned) experts."""

    def __init__(self, config: CerebrumConfig, *, data_kind: str = "points", seed: int = 0) -> None:
        """Args: config: static settings (``dim`` = feature width D of the gate/adapters: D for
        points, 2 x frame width for sequences); data_kind: "points" or "sequences"."""
        if data_kind not in ("points", "sequences"):
            raise ValueError(f"data_kind={data_kind!r}; use 'points' or 'sequences'")
        self.config, self.data_kind, self.seed = config, data_kind, int(seed)
        self.state = core.init_state(config)
        self.ids: list[str | None] = [None] * config.capacity
        self.legacy: dict[int, MM] = {}
        self._standardised = False

    # ------------------------------------------------------------------ features and ids

    def features(self, data: Any, where: str = "data") -> np.ndarray:
        """Gate/adapter features [B, dim] of a batch (points as they are; sequences summarised)."""
        if self.data_kind == "points":
            return as_points(data, where, expect_dim=self.config.dim)
        x, lengths = split_sequences(data)
        xs, lens = as_sequences(x, lengths, where)
        mask = (np.arange(xs.shape[1])[None] < lens[:, None])[..., None]
        mean = (xs * mask).sum(1) / lens[:, None]
        std = np.sqrt(((xs - mean[:, None]) ** 2 * mask).sum(1) / lens[:, None])
        feats = np.concatenate([mean, std], axis=1).astype(np.float32)
        if feats.shape[1] != self.config.dim:
            raise DataError(
                f"{where}: summary features have width {feats.shape[1]} (2 x {xs.shape[2]}) but "
                f"this Cerebrum was built with dim={self.config.dim}"
            )
        return feats

    def _fix_standardisation(self, feats: np.ndarray) -> None:
        if self._standardised:
            return
        mean, std = feats.mean(0), feats.std(0) + 1e-3
        self.state = self.state._replace(feat_mean=jnp.asarray(mean), feat_std=jnp.asarray(std))
        self._standardised = True

    def active_ids(self) -> list[str]:
        """Ids of the occupied slots, in slot order."""
        return [i for i in self.ids if i is not None]

    def kinds(self) -> dict[str, str]:
        """``{id: "legacy:<type>" | "adapter"}``."""
        out = {}
        for slot, mid in enumerate(self.ids):
            if mid is not None:
                out[mid] = (
                    f"legacy:{self.legacy[slot].model_type}" if slot in self.legacy else "adapter"
                )
        return out

    def _slot(self, model_id: str) -> int:
        key = check_id(model_id)
        if key not in self.ids:
            raise ValueError(f"no expert {key!r}; experts: {self.active_ids()}")
        return self.ids.index(key)

    def _free_slot(self) -> int:
        kinds = np.asarray(self.state.kind)
        free = np.flatnonzero(kinds == core.EMPTY)
        if free.size == 0:
            raise ValueError(
                f"all {self.config.capacity} expert slots are taken; build the Cerebrum with a "
                "larger capacity or remove an expert"
            )
        return int(free[0])

    def _new_id(self, prefix: str) -> str:
        n = 0
        while f"{prefix}_{n}" in self.ids:
            n += 1
        return f"{prefix}_{n}"

    # ------------------------------------------------------------------ legacy experts

    def add_model(
        self,
        model: MM,
        model_id: str | None = None,
        *,
        calibration_data: Any = None,
        threshold: float | None = None,
        center: float | None = None,
    ) -> str:
        """Adds a fitted model as a legacy expert; returns its id.

        The novelty threshold/centre come from, in order: the explicit values, the quantiles of
        the model's log-likelihood on `calibration_data`, or ``model.info["calibration"]``.

        Raises:
          ValueError: no calibration given, a duplicate id, or no free slot.
        """
        model._fitted()
        if model.spec.sequence_data != (self.data_kind == "sequences"):
            kind = "sequences" if model.spec.sequence_data else "points"
            raise ValueError(
                f"a {model.model_type!r} model works on {kind}, but this Cerebrum's experts "
                f"see {self.data_kind}; build a Cerebrum with data_kind={kind!r}"
            )
        if threshold is None and calibration_data is not None:
            ll = model.score_samples(calibration_data)
            threshold = float(np.quantile(ll, self.config.novelty_quantile))
            center = float(np.median(ll))
        if threshold is None and "calibration" in model.info:
            threshold, center = model.info["calibration"]
        if threshold is None:
            raise ValueError(
                "a legacy expert needs a novelty calibration: pass calibration_data (held-out "
                "data of its kind) or threshold=/center="
            )
        center = threshold + 1.0 if center is None else center
        model_id = self._new_id(model.model_type) if model_id is None else check_id(model_id)
        if model_id in self.ids:
            raise ValueError(f"an expert with id {model_id!r} already exists")
        slot = self._free_slot()
        model.info = {**model.info, "calibration": [float(threshold), float(center)]}
        s = self.state
        self.state = s._replace(
            kind=s.kind.at[slot].set(core.LEGACY),
            threshold=s.threshold.at[slot].set(threshold),
            center=s.center.at[slot].set(center),
            born=s.born.at[slot].set(s.step),
        )
        self.ids[slot], self.legacy[slot] = model_id, model
        return model_id

    def fit_and_add(
        self,
        data: Any,
        model_type: str = "gmm",
        config: dict | None = None,
        model_id: str | None = None,
        holdout: float = 0.2,
    ) -> str:
        """Fits a `model_type` expert on data (80%) and calibrates it on the rest (20%)."""
        if get_model_type(model_type).sequence_data != (self.data_kind == "sequences"):
            raise ValueError(
                f"model_type {model_type!r} does not fit this Cerebrum's {self.data_kind} "
                "(gmm: points; hmm, mmm: sequences)"
            )
        x, lengths = split_sequences(data) if self.data_kind == "sequences" else (data, None)
        x = np.asarray(x)
        n = x.shape[0] if lengths is None or x.ndim == 3 else len(lengths)
        if x.ndim == 2 and lengths is not None:
            raise ValueError("fit_and_add takes padded sequences [B, T, D] (with lengths)")
        if not 0.0 < holdout < 1.0 or n < 2:
            raise ValueError(f"holdout={holdout} must be in (0, 1) with >= 2 samples (got {n})")
        perm = np.random.default_rng(self.seed + len(self.legacy)).permutation(n)
        n_cal = max(1, int(round(n * holdout)))
        cal, fit = perm[:n_cal], perm[n_cal:]

        def take(idx):
            return x[idx] if lengths is None else (x[idx], np.asarray(lengths)[idx])

        self._fix_standardisation(self.features(take(fit)))
        model = MM(model_type, config or {}).fit(take(fit))
        return self.add_model(model, model_id, calibration_data=take(cal))

    def _legacy_ll(self, data: Any, b: int) -> np.ndarray:
        out = np.zeros((b, self.config.capacity), np.float32)
        for slot, model in self.legacy.items():
            out[:, slot] = model.score_samples(data)
        return out

    # ------------------------------------------------------------------ stream and scoring

    def step_inputs(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(features [B, dim], legacy_ll [B, E])`` of a batch: the host-side inputs of the
        pure step (`core.train_step`); a pure function of the batch for fixed legacy experts."""
        feats = self.features(data)
        self._fix_standardisation(feats)
        return feats, self._legacy_ll(data, feats.shape[0])

    def step_key(self, step: jax.Array) -> jax.Array:
        """The PRNG key of controller step `step` (jit-safe)."""
        return jax.random.fold_in(jax.random.key(self.seed), step)

    def adopt(self, state: core.CerebrumState) -> list[str]:
        """Takes a state produced by `core.train_step` and names its newly spawned adapters."""
        self.state = state
        kinds = np.asarray(state.kind)
        new = []
        for slot in np.flatnonzero(kinds == core.ADAPTER):
            if self.ids[slot] is None:
                self.ids[slot] = self._new_id("adapter")
                new.append(self.ids[slot])
        return new

    def observe(self, data: Any) -> dict[str, Any]:
        """One controller step on a batch; returns its metrics (``spawned``: new id or None)."""
        feats, legacy = self.step_inputs(data)
        key = self.step_key(self.state.step)
        state, m = core.train_step(self.config, self.state, feats, legacy, key)
        m = {k: v.item() for k, v in jax.device_get(m).items()}
        new = self.adopt(state)
        m["spawned"] = new[0] if new else None
        return m

    def score(self, data: Any) -> np.ndarray:
        """Top-k gated mixture log-likelihood per sample [B] (nats)."""
        feats = self.features(data)
        lp, _, _ = core.mixture_log_prob(
            self.config, self.state, feats, self._legacy_ll(data, feats.shape[0])
        )
        return np.asarray(lp)

    def route(self, data: Any) -> tuple[list[list[str]], np.ndarray]:
        """Top-k expert ids per sample and their renormalised gate weights [B, K]."""
        feats = self.features(data)
        _, idx, w = core.mixture_log_prob(
            self.config, self.state, feats, self._legacy_ll(data, feats.shape[0])
        )
        return [[self.ids[i] for i in row] for row in np.asarray(idx)], np.asarray(w)

    def score_experts(self, data: Any) -> dict[str, np.ndarray]:
        """Every expert's per-sample log-likelihood [B]."""
        feats = self.features(data)
        ll = np.asarray(
            core.expert_log_prob(self.state, feats, self._legacy_ll(data, feats.shape[0]))
        )
        return {mid: ll[:, s] for s, mid in enumerate(self.ids) if mid is not None}

    # ------------------------------------------------------------------ export / import

    def export_model(self, model_id: str, path: str | os.PathLike[str] | None = None) -> MM:
        """The expert as an `MM` with its calibration (adapters as diagonal "gmm"); saved to
        `path` when given."""
        slot = self._slot(model_id)
        if slot in self.legacy:
            mm = self.legacy[slot]
        else:
            a = jax.device_get(self.state.adapters)
            std, mean = np.asarray(self.state.feat_std), np.asarray(self.state.feat_mean)
            arrays = {  # back to raw feature space
                "weights": np.asarray(jax.nn.softmax(a["logits"][slot])),
                "means": a["means"][slot] * std + mean,
                "covariances": np.exp(a["log_vars"][slot]) * std**2,
            }
            config = {"n_components": self.config.adapter_components, "covariance_type": "diag"}
            mm = MM("gmm", config)
            mm.arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
            thr, ctr = float(self.state.threshold[slot]), float(self.state.center[slot])
            mm.info = {"origin": "cerebrum adapter", "calibration": [thr, ctr]}
        if path is not None:
            mm.save(path)
        return mm

    def import_model(self, source: MM | str | os.PathLike[str], model_id: str | None = None) -> str:
        """Adds a model (an `MM` or a saved one's directory) as a legacy expert."""
        mm = source if isinstance(source, MM) else MM.load(source)
        return self.add_model(mm, model_id)

    def remove(self, model_id: str) -> None:
        """Frees an expert's slot."""
        slot = self._slot(model_id)
        s = self.state
        self.state = s._replace(
            kind=s.kind.at[slot].set(core.EMPTY),
            born=s.born.at[slot].set(-1),
        )
        self.ids[slot] = None
        self.legacy.pop(slot, None)

    def assimilate(self, other: Cerebrum | str | os.PathLike[str]) -> list[str]:
        """Adds every expert of another Cerebrum (or a saved one) to this one; returns new ids.

        Raises:
          ValueError: different feature width/data kind, or not enough free slots.
        """
        if not isinstance(other, Cerebrum):
            other = Cerebrum.load(other)
        if (other.config.dim, other.data_kind) != (self.config.dim, self.data_kind):
            raise ValueError(
                f"cannot assimilate a Cerebrum over {other.data_kind} of dim {other.config.dim} "
                f"into one over {self.data_kind} of dim {self.config.dim}"
            )
        free = int(np.sum(np.asarray(self.state.kind) == core.EMPTY))
        if len(other.active_ids()) > free:
            raise ValueError(f"{len(other.active_ids())} experts to add but {free} free slots")
        self._fix_standardisation_from(other)
        new = []
        for mid in other.active_ids():
            mm = other.export_model(mid)
            name = mid if mid not in self.ids else self._new_id(mid)
            new.append(self.add_model(mm, name))
        return new

    def _fix_standardisation_from(self, other: Cerebrum) -> None:
        if not self._standardised and other._standardised:
            self.state = self.state._replace(
                feat_mean=other.state.feat_mean, feat_std=other.state.feat_std
            )
            self._standardised = True

    # ------------------------------------------------------------------ save / load

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the state and the legacy experts (orbax) + a JSON manifest."""
        leaves = jax.tree.leaves(jax.device_get(self.state))
        arrays = {"state": {f"{i:03d}": np.asarray(v) for i, v in enumerate(leaves)}}
        arrays["legacy"] = {str(s): m._fitted() for s, m in self.legacy.items()}
        if not arrays["legacy"]:
            arrays.pop("legacy")
        manifest = {
            "kind": "cerebrum",
            "config": dict(vars(self.config)),
            "data_kind": self.data_kind,
            "seed": self.seed,
            "ids": self.ids,
            "standardised": self._standardised,
            "legacy": {str(s): m.manifest() for s, m in self.legacy.items()},
        }
        store.save_model_dir(path, arrays, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Cerebrum:
        """Loads a saved Cerebrum (DataError for a missing/corrupt/other-kind save)."""
        arrays, manifest = store.load_model_dir(path, "cerebrum")
        cer = cls(CerebrumConfig(**manifest["config"]), data_kind=manifest["data_kind"],
                  seed=manifest["seed"])  # fmt: skip
        want, treedef = jax.tree.flatten(cer.state)
        got = [arrays["state"][k] for k in sorted(arrays["state"])]
        bad = [i for i, (w, g) in enumerate(zip(want, got, strict=False)) if w.shape != g.shape]
        if len(got) != len(want) or bad:
            raise DataError(
                f"{path}: stored state ({len(got)} arrays) does not match its config "
                f"({len(want)} arrays; first mismatching leaf: {bad[:1]})"
            )
        cer.state = jax.tree.unflatten(
            treedef, [jnp.asarray(g, w.dtype) for w, g in zip(want, got, strict=True)]
        )
        cer.ids = list(manifest["ids"])
        cer._standardised = manifest["standardised"]
        for s, entry in manifest["legacy"].items():
            cer.legacy[int(s)] = MM.from_parts(entry, arrays["legacy"][s])
        return cer
