"""Host allocator settings that keep XLA:CPU's per-step buffers in the heap (glibc only).

XLA:CPU allocates the temporaries of every executable run as one block (about 140 MB for the
MNIST POC's train step) with ``posix_memalign`` on a runtime worker thread. glibc serves a block
that large in a thread arena with ``mmap`` (a thread arena's heap is at most 64 MiB) and returns
it with ``munmap`` when it is freed, so every step faults every page of the block in again:
about 6 million minor page faults and a fifth of the process's CPU time spent in the kernel for
a 3-epoch MNIST POC run (``/usr/bin/time -v``; ``strace`` shows the 140 MB map/unmap pair per
step). With one arena, no ``mmap`` for blocks and a trim threshold above a step's working set,
a freed block stays in the heap and the next step reuses its pages (see the README for the
measured effect).

`keep_freed_host_memory` applies that with ``mallopt``. It must run before any other thread
allocates -- first thing in a process, before numpy or jax is imported: the entry points of
`aura.build` call it (a library import never changes the process's allocator; the test suite
leaves it alone, its small steps gain nothing, and the commands it starts apply it).
Trade-off: up to ``trim_threshold`` bytes of freed memory stay mapped to the process instead of
going back to the OS, and all threads share one arena (glibc's per-thread caches still serve
small allocations without the lock).

It does nothing when the C library is not glibc, when any ``MALLOC_*`` environment variable is
set (the user's own tuning wins) or when ``AURA_MALLOC=system``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_host_memory"]

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def _is_glibc() -> bool:
    """Whether this process runs on glibc (its confstr names it; musl and macOS do not)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, OSError, ValueError):
        return False


def keep_freed_host_memory(trim_threshold: int = 2 << 30, top_pad: int = 64 << 20) -> bool:
    """One malloc arena, no mmap-backed blocks, freed memory kept up to ``trim_threshold`` bytes.

    Args:
      trim_threshold: free bytes at the top of the heap before glibc gives memory back.
      top_pad: extra bytes requested each time the heap grows.

    Returns:
      True when the settings were applied; False when skipped (not glibc, ``MALLOC_*`` or
      ``AURA_MALLOC=system`` in the environment) or when ``mallopt`` refused one.
    """
    if os.environ.get("AURA_MALLOC", "").lower() == "system":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        return False
    if not _is_glibc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    cap = 2**31 - 1  # mallopt takes a C int
    settings = (
        (_M_ARENA_MAX, 1),
        (_M_MMAP_MAX, 0),
        (_M_TRIM_THRESHOLD, min(int(trim_threshold), cap)),
        (_M_TOP_PAD, min(int(top_pad), cap)),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)
