"""A fake ``gs://`` for tests: etils.epath's gs backend and orbax's tensorstore file access are
pointed at a local directory, so checkpoint code runs on ``gs://bucket/...`` URLs offline.

``gs://bucket/p`` lives at ``<root>/gs:/bucket/p`` with ``<root>`` the working directory; orbax
builds its TensorStore GCS specs as for a real bucket and the fake swaps their ``gcs`` kvstore for
a ``file`` one at that place. Like a real object store, the fake has no directory rename
(renaming a directory raises), so code that relies on one fails here.
"""

from __future__ import annotations

import os
from unittest import mock

import tensorstore
from etils.epath import backend, gpath
from orbax.checkpoint._src.path import gcs_utils

PREFIX = "gs://"


def local(path) -> str:
    path = os.fspath(path)
    if not path.startswith(PREFIX):
        return path
    return os.path.join(os.getcwd(), "gs:", path[len(PREFIX) :])


def remote(path: str) -> str:
    root = os.path.join(os.getcwd(), "gs:") + os.sep
    return PREFIX + path[len(root) :] if path.startswith(root) else path


class FakeGcs(backend._OsPathBackend):  # noqa: SLF001 - the os backend, behind a path map
    def open(self, path, mode, *a, **k):
        os.makedirs(os.path.dirname(local(path)), exist_ok=True) if "w" in mode else None
        return super().open(local(path), mode, *a, **k)

    def exists(self, path):
        return super().exists(local(path))

    def isdir(self, path):
        return super().isdir(local(path))

    def listdir(self, path):
        return super().listdir(local(path))

    def glob(self, path):
        return [remote(p) for p in super().glob(local(path))]

    def walk(self, top, *a, **k):
        for root, dirs, files in super().walk(local(top), *a, **k):
            yield remote(root), dirs, files

    def makedirs(self, path, *a, **k):
        return super().makedirs(local(path), *a, **k)

    def mkdir(self, path, *a, **k):
        return super().mkdir(local(path), *a, **k)

    def rmtree(self, path):
        return super().rmtree(local(path))

    def remove(self, path):
        return super().remove(local(path))

    def rename(self, path, dst):
        if os.path.isdir(local(path)):
            raise OSError(f"object stores have no directory rename: {path} -> {dst}")
        return super().rename(local(path), local(dst))

    def replace(self, path, dst):
        if os.path.isdir(local(path)):
            raise OSError(f"object stores have no directory rename: {path} -> {dst}")
        return super().replace(local(path), local(dst))

    def copy(self, path, dst, overwrite):
        return super().copy(local(path), local(dst), overwrite)

    def stat(self, path):
        return super().stat(local(path))


def _local_spec(spec):
    """A TensorStore spec with its GCS kvstores (``gs://`` URLs, ``gcs`` driver) replaced by
    file kvstores at the local place of the same URL."""
    if isinstance(spec, dict):
        if spec.get("driver") == "gcs":
            path = f"{PREFIX}{spec['bucket']}/{spec.get('path', '')}"
            rest = {k: v for k, v in spec.items() if k not in ("driver", "bucket", "path")}
            return {"driver": "file", "path": local(path), **rest}
        return {k: _local_spec(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_local_spec(v) for v in spec]
    if isinstance(spec, str) and spec.startswith(PREFIX):
        return "file://" + local(spec)
    return spec


def _wrap(open_fn):
    def opened(spec, *a, **k):
        if isinstance(spec, tensorstore.Spec):
            spec = spec.to_json()
        return open_fn(_local_spec(spec), *a, **k)

    return opened


def fake_gcs(monkeypatch, root) -> None:
    """Installs the fake for a test (``monkeypatch``), with ``root`` as the working directory."""
    monkeypatch.chdir(root)
    table = dict(gpath._PREFIX_TO_BACKEND)  # noqa: SLF001
    table["gs"] = FakeGcs()
    monkeypatch.setattr(gpath, "_PREFIX_TO_BACKEND", table)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    monkeypatch.setattr(tensorstore, "open", _wrap(tensorstore.open))
    monkeypatch.setattr(tensorstore.KvStore, "open", staticmethod(_wrap(tensorstore.KvStore.open)))


__all__ = ["FakeGcs", "fake_gcs", "local", "mock"]
