"""The C allocator's setting for training on the CPU: freed memory is kept for the next step.

glibc serves every allocation above its mmap threshold (32 MiB at most, whatever it is set to)
with a fresh mapping and gives it back to the kernel when it is freed. A training step on the CPU
allocates and frees the same large activations every step (a 3D ResNet at batch 32: tens of MiB
per layer), so each step had its memory zeroed and faulted in again by the kernel, page by page:
an AdrenalMNIST3D run spent 30% of its CPU time in the kernel (BENCHMARKS.md, "The C allocator").
Serving those allocations from the heap, and never trimming it, lets each step reuse the last
one's pages. The cost is memory: the heap keeps what fragmentation leaves in it, and whole runs
peaked 41-62% higher for 1.56-1.63x the speed.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: The largest trim threshold mallopt takes (an int): freed memory at the heap's top stays mapped.
NEVER_TRIM = 2**31 - 1
#: Environment variables by which a user chooses the allocator's behaviour; their choice stands.
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def user_chose(environ: dict[str, str]) -> bool:
    """Whether ``environ`` sets glibc's allocator (its variables or tunables) or preloads another one."""
    return (
        any(name in environ for name in USER_SETTINGS)
        or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")
        or "malloc" in environ.get("LD_PRELOAD", "")  # jemalloc, tcmalloc, mimalloc
    )


def keep_freed_memory() -> bool:
    """On glibc: no allocation gets its own mapping and the heap is never trimmed, so that freed
    memory is reused. True when it applied; where the user set the allocator up (user_chose), and
    off glibc (musl, macOS, Windows), nothing changes."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_chose(dict(os.environ)):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library this process runs on
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
