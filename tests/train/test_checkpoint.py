"""Tests for aura.train.checkpoint: train-state round trips, resume, bad checkpoints, experts."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import aura
from aura.experiments.zones.layout import expert_ckpt_path
from aura.train import checkpoint as ck
from aura.train import experts as ex
from aura.train.checkpoint import CheckpointError, TrainCheckpointer

# After a failed read of damaged files, orbax's reader thread may report "Event loop is closed"
# when it is garbage-collected: harmless and orbax-internal.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class OptState(NamedTuple):
    count: jax.Array
    mu: dict


def _state(seed: int = 0, experts: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    params = {
        "dense": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
        "experts": {"w": jnp.asarray(rng.normal(size=(experts, 2, 3)), jnp.float32)},
    }
    return {
        "params": params,
        "opt": OptState(jnp.asarray(seed, jnp.int32), jax.tree.map(jnp.zeros_like, params)),
        "brain": {"mask": jnp.asarray([True, False, True, False]), "key": jax.random.key(seed)},
        "host": np.arange(5, dtype=np.int32) + seed,
        "empty": None,
    }


def _assert_tree_equal(a, b) -> None:
    def unkey(x):
        if jnp.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    la, ta = jax.tree_util.tree_flatten(jax.tree.map(unkey, a))
    lb, tb = jax.tree_util.tree_flatten(jax.tree.map(unkey, b))
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _corrupt_files(step_dir: Path, pattern: str) -> None:
    hits = [p for p in step_dir.glob(pattern) if p.is_file()]
    assert hits, f"nothing matches {pattern} in {step_dir}"
    for p in hits:
        p.write_bytes(p.read_bytes()[:3])


def test_round_trip_in_a_fresh_manager(tmp_path):
    state = _state(1)
    with TrainCheckpointer(tmp_path / "ckpt") as ckpt:
        meta = {"epoch": 2, "position": np.int64(17), "config": {"lr": 1e-3, "sizes": (1, 3, 6)}}
        assert ckpt.save(10, state, meta)
        ckpt.wait()
    with TrainCheckpointer(tmp_path / "ckpt") as ckpt:  # As a resumed process would.
        assert ckpt.latest_step() == 10
        restored, meta = ckpt.restore(abstract_state=jax.eval_shape(lambda: state))
    _assert_tree_equal(restored, state)
    assert isinstance(restored["opt"], OptState)
    assert meta == {
        "epoch": 2,
        "position": 17,
        "config": {"lr": 1e-3, "sizes": [1, 3, 6]},
        "step": 10,
        "code_version": aura.__version__,
    }


def test_resume_picks_latest_and_keeps_max(tmp_path):
    with TrainCheckpointer(tmp_path, max_to_keep=2, save_interval_steps=2) as ckpt:
        for step in (2, 4, 6):
            assert ckpt.save(step, _state(step), {"epoch": step})
        assert not ckpt.save(7, _state(7), {})  # Not on the interval ...
        assert ckpt.save(7, _state(7), {}, force=True)  # ... unless forced.
        assert not ckpt.save(7, _state(8), {}, force=True)  # An existing step is left alone.
        ckpt.wait()
        assert ckpt.all_steps() == [6, 7]
    with TrainCheckpointer(tmp_path) as ckpt:
        state, meta = ckpt.restore(abstract_state=_state())
        assert meta["step"] == 7
        _assert_tree_equal(state, _state(7))
        _, meta6 = ckpt.restore(6, abstract_state=_state())
        assert meta6["epoch"] == 6 and ckpt.restore_meta()["step"] == 7
        with pytest.raises(CheckpointError, match=r"step 2 .*available steps: \[6, 7\]"):
            ckpt.restore(2, abstract_state=_state())


def test_restore_onto_template_shardings(tmp_path):
    mesh = jax.make_mesh((8,), ("data",))
    state = {"w": jnp.arange(64.0).reshape(16, 4), "b": jnp.ones(4)}
    with TrainCheckpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
    rows = NamedSharding(mesh, P("data"))
    template = {
        "w": jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=rows),
        "b": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=NamedSharding(mesh, P())),
    }
    with TrainCheckpointer(tmp_path) as ckpt:
        restored, _ = ckpt.restore(abstract_state=template)
    assert restored["w"].sharding == rows
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(state["w"]))


def test_mismatched_template_names_leaf_and_shapes(tmp_path):
    with TrainCheckpointer(tmp_path) as ckpt:
        ckpt.save(3, _state(experts=4))
    with TrainCheckpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError) as err:
            ckpt.restore(abstract_state=jax.eval_shape(lambda: _state(experts=6)))
        msg = str(err.value)
        assert "params/experts/w" in msg and "(4, 2, 3)" in msg and "(6, 2, 3)" in msg
        bad = _state()
        bad["params"]["dense"]["bias"] = jnp.zeros(4)
        with pytest.raises(CheckpointError, match="only in the model: \\[params/dense/bias\\]"):
            ckpt.restore(abstract_state=bad)
        bad = _state()
        bad["host"] = bad["host"].astype(np.float32)
        with pytest.raises(CheckpointError, match="'host' has dtype int32"):
            ckpt.restore(abstract_state=bad)


@pytest.mark.parametrize(
    "damage",
    ["state/d/*", "state/_METADATA", "meta/metadata", "state/manifest.ocdbt", "rmtree:state"],
)
def test_corrupt_latest_checkpoint_is_named(tmp_path, damage):
    with TrainCheckpointer(tmp_path) as ckpt:
        ckpt.save(1, _state(1), {"epoch": 1})
        ckpt.save(2, _state(2), {"epoch": 2})
    step_dir = tmp_path / "2"
    if damage.startswith("rmtree:"):
        shutil.rmtree(step_dir / damage.split(":")[1])
    else:
        _corrupt_files(step_dir, damage)
    with TrainCheckpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError) as err:
            ckpt.restore(abstract_state=_state())
        assert f"{step_dir} is corrupt or incomplete" in str(err.value)
        assert "resume from step 1" in str(err.value)
        state, _ = ckpt.restore(1, abstract_state=_state())  # The earlier step is untouched.
        _assert_tree_equal(state, _state(1))


def test_uncommitted_save_is_never_latest(tmp_path):
    with TrainCheckpointer(tmp_path) as ckpt:
        ckpt.save(5, _state(5))
    # What a crash in the middle of saving step 9 leaves: orbax's temporary directory.
    partial = tmp_path / "9.orbax-checkpoint-tmp-1234567" / "state"
    partial.mkdir(parents=True)
    (partial / "_METADATA").write_text("{trunc")
    with TrainCheckpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 5 and ckpt.all_steps() == [5]
        state, meta = ckpt.restore(abstract_state=_state())
    assert meta["step"] == 5
    _assert_tree_equal(state, _state(5))


_CRASH_MID_SAVE = """
import os, sys
import numpy as np
from aura.train.checkpoint import TrainCheckpointer
ckpt = TrainCheckpointer(sys.argv[1])
ckpt.save(1, {"w": np.full((4_000_000,), 1.0, np.float32)}, {"epoch": 1})
ckpt.wait()
ckpt.save(2, {"w": np.full((4_000_000,), 2.0, np.float32)}, {"epoch": 2})  # Async ...
os._exit(1)  # ... and the process dies before the background write commits.
"""


def test_process_killed_mid_save_resumes_from_last_complete(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_MID_SAVE, str(tmp_path)], capture_output=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "1"]
    with TrainCheckpointer(tmp_path) as ckpt:
        latest = ckpt.latest_step()
        state, meta = ckpt.restore(
            abstract_state={"w": jax.ShapeDtypeStruct((4_000_000,), jnp.float32)}
        )
    # Normally the 16 MB write is still running at the crash; should it have won the race, step
    # 2 must be complete. Either way the restored state is exactly one saved state.
    assert latest in (1, 2) and meta["epoch"] == latest
    if latest == 1:
        assert leftovers and all("tmp" in name for name in leftovers)
    np.testing.assert_array_equal(np.asarray(state["w"]), float(latest))


def test_missing_checkpoints_are_reported(tmp_path):
    with TrainCheckpointer(tmp_path / "empty") as ckpt:
        assert ckpt.latest_step() is None
        with pytest.raises(CheckpointError, match="no checkpoint found in"):
            ckpt.restore(abstract_state=_state())
    with pytest.raises(CheckpointError, match="does not exist"):
        TrainCheckpointer(tmp_path / "nowhere", read_only=True)
    with pytest.raises(ValueError, match="max_to_keep=0"):
        TrainCheckpointer(tmp_path / "x", max_to_keep=0)


# ----------------------------------------------------------------------------- experts


def _experts(e: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.normal(size=(e, 3, 5)), jnp.float32),
        "b1": jnp.asarray(rng.normal(size=(e, 5)), jnp.float32),
        "gate": {"scale": jnp.asarray(rng.normal(size=(e,)), jnp.float32)},
    }


def test_expert_rows_and_insert_against_numpy(tmp_path):
    experts = _experts()
    rows = ex.expert_rows(experts, 2)
    for path, leaf in ck.flat_tree(experts).items():
        np.testing.assert_array_equal(np.asarray(ck.flat_tree(rows)[path]), np.asarray(leaf)[2])
    traced = jax.jit(ex.expert_rows)(experts, jnp.int32(2))  # Traced index under jit.
    _assert_tree_equal(traced, rows)

    target = _experts(seed=1)
    out = ex.insert_expert_rows(target, 0, rows)
    for path, leaf in ck.flat_tree(out).items():
        want = np.array(ck.flat_tree(target)[path])
        want[0] = np.asarray(ck.flat_tree(experts)[path])[2]
        np.testing.assert_array_equal(np.asarray(leaf), want)
    host = jax.tree.map(np.asarray, target)  # numpy trees are copied, not modified in place.
    out_np = ex.insert_expert_rows(host, 3, rows)
    np.testing.assert_array_equal(out_np["b1"][3], np.asarray(rows["b1"]))
    assert not np.array_equal(host["b1"][3], out_np["b1"][3])

    with pytest.raises(ValueError, match="expert index 4 out of range"):
        ex.expert_rows(experts, 4)
    with pytest.raises(CheckpointError) as err:
        ex.insert_expert_rows(_experts(), 1, ex.expert_rows(_experts(), 0) | {"b1": jnp.ones(7)})
    assert "'b1'" in str(err.value) and "(7,)" in str(err.value) and "(5,)" in str(err.value)


def test_expert_save_load_round_trip(tmp_path):
    experts = _experts()
    path = expert_ckpt_path(tmp_path, "hippocampus", 2)
    assert path == tmp_path / "hippocampus" / "expert_2"
    rows = ex.expert_rows(experts, 2)
    ex.save_expert(path, rows, {"step": 7, "metrics": {"acc": np.float32(0.5)}})
    params, manifest = ex.load_expert(path, template=jax.eval_shape(lambda: rows))
    _assert_tree_equal(params, rows)
    assert manifest["zone"] == "hippocampus" and manifest["expert"] == 2
    assert manifest["step"] == 7 and manifest["metrics"] == {"acc": 0.5}
    assert manifest["shapes"] == {"b1": [5], "gate/scale": [], "w1": [3, 5]}
    assert manifest["param_count"] == 5 + 1 + 15
    assert manifest["code_version"] == aura.__version__ and manifest["created"].endswith("Z")
    loose, _ = ex.load_expert(path)  # Without a template: numpy arrays.
    np.testing.assert_array_equal(loose["w1"], np.asarray(rows["w1"]))
    assert sorted(p.name for p in path.parent.iterdir()) == ["expert_2"]  # No leftovers.

    with pytest.raises(CheckpointError) as err:
        ex.load_expert(path, template=ex.expert_rows(_experts(), 0) | {"w1": jnp.ones((4, 5))})
    msg = str(err.value)
    assert "zone hippocampus, expert 2" in msg and "'w1'" in msg
    assert "(3, 5)" in msg and "(4, 5)" in msg
    with pytest.raises(ValueError, match="zone name"):
        expert_ckpt_path(tmp_path, "../x", 0)
    with pytest.raises(ValueError, match="expert index -1"):
        expert_ckpt_path(tmp_path, "hippocampus", -1)


class _Crash(BaseException):
    """Stands in for the process dying (not an Exception, so nothing catches it)."""


def test_interrupted_expert_save_keeps_previous(tmp_path, monkeypatch):
    path = expert_ckpt_path(tmp_path, "amygdala", 0)
    old, new = ex.expert_rows(_experts(seed=1), 0), ex.expert_rows(_experts(seed=2), 0)
    ex.save_expert(path, old, {"step": 1})

    # 1. Dies while writing the new files: the old checkpoint is untouched.
    def die(*args, **kwargs):
        raise _Crash

    with monkeypatch.context() as m:
        m.setattr(ex.json, "dump", die)
        with pytest.raises(_Crash):
            ex.save_expert(path, new, {"step": 2})
    params, manifest = ex.load_expert(path)
    assert manifest["step"] == 1
    _assert_tree_equal(params, jax.tree.map(np.asarray, old))

    # 2. Dies between moving the old directory aside and moving the new one in.
    real_rename, calls = ex._rename, []

    def rename_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise _Crash
        real_rename(src, dst)

    with monkeypatch.context() as m:
        m.setattr(ex, "_rename", rename_then_die)
        with pytest.raises(_Crash):
            ex.save_expert(path, new, {"step": 2})
    assert not path.exists()
    params, manifest = ex.load_expert(path)  # Falls back to the set-aside previous save.
    assert manifest["step"] == 1
    _assert_tree_equal(params, jax.tree.map(np.asarray, old))

    # The next save recovers and cleans up.
    ex.save_expert(path, new, {"step": 3})
    params, manifest = ex.load_expert(path)
    assert manifest["step"] == 3
    _assert_tree_equal(params, jax.tree.map(np.asarray, new))
    assert sorted(p.name for p in path.parent.iterdir()) == ["expert_0"]


def test_corrupt_or_missing_expert_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="thalamus does not exist"):
        ex.load_expert(expert_ckpt_path(tmp_path, "thalamus", 0))
    path = expert_ckpt_path(tmp_path, "thalamus", 1)
    ex.save_expert(path, ex.expert_rows(_experts(), 1), {"step": 1})
    _corrupt_files(path / "params", "d/*")
    with pytest.raises(CheckpointError, match=f"{path} .*corrupt or incomplete"):
        ex.load_expert(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{path} is corrupt or incomplete: manifest.json"):
        ex.load_expert(path)


def test_no_pickle_is_written_or_read(tmp_path, monkeypatch):
    source = Path(ck.__file__).read_text() + Path(ex.__file__).read_text()
    assert "import pickle" not in source and "allow_pickle" not in source

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    with TrainCheckpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, _state(), {"epoch": 0})
        ckpt.wait()
        ckpt.restore(abstract_state=_state())
    path = expert_ckpt_path(tmp_path, "language", 0)
    ex.save_expert(path, ex.expert_rows(_experts(), 0), {"step": 1})
    ex.load_expert(path)
    assert json.loads((path / "manifest.json").read_text())["format"] == ck.EXPERT_FORMAT


def _zero_16_bytes(directory: Path) -> Path:
    """Zeroes 16 bytes in place in the largest array file under ``directory`` (same size)."""
    files = [p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"]
    target = max(files, key=lambda p: p.stat().st_size)  # an OCDBT array data file
    data = bytearray(target.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(16) if any(data[mid : mid + 16]) else b"\xff" * 16
    target.write_bytes(bytes(data))
    return target


def test_silent_bit_rot_in_a_step_is_named_not_loaded(tmp_path):
    with TrainCheckpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, _state(), {"epoch": 0})
        ckpt.wait()
        sums = json.loads((ckpt.step_dir(1) / "checksums.json").read_text())
        assert sums and all(len(v) == 64 for v in sums.values())
        assert ckpt.verify(1)
        ckpt.restore(abstract_state=_state())  # intact: fine
        hit = _zero_16_bytes(ckpt.step_dir(1) / "state")
        with pytest.raises(CheckpointError, match=f"{hit.name} changed since it was saved"):
            ckpt.restore(abstract_state=_state())


def test_silent_bit_rot_in_an_expert_is_named_not_loaded(tmp_path):
    path = expert_ckpt_path(tmp_path, "language", 0)
    ex.save_expert(path, ex.expert_rows(_experts(), 0), {"step": 1})
    assert json.loads((path / "manifest.json").read_text())["checksums"]
    ex.load_expert(path)
    _zero_16_bytes(path / "params")
    with pytest.raises(CheckpointError, match="changed since it was saved"):
        ex.load_expert(path)
