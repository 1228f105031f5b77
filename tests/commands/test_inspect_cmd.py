"""``python -m aura.build inspect``: the zone table, JSON, and damaged or missing checkpoints."""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from aura.experiments.zones import store as zone_store
from aura.experiments.zones.layout import expert_ckpt_path
from aura.train.experts import save_expert

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _expert(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    shapes = {"w1": (8, 16), "b1": (16,), "w2": (16, 8), "b2": (8,)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts") / "zones"
    for i, util in enumerate((0.5, 0.3, 0.2)):
        metrics = {"utilisation": util, "routed_accuracy": 0.9 - i / 10}
        save_expert(
            expert_ckpt_path(root, "hippocampus", i), _expert(i), {"step": 40, "metrics": metrics}
        )
    centroids = {"centroids": np.ones((4, 8), np.float32), "scale": np.asarray(0.5, np.float32)}
    zone_store.save_head(
        root, "thalamus", centroids, {"step": 9, "metrics": {"gate_agreement": 0.7}}
    )
    return root


@pytest.fixture
def root(clean_root, tmp_path):
    copy = tmp_path / "zones"
    shutil.copytree(clean_root, copy)
    return copy


def inspect(root, zone=None, as_json=False):
    from aura.experiments.zones.report import inspect_root

    out = io.StringIO()
    code = inspect_root(str(root), zone, as_json, True, out=out)
    return code, out.getvalue()


def row(table: str, zone: str, name: str) -> str:
    return next(ln for ln in table.splitlines() if ln.split()[:2] == [zone, name])


def test_table_lists_zones_experts_shapes_counts_steps_and_utilisation(root, capsys):
    code, table = inspect(root)
    assert code == 0
    assert table.splitlines()[0].split() == [
        "zone", "entry", "status", "params", "step", "util", "metrics", "shapes",
    ]  # fmt: skip
    r = row(table, "hippocampus", "expert_1")
    assert r.split()[2:6] == ["ok", str(8 * 16 + 16 + 16 * 8 + 8), "40", "0.3"]
    assert "routed_accuracy=0.8" in r and "w1 8x16" in r
    t = row(table, "thalamus", "gate_head")
    assert "centroids 4x8" in t and "gate_agreement=0.7" in t and t.split()[3] == "33"
    assert table.splitlines()[-1].startswith("4 entries, ")
    assert capsys.readouterr().err == ""
    code, text = inspect(root, as_json=True)
    payload = json.loads(text)
    assert code == 0 and payload["problems"] == 0 and len(payload["entries"]) == 4
    e1 = next(e for e in payload["entries"] if e["name"] == "expert_1")
    assert e1["shapes"]["w1"] == [8, 16] and e1["metrics"]["utilisation"] == 0.3
    code, table = inspect(root, zone="hippocampus")
    assert code == 0 and "thalamus" not in table


def test_a_truncated_file_is_named_corrupt_with_exit_2(root, capsys):
    data = [p for p in (root / "hippocampus" / "expert_1" / "params").rglob("*") if p.is_file()]
    data = [p for p in data if p.parent.name == "d"]
    assert data
    for p in data:
        p.write_bytes(p.read_bytes()[:3])
    code, table = inspect(root)
    assert code == 2
    assert row(table, "hippocampus", "expert_1").split()[2] == "CORRUPT"
    assert row(table, "hippocampus", "expert_0").split()[2] == "ok"
    err = capsys.readouterr().err
    assert "CORRUPT: hippocampus/expert_1" in err and "corrupt or incomplete" in err


def test_incomplete_and_mismatched_checkpoints_are_named(root, capsys):
    (root / "hippocampus" / "expert_0" / "manifest.json").unlink()
    mpath = root / "thalamus" / "gate_head" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["shapes"]["centroids"] = [4, 9]
    mpath.write_text(json.dumps(manifest))
    code, table = inspect(root)
    assert code == 2
    assert row(table, "hippocampus", "expert_0").split()[2] == "INCOMPLETE"
    assert row(table, "thalamus", "gate_head").split()[2] == "CORRUPT"
    err = capsys.readouterr().err
    assert "INCOMPLETE: hippocampus/expert_0" in err and "manifest.json missing" in err
    assert "leaf 'centroids' has shape [4, 8] on disk but the manifest says [4, 9]" in err


def test_missing_zone_directory_exits_2_and_an_interrupted_swap_is_recovered(root, capsys):
    code, table = inspect(root, zone="amygdala")
    assert code == 2 and row(table, "amygdala", "-").split()[2] == "MISSING"
    assert "zone directory does not exist" in capsys.readouterr().err
    # A crash between the two renames of a save leaves only the previous copy, set aside.
    src = expert_ckpt_path(root, "hippocampus", 2)
    os.rename(src, src.parent / ".expert_2.old-0123456789ab")
    code, table = inspect(root)
    assert code == 0 and row(table, "hippocampus", "expert_2").split()[2] == "recovered"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "aura.build", "inspect", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_command_line(root, tmp_path):
    ok = _run(f"--ckpt_root={root}")
    assert ok.returncode == 0, ok.stderr
    assert "hippocampus  expert_0" in ok.stdout and ok.stderr == ""
    bad = _run(f"--ckpt_root={root}", "--zone=cortex")
    assert bad.returncode == 2 and "unknown zone 'cortex'; valid zones: hippocampus" in bad.stderr
    gone = _run(f"--ckpt_root={tmp_path / 'nothing'}")
    assert gone.returncode == 2 and "does not exist; run pretrain_zones first" in gone.stderr


def test_a_manifest_with_fields_of_the_wrong_type_is_named(root, capsys):
    mpath = expert_ckpt_path(root, "hippocampus", 1) / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["shapes"] = "w1"  # a hand edit: shapes must be a mapping
    mpath.write_text(json.dumps(manifest))
    code, table = inspect(root, "hippocampus")
    assert code == 2
    assert "CORRUPT" in row(table, "hippocampus", "expert_1")
    assert str(mpath) in capsys.readouterr().err  # the file is named, not a bare TypeError
