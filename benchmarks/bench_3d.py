"""Training volumes per second of the 3D networks (hfmed.models3d): every family and size, 28^3 and 64^3.

One process measures every configuration in turn, side by side on the same machine state:
forward, backward and an Adam step (the published 3D protocol's optimiser, lr 1e-3) on batches of
real AdrenalMNIST3D training volumes (``../shared/data/medmnist/adrenalmnist3d.npz``: binary
adrenal-gland shape masks, 0/255), scaled to [-1, 1] as ``Normalize(0.5, 0.5)`` does, and resized
trilinearly to 64^3 for the 64 case (the real 64^3 file is not in ../shared). Each configuration
runs one untimed step first (allocations, oneDNN/cuDNN kernel choice), then timed steps until
``--min_seconds`` have passed (at least ``--min_steps``); the device is synchronised at both ends.
The model is in training mode (batch norm statistics updated), fp32 unless ``--bf16``.

CPU (the default; large models at 64^3 take minutes per step on two cores). On a CPU shared with
other jobs, ``--threads 1``: OpenMP threads that wait for a busy core slowed a small model 30-100x
here (load 12 on 2 cores), where one thread per process degrades gracefully::

    python benchmarks/bench_3d.py --threads 1 --json /tmp/bench_3d_cpu.json

GPU, from the prepared device script::

    python benchmarks/bench_3d.py --device cuda --batch 32 --bf16 --json $OUT/bench_3d_gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "medmnist" / "adrenalmnist3d.npz"


def real_volumes(path: Path, count: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` training volumes (in file order) as float (count, 1, side, side, side) in [-1, 1], and their labels."""
    with np.load(path, allow_pickle=False) as archive:
        volumes = archive["train_images"][:count]
        labels = archive["train_labels"][:count, 0]
    x = torch.from_numpy(volumes).float().div_(255).unsqueeze(1)
    if x.shape[-1] != side:
        x = F.interpolate(x, size=(side,) * 3, mode="trilinear", align_corners=False)
    return x.sub_(0.5).div_(0.5), torch.from_numpy(labels.astype(np.int64))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, volumes, labels, batch: int, device, bf16: bool, min_seconds: float, min_steps: int) -> dict:
    """Volumes per second of forward + backward + Adam step, after one untimed step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    n = volumes.shape[0]

    def step(i: int) -> float:
        idx = torch.arange(i * batch, (i + 1) * batch) % n  # a fresh batch each step, cycling the pool
        x, y = volumes[idx].to(device, non_blocking=True), labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(pixel_values=x, labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    step(0)
    sync(device)
    start, steps = time.perf_counter(), 0
    while steps < min_steps or time.perf_counter() - start < min_seconds:
        last = step(steps + 1)
        steps += 1
    sync(device)
    elapsed = time.perf_counter() - start
    return {
        "steps": steps,
        "seconds": round(elapsed, 3),
        "volumes_per_second": float(f"{steps * batch / elapsed:.4g}"),
        "last_loss": float(last),
    }


def run(args) -> list[dict]:
    from transformers import AutoModelForImageClassification

    import hfmed.models3d as models3d
    from hfmed.models3d.layers import ACSConv3d

    device = torch.device(args.device)
    results = []
    for side in args.sides:
        pool = max(args.batch * 4, 16)
        volumes, labels = real_volumes(args.data, pool, side)
        for arch, acs_mode in variants(args.archs, args.acs_modes):
            ACSConv3d.mode = acs_mode or "planes"
            label = arch if acs_mode is None else f"{arch} ({acs_mode})"
            for size in args.sizes:
                config = models3d.scratch_config(
                    arch,
                    size,
                    image_size=side,
                    channels=1,
                    label_names=["normal", "hyperplasia"],
                    problem_type="single_label_classification",
                )
                torch.manual_seed(0)
                model = AutoModelForImageClassification.from_config(config).to(device)
                row = {
                    "arch": label,
                    "size": size,
                    "side": side,
                    "batch": args.batch,
                    "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                }
                row.update(
                    measure(model, volumes, labels, args.batch, device, args.bf16, args.min_seconds, args.min_steps)
                )
                print(json.dumps(row), flush=True)
                results.append(row)
                del model
    return results


def variants(archs: list[str], acs_modes: list[str]) -> list[tuple[str, str | None]]:
    """(family, ACS mode) pairs: the ACS family once per mode asked for, the others once."""
    return [(arch, mode) for arch in archs for mode in (acs_modes if arch == "acs" else [None])]


def markdown(results: list[dict]) -> str:
    """One row per family and size: volumes/s at each side, and each rate over 3D's of the same size and side."""
    sides = sorted({r["side"] for r in results})
    rate = {(r["arch"], r["size"], r["side"]): r["volumes_per_second"] for r in results}
    head = "| family | size | params (M) | " + " | ".join(f"vol/s {s}^3 | x 3D" for s in sides) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(sides))]
    seen = []
    for r in results:
        key = (r["arch"], r["size"])
        if key in seen:
            continue
        seen.append(key)
        cells = []
        for s in sides:
            v, ref = rate.get((*key, s)), rate.get(("resnet3d", key[1], s))
            cells += [f"{v:.3g}" if v is not None else "-", f"{v / ref:.2f}" if v and ref else "-"]
        lines.append(f"| {key[0]} | {key[1]} | {r['params_m']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="AdrenalMNIST3D .npz (28^3)")
    p.add_argument("--archs", nargs="+", default=["resnet3d", "acs", "resnet2_5d"])
    p.add_argument("--sizes", nargs="+", default=["small", "base", "large"])
    p.add_argument("--sides", nargs="+", type=int, default=[28, 64])
    p.add_argument("--batch", type=int, default=4, help="volumes per step (the published protocol uses 32)")
    p.add_argument("--min_seconds", type=float, default=5.0, help="time each configuration at least this long")
    p.add_argument("--min_steps", type=int, default=2)
    p.add_argument(
        "--acs_modes",
        nargs="+",
        default=["planes"],
        choices=["dense", "planes"],
        help="ACS as three flat convolutions (planes, the default) and/or one k^3 convolution (dense)",
    )
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (on a GPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--json", type=Path, help="write the machine and every row here")
    args = p.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no such file; pass --data with the path of adrenalmnist3d.npz")

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = {
        "device": torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "bf16": args.bf16,
    }
    print(json.dumps(machine), flush=True)
    results = run(args)
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1))


if __name__ == "__main__":
    main()
