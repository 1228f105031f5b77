"""pretrain_zones on tiny data: manifests, lazy loading, restore, composed chat, faults."""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aura
from aura.configs import pretrain as pretrain_presets
from aura.data.corpus import build_corpus
from aura.data.tokenizer import TokenizerConfig, train_tokenizer
from aura.experiments.lm.pretrain import PretrainConfig
from aura.experiments.zones import stages
from aura.experiments.zones import store as zone_store
from aura.experiments.zones.config import ZonesConfig
from aura.experiments.zones.layout import expert_ckpt_path, head_path
from aura.experiments.zones.pretrain import pretrain_zones
from aura.nn.moe import LiquidMoE, RoutingControls
from aura.train import experts as experts_lib
from aura.train.checkpoint import CheckpointError
from aura.train.experts import expert_rows, load_expert, save_expert

REPO = pathlib.Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
MANIFEST_KEYS = {"zone", "expert", "shapes", "param_count", "step", "metrics", "created"}


def tiny_lm():
    return pretrain_presets.get_config("tiny").model


LM_FIELDS = ("ckpt_out", "spm_model", "steps", "batch_size", "max_len", "log_every", "save_every")


def zones_config(lm_model=None, **kw) -> ZonesConfig:
    """A ZonesConfig from flat keyword arguments (the adapter's go into its PretrainConfig)."""
    lm = {k: kw.pop(k) for k in LM_FIELDS if k in kw}
    lm.setdefault("ckpt_out", "checkpoints/lm")
    lm.setdefault("spm_model", None)
    return ZonesConfig(lm=PretrainConfig(jsonl=None, model=lm_model or tiny_lm(), **lm), **kw)


def small_moe(num_experts: int, hidden: int = 16) -> LiquidMoE:
    return LiquidMoE(
        num_experts=num_experts, in_dim=8, hidden_dim=hidden, top_k=1, dispatch="dense"
    )


def save_fake_poc(workdir, num: int = 3) -> list:
    """A POC run's per-expert saves (as poc_loop.save_experts writes them), without training."""
    moe = small_moe(4)
    params = moe.init(jax.random.key(0), jnp.zeros((2, 8)))["params"]
    for i in range(num):
        metrics = {"utilisation": [0.2, 0.5, 0.3][i], "routed_accuracy": 0.9, "test_accuracy": 0.9}
        rows = expert_rows(params["experts"], i)
        save_expert(
            expert_ckpt_path(workdir, "hippocampus", i), rows, {"step": 7, "metrics": metrics}
        )
    return params


@pytest.fixture(scope="module")
def zones_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("zones")
    corpus = build_corpus(root / "corpus", max_docs=120)
    tok = train_tokenizer(root / "corpus" / "text", root / "tok", TokenizerConfig(vocab_size=400))
    poc_params = save_fake_poc(root / "mnist")
    from aura.data.mnist import load_digits
    from aura.models.zone_brain import tiny_config

    images, labels = load_digits()
    np.savez(root / "digits.npz", images=images[:512], labels=labels[:512])
    cfg = zones_config(
        zones=("hippocampus", "language", "amygdala", "thalamus", "hypothalamus"),
        ckpt_root=str(root / "zones"),
        ckpt_out=str(root / "lm"),
        txt_dir=corpus.text_dir,
        json_dir=str(root / "corpus"),
        spm_model=tok.model_path,
        lm_model=tiny_lm(),
        steps=2,
        batch_size=4,
        max_len=32,
        log_every=1,
        save_every=2,
        mnist_workdir=str(root / "mnist"),
        max_docs=48,
        heldout_records=16,
        mnist_data=str(root / "digits.npz"),
        joint_epochs=1,
        joint_model=tiny_config(),
        tensorboard=False,
    )
    logs: list[str] = []
    result = pretrain_zones(cfg, log=logs.append)
    return root, cfg, result, logs, poc_params


@pytest.mark.slow  # the zones_run fixture trains every zone (~40 s); make test-all
def test_every_zone_is_written_with_manifests(zones_run):
    root, cfg, result, logs, _ = zones_run
    zroot = pathlib.Path(cfg.ckpt_root)
    assert any("reusing the experts" in s for s in logs)
    assert result["summary"]["language"]["steps"] == 2
    for zone, name in [
        ("hippocampus", "expert_0"), ("hippocampus", "expert_2"), ("language", "expert_0"),
        ("language", "expert_1"), ("amygdala", "bias_head"), ("thalamus", "gate_head"),
        ("hypothalamus", "control_head"),
    ]:  # fmt: skip
        manifest = json.loads((zroot / zone / name / "manifest.json").read_text())
        assert set(manifest) >= MANIFEST_KEYS, (zone, name)
        assert manifest["zone"] == zone and manifest["code_version"] == aura.__version__
        params, _ = load_expert(zroot / zone / name)
        flat = zone_store.flat_shapes(params)
        assert {k: list(v) for k, v in flat.items()} == manifest["shapes"]
        assert manifest["param_count"] == sum(int(np.prod(s)) for s in flat.values())
        zone_json = json.loads((zroot / zone / "zone.json").read_text())
        assert zone_json["zone"] == zone and zone_json["preset"]["name"] == zone
    lang = json.loads((zroot / "language" / "expert_1" / "manifest.json").read_text())
    assert lang["expert"] == 1 and lang["step"] == 2 and 0 <= lang["metrics"]["utilisation"] <= 1
    hippo = json.loads((zroot / "hippocampus" / "expert_1" / "manifest.json").read_text())
    assert hippo["step"] == 7 and hippo["metrics"]["utilisation"] == 0.5
    head = json.loads((zroot / "thalamus" / "gate_head" / "manifest.json").read_text())
    assert head["expert"] is None and 0 <= head["metrics"]["gate_agreement"] <= 1
    control = json.loads((zroot / "hypothalamus" / "control_head" / "manifest.json").read_text())
    assert 0.05 <= control["metrics"]["temperature"] <= 2.0
    summary = json.loads((zroot / "zones.json").read_text())
    assert summary["bus"]["language"]["gate_entropy"] > 0
    assert len(summary["bus"]["hippocampus"]["lifetime_utilisation"]) >= 3


@pytest.mark.slow  # the zones_run fixture trains every zone (~40 s); make test-all
def test_joint_stage_trains_the_zones_together_with_the_hypothalamus_momentum(zones_run):
    root, cfg, result, logs, _ = zones_run
    joint = result["summary"]["joint"]
    control = json.loads(
        (
            pathlib.Path(cfg.ckpt_root) / "hypothalamus" / "control_head" / "manifest.json"
        ).read_text()
    )
    assert joint["bus_decay"] == pytest.approx(control["metrics"]["merit_momentum"])
    assert any("merit momentum" in s for s in logs)
    assert joint["zones"] == ["hippocampus", "language", "amygdala", "hypothalamus"]
    assert joint["broadcast"] and joint["steps"] == 3  # 448 training digits, batch 128
    manifest = json.loads((pathlib.Path(cfg.ckpt_root) / "joint" / "joint.json").read_text())
    assert set(manifest["per_zone"]) == set(joint["zones"])
    assert all(v["publishes"] == 3 for v in manifest["bus"].values())
    assert (pathlib.Path(cfg.ckpt_root) / "joint" / "language" / "expert_0" / "params").is_dir()
    # inspect lists the joint stage: its routing per zone and every saved expert, all readable.
    from aura.experiments.zones.report import scan

    joint_rows = [e for e in scan(cfg.ckpt_root) if e.zone.startswith("joint")]
    assert [e.name for e in joint_rows if e.zone == "joint"] == ["routing"]
    assert {e.zone for e in joint_rows} == {"joint"} | {f"joint/{z}" for z in joint["zones"]}
    assert all(e.status == "ok" for e in joint_rows), [e for e in joint_rows if e.bad]
    experts = [e for e in joint_rows if e.name.startswith("expert_")]
    assert len(experts) == 6 + 8 + 2 + 1  # 1 epoch: every zone fully grown
    with pytest.raises(ValueError, match="it is not one of them"):
        zones_config(
            zones=("thalamus", "hippocampus"),
            joint_zones=("thalamus", "hippocampus"),
            ckpt_root=str(root),
            spm_model=__file__,
            txt_dir=str(root),
        ).validate()


def test_lazy_store_loads_only_routed_experts_and_stays_bounded(tmp_path):
    moe = small_moe(4)
    x = jax.random.normal(jax.random.key(1), (64, 8))
    full = moe.init(jax.random.key(2), x)["params"]
    for i in range(4):
        save_expert(expert_ckpt_path(tmp_path, "language", i), expert_rows(full["experts"], i), {})
    hollow = {**full, "experts": jax.tree.map(jnp.zeros_like, full["experts"])}
    store = zone_store.LazyExpertStore(tmp_path, "language", expert_rows(full["experts"], 0), 2)
    apply = jax.jit(moe.apply)
    gate = jax.jit(partial(moe.apply, method=LiquidMoE.compute_gate_weights))
    calls = (([0, 1], [0, 1]), ([2, 3], [2, 3]), ([1, 3], [1]))  # (routed, read from disk)
    for active, new_loads in calls:  # each call routes to exactly two experts
        pruned = [i for i in range(4) if i not in active]
        ctl = RoutingControls.create(4, pruned=pruned)
        r = gate({"params": full}, x, ctl)
        routed = store.routed(r.indices, r.valid)
        assert routed == active
        before = list(store.loads)
        lazy = {**full, "experts": store.assemble(hollow["experts"], r.indices, r.valid)}
        assert store.loads[len(before) :] == new_loads
        assert set(store.resident) == set(active) and len(store.resident) <= 2
        np.testing.assert_array_equal(
            apply({"params": lazy}, x, ctl)[0], apply({"params": full}, x, ctl)[0]
        )
    assert store.loads == [0, 1, 2, 3, 1] and store.evictions == 3 and store.hits == 1
    with pytest.raises(ValueError, match="3 experts of zone language are routed"):
        store.assemble(hollow["experts"], jnp.asarray([[0], [1], [2]]))


@pytest.mark.slow  # the zones_run fixture trains every zone (~40 s); make test-all
def test_restore_into_a_model_with_another_number_of_experts(zones_run):
    root, cfg, _, _, poc = zones_run  # 3 experts saved from a capacity-4 model

    def rows(tree, i):
        return [np.asarray(leaf)[i] for leaf in jax.tree.leaves(tree)]

    for capacity, order, want in (
        (2, "index", [0, 1]),
        (2, "utilisation", [1, 2]),
        (6, "index", [0, 1, 2]),
    ):
        blank = jax.tree.map(
            lambda x, c=capacity: np.full((c, *x.shape[1:]), 7.0, np.float32), poc["experts"]
        )
        experts, active, loaded = zone_store.restore_zone_experts(
            cfg.ckpt_root, "hippocampus", blank, order=order
        )
        assert loaded == want and active == len(want)
        for slot, i in enumerate(loaded):
            for a, b in zip(rows(experts, slot), rows(poc["experts"], i), strict=True):
                np.testing.assert_array_equal(a, b)
        for slot in range(active, capacity):  # slots beyond the saved experts are untouched
            assert all(np.all(a == 7.0) for a in rows(experts, slot))
    # The restored capacity-2 model runs with its 2 active experts (no shape change).
    moe, x = small_moe(2), jax.random.normal(jax.random.key(3), (5, 8))
    params = jax.jit(moe.init)(jax.random.key(9), x)["params"]
    experts, active, _ = zone_store.restore_zone_experts(
        cfg.ckpt_root, "hippocampus", params["experts"]
    )
    y, aux = jax.jit(moe.apply)(
        {"params": {**params, "experts": experts}}, x, RoutingControls.create(2, active)
    )
    assert y.shape == x.shape and float(np.sum(aux.load)) > 0
    shapes = {"w1": (4, 8, 12), "b1": (4, 12), "w2": (4, 12, 8), "b2": (4, 8)}  # F 16 -> 12
    wrong = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
    with pytest.raises(CheckpointError) as err:
        zone_store.restore_zone_experts(cfg.ckpt_root, "hippocampus", wrong)
    msg = str(err.value)
    assert "zone hippocampus, expert 0" in msg and "leaf 'b1'" in msg
    assert "(16,) in the checkpoint but (12,) in the model" in msg


@pytest.mark.slow  # the zones_run fixture trains every zone (~40 s); make test-all
def test_zone_heads_change_routing_and_set_the_temperature(zones_run):
    from aura.serve.chat import Chat

    root, cfg, _, _, _ = zones_run
    plain = Chat(cfg.ckpt_out, cfg.spm_model, out=io.StringIO())
    buf = io.StringIO()
    composed = Chat(cfg.ckpt_out, cfg.spm_model, out=buf, ckpt_root=cfg.ckpt_root)
    assert sorted(composed.heads) == ["amygdala", "hypothalamus", "thalamus"]
    prompt = "Explain why the parser raises an error on invalid input"
    p0 = plain.routing_distribution(prompt)
    np.testing.assert_allclose(p0, composed.routing_distribution(prompt, use_heads=False))
    p1 = composed.routing_distribution(prompt)
    tv = 0.5 * np.abs(p1 - p0).sum()
    assert tv > 0.05, (p0, p1)
    controls, info = composed.controls(prompt)
    bias = np.asarray(controls.bias)
    np.testing.assert_allclose(
        bias, np.add(info["thalamus_bias"], info["amygdala_bias"]), rtol=1e-6
    )
    assert info["affect"][0] < 0  # "error", "invalid": negative valence
    head = json.loads((head_path(cfg.ckpt_root, "hypothalamus") / "manifest.json").read_text())
    base = head["metrics"]["temperature"]
    aff = np.asarray(info["affect"])
    want = np.clip(base * np.exp(aff @ np.array([0.0, 0.25, -0.15])), 0.05, 2.0)
    assert info["temperature"] == pytest.approx(want, rel=1e-5)
    composed.answer(prompt, max_len=64, gen_len=4, temperature=None, top_k=0, top_p=1.0, seed=0)
    assert buf.getvalue().endswith("\n")


@pytest.mark.slow  # the zones_run fixture trains every zone (~40 s); make test-all
def test_missing_or_mismatched_heads_are_clear_errors(zones_run, tmp_path):
    root, cfg, _, _, _ = zones_run
    from aura.experiments.lm.pretrain import load_adapter

    model, _, _ = load_adapter(cfg.ckpt_out)
    E, D = model.config.num_experts, model.config.dim
    with pytest.raises(CheckpointError) as err:
        zone_store.load_zone_heads(cfg.ckpt_root, E + 1, D)
    assert f"zone amygdala, bias_head: leaf 'proj/kernel' has shape (3, {E})" in str(err.value)
    assert f"needs (3, {E + 1})" in str(err.value)
    with pytest.raises(CheckpointError, match=r"zone thalamus, gate_head: leaf 'centroids'"):
        zone_store.load_head(cfg.ckpt_root, "thalamus", {"centroids": (E, D + 1)})
    with pytest.raises(CheckpointError, match="zone directory .*amygdala does not exist"):
        zone_store.load_head(tmp_path, "amygdala")
    with pytest.raises(CheckpointError, match="no zone heads under"):
        zone_store.load_zone_heads(tmp_path, E, D)


class _Crash(BaseException):
    """The process dying mid-save (not an Exception: nothing catches it)."""


@pytest.mark.slow  # the zones_run fixture trains every zone (~40 s); make test-all
def test_a_crash_mid_save_leaves_the_previous_head_readable(zones_run, monkeypatch):
    root, cfg, _, _, _ = zones_run
    before, manifest = zone_store.load_head(cfg.ckpt_root, "thalamus")

    def die(*args, **kwargs):
        raise _Crash

    monkeypatch.setattr(experts_lib, "_rename", die)  # dies when swapping the new one in
    with pytest.raises(_Crash):
        zone_store.save_head(cfg.ckpt_root, "thalamus", {"centroids": np.zeros((1, 1))}, {})
    monkeypatch.undo()
    after, again = zone_store.load_head(cfg.ckpt_root, "thalamus")
    assert again == manifest
    np.testing.assert_array_equal(after["centroids"], before["centroids"])


def test_bad_configuration_is_reported_before_any_compute(tmp_path):
    with pytest.raises(ValueError, match="unknown zone 'cortex'"):
        zones_config(zones=("cortex",), ckpt_root=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="need --spm_model"):
        zones_config(zones=("thalamus",), ckpt_root=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="language needs --json_dir"):
        zones_config(zones=("language",), spm_model=__file__).validate()
    assert not any(tmp_path.iterdir())


def test_an_interrupted_zone_stops_the_run_before_anything_depends_on_it(tmp_path, monkeypatch):
    stopped = {"steps": 3, "interrupted": True}  # what pretrain returns after SIGTERM
    monkeypatch.setattr(stages, "_pretrain_language", lambda cfg, log: stopped)
    cfg = zones_config(
        zones=("language", "thalamus", "hippocampus"),
        ckpt_root=str(tmp_path / "zones"),
        spm_model=__file__,
        json_dir=str(tmp_path),
        txt_dir=str(tmp_path),
    )
    logs: list[str] = []
    result = pretrain_zones(cfg, log=logs.append)
    assert result["interrupted"] and set(result["summary"]) == {"language"}
    # No head fitted on a half-trained adapter: the root holds only its writer lock.
    assert [p.name for p in (tmp_path / "zones").iterdir()] == [".lock"]
    assert "rerun the same command to resume" in logs[-1]


@pytest.mark.slow
def test_command_trains_the_hippocampus_and_every_zone(zones_run, tmp_path):
    root, cfg, _, _, _ = zones_run
    from aura.data.mnist import load_digits

    images, labels = load_digits()
    np.savez(tmp_path / "d.npz", images=images[:256], labels=labels[:256])
    out = tmp_path / "zones"
    args = [
        "--zones=hippocampus,thalamus,hypothalamus", f"--txt_dir={cfg.txt_dir}",
        f"--json_dir={cfg.json_dir}", f"--spm_model={cfg.spm_model}", f"--ckpt_out={cfg.ckpt_out}",
        f"--ckpt_root={out}", "--mnist_epochs=1", f"--mnist_data={tmp_path / 'd.npz'}",
        "--max_len=32", "--max_docs=16", "--notensorboard",
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "aura.build", "pretrain_zones", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["summary"]["hippocampus"]["experts"] >= 1
    assert (out / "hippocampus" / "expert_0" / "manifest.json").is_file()
    assert (out / "hypothalamus" / "control_head").is_dir()
    joint = json.loads((out / "joint" / "joint.json").read_text())
    assert joint["zones"] == ["hippocampus", "hypothalamus"] and joint["steps"] >= 1
