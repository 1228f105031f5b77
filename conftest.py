"""Repository-wide pytest setup: simulate 8 CPU devices before JAX is imported."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# Tests compile hundreds of small programs and run each a few times: LLVM's optimisation of the
# generated CPU code is most of the compile time and buys little at these sizes. Level 0 turns
# off only that backend code-generation optimisation (the HLO passes and fusion are unchanged, and
# every test passes at the same tolerances); the suite runs in about two thirds of the time.
# Commands the tests start as subprocesses inherit it.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests build the same jitted steps many times (each run a new closure): a compilation cache on
# disk turns the repeats into cache hits. One private directory per test process (set through
# jax.config, so commands the tests start as subprocesses do not share it), removed at exit.
_cache = tempfile.mkdtemp(prefix="aura-jax-cache-")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


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

    def should_stop(self, step=None) -> bool:
        return self.requested


@pytest.fixture
def stop_after():
    """Factory: ``stop_after(n)`` is a guard that requests a stop after n checks."""
    return _StopAfter
