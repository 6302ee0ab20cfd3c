"""Parquet layouts side by side on real builds: bytes, build time, read time (issue 18, part 3).

Each layout of ``hfmed.parquet_options.VARIANTS`` builds the same inputs in one run, in turn:
today's writer (zstd over PNG bytes), ``datasets``' own Hub defaults (image bytes uncompressed,
snappy + dictionaries elsewhere, page index, content-defined chunking) and two mixes. For each
build: Parquet bytes, build wall and CPU seconds, and the time to read the train split through
``hfmed.loaders`` (streaming, one process, uint8, as training reads it) and through plain
``datasets`` (``load_dataset(..., streaming=True)``, every row decoded). Usage:

    python benchmarks/bench_parquet.py --work /tmp/bp --photos 2000

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))


READS = 3


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(variant: str, source: str, config: str, out: str) -> dict:
    """Build one config with one layout, then read its train split both ways (in this process)."""
    import torch
    from hfmed.loading_scripts.medmnist import MedMNIST

    from hfmed import parquet_options, writer

    parquet_options.CHOSEN = variant
    write_card = writer.cards.write_card
    writer.cards.write_card = lambda folder, repo_id=None: None  # the card is the same for every layout
    t, c = time.perf_counter(), _cpu()
    writer.build_config(MedMNIST(config, source, unofficial=True), out, progress=False)
    build_s, build_cpu = time.perf_counter() - t, _cpu() - c
    write_card(out)  # loaders and datasets read the card's configs
    files = sorted(Path(out).rglob("*.parquet"))
    result = {"bytes": sum(p.stat().st_size for p in files), "build_s": build_s, "build_cpu": build_cpu}

    from hfmed import loaders

    torch.set_num_threads(1)

    def hfmed_read() -> int:
        n = 0
        for batch in loaders.dataloader(
            out, config, split="train", batch_size=256, streaming=True, dtype=torch.uint8, progress=False
        ):
            n += len(batch["labels"])
        return n

    import datasets
    from datasets import load_dataset

    datasets.disable_progress_bars()

    def datasets_read() -> int:
        m = 0
        for row in load_dataset(out, config, split="train", streaming=True):
            for value in row.values():
                if hasattr(value, "load"):
                    value.load()
            m += 1
        return m

    for name, read in (("hfmed", hfmed_read), ("datasets", datasets_read)):
        walls, cpus = [], []
        for _ in range(READS):  # the best of a few: other jobs on the machine only ever add time
            t, c = time.perf_counter(), _cpu()
            n = read()
            walls.append(time.perf_counter() - t)
            cpus.append(_cpu() - c)
        result[f"{name}_read_s"], result[f"{name}_read_cpu"] = min(walls), min(cpus)
    result["rows"] = n
    return result


def child(variant: str, source: str, config: str, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    call = f"b.measure({variant!r}, {source!r}, {config!r}, {str(out)!r})"
    code = f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_parquet as b; print(json.dumps({call}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"{variant} on {config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import realistic
    from bench_convert import machine

    from hfmed.parquet_options import VARIANTS

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--photos", type=int, default=2000, help="photo tiles in the 224 px RGB input")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    b224 = args.work / "breastmnist_224.npz"
    if not b224.exists():
        realistic.breastmnist_224(b224)
    photos = args.work / "pathmnist_224.npz"
    if not photos.exists():
        realistic.photos_224(photos, args.photos)
    inputs = [
        ("breastmnist, real, 28 px L", str(realistic.REAL / "breastmnist.npz"), "breastmnist"),
        ("breastmnist resized to 224 px L", str(b224), "breastmnist_224"),
        (f"{args.photos} photo tiles, 224 px RGB", str(photos), "pathmnist_224"),
        ("adrenalmnist3d, real, 28^3", str(realistic.REAL / "adrenalmnist3d.npz"), "adrenalmnist3d"),
    ]
    import os

    print(f"Machine: {machine()}; load average at start {os.getloadavg()[0]:.1f} (shared with other jobs)\n")
    print(
        "| input | layout | MB | bytes vs today | build s (CPU s) | hfmed.loaders read "
        "s (CPU s) | datasets read s (CPU s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, source, config in inputs:
        base = None
        for variant in VARIANTS:
            r = child(variant, source, config, args.work / f"out-{variant}")
            base = base or r
            print(
                f"| {name} | {variant} | {r['bytes'] / 1e6:.2f} | "
                f"{r['bytes'] / base['bytes']:.3f}x | {r['build_s']:.2f} ({r['build_cpu']:.2f}) "
                "| "
                f"{r['hfmed_read_s']:.2f} ({r['hfmed_read_cpu']:.2f}) | "
                f"{r['datasets_read_s']:.2f} ({r['datasets_read_cpu']:.2f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
