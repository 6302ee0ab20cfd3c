"""What the machine at hand is, and the speed settings that suit it."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def hardware_defaults(use_cpu: bool) -> dict[str, Any]:
    """Speed settings that are right on the machine at hand; CPU runs get none of them."""
    import torch

    if use_cpu or not torch.cuda.is_available():
        return {"dataloader_num_workers": 0, "dataloader_pin_memory": False}
    # Every rank reads and decodes its own share of the rows: the node's CPUs are split between
    # the ranks on it, one left for each rank's own process.
    local_procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    workers = max(1, min(8, (os.cpu_count() or 2) // local_procs - 1))
    out: dict[str, Any] = {
        "dataloader_num_workers": workers,
        "dataloader_persistent_workers": True,
        "dataloader_pin_memory": True,
    }
    major, _ = torch.cuda.get_device_capability()
    if major >= 8:  # Ampere and later: bf16 autocast and TF32 matmuls
        out.update(bf16=True, tf32=True)
    else:
        out.update(fp16=True)
    return out


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"


def versions() -> dict[str, str]:
    import datasets
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "datasets": datasets.__version__}
