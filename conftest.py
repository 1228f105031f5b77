"""Repository-wide pytest setup: simulate 8 CPU devices before JAX is imported."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests build the same jitted steps many times (each run a new closure): a persistent compilation
# cache per test process turns the repeats into cache hits. Executables are identical either way.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
_cache = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".pytest_jax_cache", _worker)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import pytest  # noqa: E402


class _StopAfter:
    """A ``PreemptionGuard`` stand-in whose ``requested`` turns True after ``n`` checks.

    Patched over a loop's guard it acts like a SIGTERM arriving mid-run, deterministically.
    """

    def __init__(self, n: int):
        self.n = n

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def requested(self) -> bool:
        self.n -= 1
        return self.n < 0


@pytest.fixture
def stop_after():
    """Factory: ``stop_after(n)`` is a guard that requests a stop after n checks."""
    return _StopAfter
