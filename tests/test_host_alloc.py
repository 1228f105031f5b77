"""`aura.host_alloc`: freed large blocks stay in the heap, so reusing them does not fault again.

Each case runs in a fresh interpreter (the settings must come before any thread allocates): a
worker thread allocates, touches and frees a 160 MB block five times, the way XLA:CPU handles a
step's temporaries, and the process's minor page faults are counted.
"""

import os
import platform
import subprocess
import sys

import pytest

from aura.host_alloc import keep_freed_host_memory

SCRIPT = r"""
import ctypes, ctypes.util, resource, sys, threading
from aura.host_alloc import keep_freed_host_memory
applied = keep_freed_host_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
n = 160 << 20
faults = []
def step():
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(n)
        ctypes.memset(p, 1, n)
        libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=step)
t.start(); t.join()
print(applied, sum(faults[1:]))
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def run(**env) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "AURA_MALLOC"))}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=clean | env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@glibc
def test_reused_blocks_do_not_fault_again():
    applied, faults = run()
    skipped, system_faults = run(AURA_MALLOC="system")
    assert applied and not skipped
    pages = 4 * (160 << 20) // 4096  # the four reuses, had every page faulted in again
    assert system_faults > 0.9 * pages  # glibc's default: mmap'd, unmapped on free
    assert faults < 0.05 * pages


@glibc
def test_the_users_own_malloc_settings_win():
    applied, _ = run(MALLOC_ARENA_MAX="4")
    assert not applied


def test_other_settings_leave_the_process_alone(monkeypatch):
    monkeypatch.setenv("AURA_MALLOC", "system")
    assert keep_freed_host_memory() is False
