"""tools/sweep_cortex.py's grid: ``--set`` axes, MoE-only fields skipped for dense, configs."""

import argparse
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location("sweep_cortex", f"{ROOT}/tools/sweep_cortex.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_set_axes_grid_names_and_configs():
    t = _tool()
    assert t._axis("phase2.steps=300,600") == ("phase2.steps", [300, 600])
    assert t._axis("reasoner.route_on=question") == ("reasoner.route_on", ["question"])
    assert t._axis("reasoner.dropout=0,0.1")[1] == [0, 0.1]
    for bad in ("steps=3", "phase2.steps", "phase2.steps="):
        with pytest.raises(argparse.ArgumentTypeError):
            t._axis(bad)
    a = argparse.Namespace(
        lr=[3e-4], experts=[16], layers=[4], top_k=[4, 8], kinds=["moe", "dense"],
        set=[t._axis("phase2.steps=300,600"), t._axis("phase2.load_balance_weight=0,0.01")],
    )  # fmt: skip
    runs = t.grid(a)
    moe = [r for r in runs if r["kind"] == "moe"]
    dense = [r for r in runs if r["kind"] == "dense"]
    assert len(moe) == 2 * 2 * 2  # top-k x steps x load-balance weight
    assert len(dense) == 2  # steps only: dense does not read the load-balance weight
    assert all(set(r["sets"]) == {"phase2.steps"} for r in dense)
    names = [t._name(r) for r in runs]
    assert len(set(names)) == len(names)
    base = t._preset("tiny")
    cfg = t._config(base, moe[-1], seed=2)
    assert cfg.seed == 2 and cfg.data.report_split == "dev"  # the sweep never scores test
    assert cfg.phase2.steps == 600 and cfg.phase2.load_balance_weight == 0.01
    assert cfg.reasoner.top_k == 8 and cfg.reasoner.num_experts == 16
