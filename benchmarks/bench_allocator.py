"""CPU training steps with the C allocator as it comes, and with hfmed's setting (hfmed.training.allocator).

glibc hands every allocation above its mmap threshold (32 MiB at most) a fresh mapping and unmaps
it when freed, so a network whose activations are tens of MiB per layer gets its memory from the
kernel again, page by page, on every step. ``keep_freed_memory()`` makes glibc serve them from its
heap and keep what is freed. This measures what that is worth, side by side: each turn is two
fresh processes, one per setting, that time the same training steps (forward, backward, an Adam
step; model in training mode, fp32, one thread) on the same real images, and the turns alternate
so that a change in the machine's load falls on both. Reported per configuration: images per
second, minor page faults per step and peak resident memory for each setting, and the median of
the per-turn ratios.

Configurations are the from-scratch networks `hfmed benchmark` trains at 28 px with the
published batch sizes: the 3D ResNet (`small`) on AdrenalMNIST3D 28^3 volumes, batch 32, and the
2D ResNet (`small`) on BreastMNIST 28 px images (fed at 112 px, as train_hf.py does), batch 128.
Real files from ../shared/data/medmnist::

    python benchmarks/bench_allocator.py --turns 5 --json /tmp/bench_allocator.json

``--train WORK`` measures whole train_hf.py runs instead: for each subset (built from its official
file under WORK on first use), two runs at once, one core each, the same flags and seed, one with
glibc's own setting given explicitly (``MALLOC_MMAP_MAX_=65536``, which keep_freed_memory leaves
as the user's choice) and one as train_hf.py runs by default; training only (no evaluation or
checkpoint inside it). Reported: each run's ``train_images_per_second`` and peak resident memory::

    python benchmarks/bench_allocator.py --train /tmp/hfmed-alloc --json /tmp/bench_allocator_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_flags import TRAINING_ONLY

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "medmnist"

#: name -> (file, batch, dimensions)
CONFIGS = {
    "resnet3d-small-28^3-b32": ("adrenalmnist3d.npz", 32, 3),
    "resnet-small-28px-b128": ("breastmnist.npz", 128, 2),
}


def _batches(name: str, data: Path):
    """The model and a pool of four batches of real training images, scaled to [-1, 1]."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForImageClassification, ResNetConfig

    import hfmed.models3d as models3d
    from hfmed.training.models import ARCH_SIZES, fitted_input_size

    file, batch, dims = CONFIGS[name]
    with np.load(data / file, allow_pickle=False) as archive:
        images = archive["train_images"][: batch * 4]
        labels = archive["train_labels"][: batch * 4, 0].astype(np.int64)
    x = torch.from_numpy(images).float().div_(255).unsqueeze(1).sub_(0.5).div_(0.5)
    torch.manual_seed(0)
    if dims == 3:
        config = models3d.scratch_config(
            "resnet3d",
            "small",
            image_size=28,
            channels=1,
            label_names=["0", "1"],
            problem_type="single_label_classification",
        )
    else:
        side = fitted_input_size("resnet", 28)
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        config = ResNetConfig(
            **ARCH_SIZES["resnet"]["small"],
            num_channels=1,
            num_labels=2,
            problem_type="single_label_classification",
        )
    model = AutoModelForImageClassification.from_config(config)
    y = torch.from_numpy(labels)
    return model, [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def worker(name: str, keep: bool, steps: int, warmup: int, data: Path) -> dict:
    """Time ``steps`` training steps in this process, after ``warmup`` untimed ones (the heap settles)."""
    if keep:
        from hfmed.training.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("keep_freed_memory() did not apply on this machine (not glibc)")
    import torch

    torch.set_num_threads(1)
    model, pool = _batches(name, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(i: int) -> None:
        x, y = pool[i % len(pool)]
        model(pixel_values=x, labels=y).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    batch = CONFIGS[name][1]
    return {
        "images_per_second": steps * batch / seconds,
        "faults_per_step": faults / steps,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def turn(name: str, keep: bool, steps: int, warmup: int, data: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, __file__, "--worker", name, "--steps", str(steps), "--warmup", str(warmup)]
    cmd += ["--data", str(data)]
    cmd += ["--keep"] if keep else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"worker failed ({name}, keep={keep}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


#: subset -> the runs' own flags: the networks and epochs of the configurations above, a few epochs.
TRAIN_RUNS = {
    "adrenalmnist3d": ["--arch", "resnet3d", "--arch_size", "small", "--num_train_epochs", "2"],
    "breastmnist": ["--arch", "resnet", "--arch_size", "small", "--num_train_epochs", "6"],
}
#: glibc's default for M_MMAP_MAX, given explicitly: keep_freed_memory() leaves a user's setting.
GLIBC_DEFAULT = {"MALLOC_MMAP_MAX_": "65536"}


def train_pair(subset: str, work: Path, data: Path) -> dict:
    """Both settings' train_hf.py runs of ``subset`` at the same time; their rates and peak memory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    dataset = work / "medmnist"
    if not (dataset / subset).is_dir():
        build = [sys.executable, "-m", "hfmed.cli", "build", "medmnist", subset, "--out", str(dataset)]
        subprocess.run([*build, "--source", str(data / f"{subset}.npz")], env=env, check=True, cwd=ROOT)
    runs = {}
    (work / "runs").mkdir(parents=True, exist_ok=True)
    pair = Path(tempfile.mkdtemp(prefix=f"{subset}-", dir=work / "runs"))  # a fresh folder per pair
    for setting, extra in (("as it comes", GLIBC_DEFAULT), ("kept", {})):
        out = pair / setting.replace(" ", "_")
        cmd = [sys.executable, str(ROOT / "train_hf.py"), "--subset", subset, "--dataset", str(dataset)]
        cmd += [*TRAIN_RUNS[subset], *TRAINING_ONLY, "--eval_test", "false", "--seed", "0"]
        cmd += ["--output_dir", str(out)]
        log = (pair / f"{setting.replace(' ', '_')}.log").open("w")
        runs[setting] = (out, subprocess.Popen(cmd, env={**env, **extra}, stdout=log, stderr=log, cwd=ROOT))
    row = {"subset": subset}
    for setting, (out, proc) in runs.items():
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
        if status:
            raise SystemExit(f"train_hf.py failed ({subset}, {setting}); see {pair}")
        results = json.loads((out / "results.json").read_text())
        row[setting] = {
            "train_images_per_second": results["train_images_per_second"],
            "train_seconds": results["train_seconds"],
            "peak_rss_mib": usage.ru_maxrss / 1024,
        }
    row["ratio"] = row["kept"]["train_images_per_second"] / row["as it comes"]["train_images_per_second"]
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--turns", type=int, default=5, help="alternating pairs of processes per configuration")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per process")
    p.add_argument("--warmup", type=int, default=4, help="untimed training steps before them")
    p.add_argument("--data", type=Path, default=DATA, help="folder of the official .npz files")
    p.add_argument("--json", type=Path, help="write every turn and the summary here")
    p.add_argument(
        "--train", type=Path, metavar="WORK", help="whole train_hf.py runs instead, built and run under WORK"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.keep, args.steps, args.warmup, args.data)))
        return
    if args.train:
        rows = [train_pair(subset, args.train, args.data) for subset in TRAIN_RUNS]
        print("| subset | img/s as it comes | img/s kept | peak RSS MiB as it comes | peak RSS MiB kept | ratio |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            a, k = r["as it comes"], r["kept"]
            print(
                f"| {r['subset']} | {a['train_images_per_second']:.3g} | {k['train_images_per_second']:.3g} | "
                f"{a['peak_rss_mib']:.0f} | {k['peak_rss_mib']:.0f} | {r['ratio']:.2f} |"
            )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return
    rows, summary = [], []
    for name in args.configs:
        pairs = []
        for t in range(args.turns):
            order = (False, True) if t % 2 == 0 else (True, False)  # neither setting always goes first
            got = {keep: turn(name, keep, args.steps, args.warmup, args.data) for keep in order}
            pairs.append(got)
            rows += [{"config": name, "turn": t, "keep_freed_memory": k, **v} for k, v in got.items()]
            print(json.dumps(rows[-2:]), flush=True)
        ratios = [p[True]["images_per_second"] / p[False]["images_per_second"] for p in pairs]
        summary.append(
            {
                "config": name,
                "default_images_per_second": statistics.median(p[False]["images_per_second"] for p in pairs),
                "kept_images_per_second": statistics.median(p[True]["images_per_second"] for p in pairs),
                "default_faults_per_step": statistics.median(p[False]["faults_per_step"] for p in pairs),
                "kept_faults_per_step": statistics.median(p[True]["faults_per_step"] for p in pairs),
                "default_peak_rss_mib": statistics.median(p[False]["peak_rss_mib"] for p in pairs),
                "kept_peak_rss_mib": statistics.median(p[True]["peak_rss_mib"] for p in pairs),
                "ratio_median": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
            }
        )
    print(
        "| configuration | img/s as it comes | img/s kept | faults/step as it comes | faults/step kept "
        "| peak RSS MiB as it comes | peak RSS MiB kept | ratio (range) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s in summary:
        print(
            f"| {s['config']} | {s['default_images_per_second']:.3g} | {s['kept_images_per_second']:.3g} | "
            f"{s['default_faults_per_step']:.0f} | {s['kept_faults_per_step']:.0f} | "
            f"{s['default_peak_rss_mib']:.0f} | {s['kept_peak_rss_mib']:.0f} | "
            f"{s['ratio_median']:.2f} ({s['ratio_range'][0]:.2f}-{s['ratio_range'][1]:.2f}) |"
        )
    if args.json:
        args.json.write_text(json.dumps({"turns": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
