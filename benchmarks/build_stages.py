"""Where a build's CPU time goes, and how many cores it can use (issue 18, conversion).

Wall-clock cores (CPU seconds / wall seconds) depend on what else runs on the machine; CPU
seconds per stage do not. This script builds one input on one thread and splits the CPU time of
that build into the stages of ``hfmed.writer``: reading the source (the prefetch thread), PNG
encoding (what the thread pool shares), and the rest of the main thread (re-batching, Arrow
tables, Parquet writing). The most cores a build can use follows (Amdahl): encoding divides
among the threads, the rest does not. Then it builds the same input with every core and reports
the cores it got, with the load average beside it. Usage:

    python benchmarks/build_stages.py --work /tmp/stages --photos 1000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def stages(source: Path, config: str, out: Path) -> dict[str, float]:
    """CPU seconds of each stage of a one-thread build."""
    from hfmed.loading_scripts.medmnist import MedMNIST

    import hfmed.writer as writer

    encode = 0.0
    encode_batch = writer.encode_batch

    def timed(*args, **kwargs):
        nonlocal encode
        t = time.thread_time()
        table = encode_batch(*args, **kwargs)
        encode += time.thread_time() - t
        return table

    writer.encode_batch = timed
    writer.cards.write_card = lambda folder, repo_id=None: None
    shutil.rmtree(out, ignore_errors=True)
    process, main = time.process_time(), time.thread_time()
    writer.build_config(MedMNIST(config, source, unofficial=True), out, threads=1, progress=False)
    process, main = time.process_time() - process, time.thread_time() - main
    writer.encode_batch = encode_batch
    shutil.rmtree(out, ignore_errors=True)
    return {"total": process, "encode": encode, "main_other": main - encode, "reader": process - main}


def all_cores(source: Path, config: str, out: Path) -> tuple[float, float, float]:
    from hfmed.loading_scripts.medmnist import MedMNIST

    import hfmed.writer as writer

    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    writer.build_config(MedMNIST(config, source, unofficial=True), out, progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    shutil.rmtree(out, ignore_errors=True)
    return wall, cpu, load


def main() -> None:
    import realistic

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--photos", type=int, default=1000)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    photos = args.work / "pathmnist_224.npz"
    if not photos.exists():
        realistic.photos_224(photos, args.photos)
    b224 = args.work / "breastmnist_224.npz"
    if not b224.exists():
        realistic.breastmnist_224(b224)
    cores = os.cpu_count() or 1
    print(
        "| input | CPU s, one thread | encode | reader thread | rest of main thread | "
        f"most cores with {cores} threads | cores got with {cores} threads (load "
        "average) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, source, config in (
        ("breastmnist resized to 224 px L", b224, "breastmnist_224"),
        (f"{args.photos} photo tiles, 224 px RGB", photos, "pathmnist_224"),
    ):
        s = stages(source, config, args.work / "out")
        # the reader runs beside the main thread; encoding divides among the threads, the rest does not
        bound = s["total"] / max(s["encode"] / cores + s["main_other"], s["reader"])
        wall, cpu, load = all_cores(source, config, args.work / "out")
        print(
            f"| {name} | {s['total']:.2f} | {s['encode']:.2f} "
            f"({s['encode'] / s['total']:.0%}) | {s['reader']:.2f} | {s['main_other']:.2f} "
            "| "
            f"{min(bound, cores):.2f} | {cpu / wall:.2f} ({load:.1f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
