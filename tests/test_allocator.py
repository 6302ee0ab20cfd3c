"""CPU training keeps freed memory for the next step instead of faulting it in again every step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from hfmed.training.allocator import user_chose

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's"
)

# Allocate, touch and free a 64 MiB tensor (above any mmap threshold glibc allows) 30 times, as
# training steps do with their activations; print the minor page faults of the last 10. (The heap
# settles in the first repeats: small allocations between them take part of a freed block.)
PROBE = """
import json, resource, sys
import torch
from hfmed.training.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def once():
    torch.empty(16 * 2**20, dtype=torch.float32).fill_(1.0)
for _ in range(20):
    once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    once()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""
PAGES = 10 * 64 * 2**20 // 4096  # what ten repeats would fault in at 4 KiB a page


def probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not user_chose({k: v})} | env
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True, env=environ
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_not_faulted_in_again():
    kept = probe("keep")
    assert kept["applied"] is True
    # The repeats reuse the first one's pages: next to nothing comes from the kernel again.
    assert kept["faults"] < PAGES // 100, kept


def test_without_it_every_repeat_is_faulted_in():
    # What the setting is for: glibc as it comes maps and unmaps a block this size every time.
    # (With transparent huge pages a fault brings 2 MiB, so the bound is in huge pages.)
    assert probe("default")["faults"] >= 10 * 64 // 2, "glibc reused the block by itself: the setting is moot here"


def test_a_users_own_allocator_settings_stand():
    # glibc's default mmap_max given explicitly: the user's choice, not overridden, and the repeats
    # are faulted in as glibc does by default.
    got = probe("keep", MALLOC_MMAP_MAX_="65536")
    assert got["applied"] is False
    assert got["faults"] >= 10 * 64 // 2


@pytest.mark.parametrize(
    "environ, chose",
    [
        ({}, False),
        ({"PATH": "/usr/bin", "GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, False),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, True),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, True),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, True),
    ],
)
def test_user_chose_reads_the_allocators_own_variables(environ, chose):
    assert user_chose(environ) is chose
