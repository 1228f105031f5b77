"""``gs://`` paths through the run-directory code, on a fake object store (tests/train/fake_gcs.py).

Orbax saves to the fake are not tested here: its TensorStore GCS driver starts HTTP transports
that wait for the network even with the file kvstore swapped in (a test hung offline).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aura.train.rundir import RunLock, as_path, is_remote, write_json_atomic
from tests.train.fake_gcs import fake_gcs, local

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

URL = "gs://bucket/run"


@pytest.fixture
def gcs(tmp_path, monkeypatch):
    fake_gcs(monkeypatch, tmp_path)
    return tmp_path


def test_a_gs_url_is_kept_and_a_local_path_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_remote(URL) and not is_remote("run/ckpt")
    assert str(as_path(URL)) == URL  # Path(...).absolute() would give /cwd/gs:/bucket/run
    assert str(as_path("run")) == str(tmp_path / "run")


def test_run_dir_files_and_lock_on_gs(gcs):
    with RunLock(URL):  # no OS lock on an object store: the directory is simply there
        write_json_atomic(f"{URL}/meta.json", {"a": np.int64(3)})
    assert json.loads(Path(local(f"{URL}/meta.json")).read_text()) == {"a": 3}
