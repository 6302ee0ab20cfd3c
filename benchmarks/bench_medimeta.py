"""MedIMeta conversion: `hfmed build medimeta` against the plain `datasets` route, side by side.

    python benchmarks/bench_medimeta.py --work /tmp/medimeta_bench [--images 20000] [--threads N]

Generates once (then reuses) ``<work>/source/crc``: a MedIMeta dataset folder in the official
layout (images.hdf5, task_labels/, splits/ and original_splits/ in shuffled order,
annotations.csv with patient_id, info.yaml, LICENSE) from the real crc info.yaml, with its counts
scaled to ``--images`` 224x224 RGB images. The pixels come from ``benchmarks/synthetic.py``, the
same photograph-like fields as the MedMNIST benchmark, so PNG sizes resemble real images.

Both routes run in a process of their own, so each peak RSS (VmHWM) is that route's alone:

- hfmed: ``build_config(MedIMeta("crc", source), out)``, exactly what ``hfmed build`` runs
  (shards, then the card and its montage; the card's seconds are reported apart too);
- plain: what one writes without hfmed, as in ``bench_convert.py``: read the arrays (h5py, numpy,
  csv), map label keys to ids, ``Dataset.from_dict`` with the same features, ``to_parquet``.

Prints a Markdown table (throughput, output bytes, peak RSS, CPU seconds, ratios) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATASET = "crc"
INFO_FILE = ROOT.parent / "shared" / "data" / "medimeta_info" / f"{DATASET}.yaml"
SPLITS = (("train", "train"), ("validation", "val"), ("test", "test"))


def generate(work: Path, n: int) -> Path:
    """The source folder holding ``crc/``; generated unless a complete one of ``n`` images is there."""
    sys.path[:0] = [str(ROOT / "tests"), str(HERE)]
    import yaml
    from medimeta_fixtures import make_medimeta_folder, proportional
    from synthetic import images

    source = work / "source"
    done = source / ".complete"
    if done.is_file() and done.read_text() == str(n):
        return source
    shutil.rmtree(source, ignore_errors=True)
    real = yaml.safe_load(INFO_FILE.read_text(encoding="utf-8"))["splits_num_samples"]
    sizes = dict(zip(("train", "val", "test"), proportional(n, [real[s] for _, s in SPLITS])))
    stream = images(n, 224, 3, seed=0, chunk=256)
    t = time.perf_counter()
    make_medimeta_folder(
        source, INFO_FILE, sizes, seed=0, tiff=False, images=lambda rng, k, shape: next(stream), chunk=256
    )
    done.write_text(str(n))
    print(f"generated {n} images in {time.perf_counter() - t:.0f} s: {source / DATASET}", file=sys.stderr)
    return source


def run_hfmed(source: str, out: str, threads: int | None) -> dict:
    from hfmed.loading_scripts.medimeta import MedIMeta

    import hfmed.writer as writer

    card_seconds = 0.0
    write_card = writer.cards.write_card

    def timed_card(folder, *args, **kwargs):
        nonlocal card_seconds
        t0 = time.perf_counter()
        write_card(folder, *args, **kwargs)
        card_seconds += time.perf_counter() - t0

    writer.cards.write_card = timed_card
    t = time.perf_counter()
    writer.build_config(MedIMeta(DATASET, source), out, threads=threads, progress=False)
    return {"seconds": time.perf_counter() - t, "card_seconds": card_seconds}


def run_plain(source: str, out: str, threads: int | None) -> dict:
    import csv

    import h5py
    import numpy as np
    import yaml
    from datasets import ClassLabel, Dataset, Features, Image, List, Value
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    t = time.perf_counter()
    folder = Path(source) / DATASET
    info = yaml.safe_load((folder / "info.yaml").read_text(encoding="utf-8"))
    columns, labels, key_to_id = {"image": Image()}, {}, {}
    for task in info["tasks"]:
        keys = sorted(task["labels"])
        label = ClassLabel(names=[task["labels"][k] for k in keys])
        multi = task["task_target"] == "MULTILABEL_CLASSIFICATION"
        columns[task["task_name"]] = List(label) if multi else label
        labels[task["task_name"]] = np.load(folder / "task_labels" / f"{task['task_name']}.npy")
        key_to_id[task["task_name"]] = None if multi else {k: i for i, k in enumerate(keys)}
    columns["patient_id"] = Value("string")
    features = Features(columns)
    with open(folder / "annotations.csv", newline="", encoding="utf-8") as f:
        patient = {int(r["filepath"][7:-5]): r["patient_id"] for r in csv.DictReader(f)}
    with h5py.File(folder / "images.hdf5", "r") as f:
        images = f["images"][:]
    os.makedirs(out, exist_ok=True)
    for split, stem in SPLITS:
        path = folder / "splits" / f"{stem}.txt"
        if not path.exists():
            continue
        idx = [int(line[7:-5]) for line in path.read_text().split("\n")]
        data = {"image": list(images[idx])}
        for name, values in labels.items():
            mapping = key_to_id[name]
            data[name] = (
                [np.flatnonzero(values[i]).tolist() for i in idx]
                if mapping is None
                else [mapping[int(values[i])] for i in idx]
            )
        data["patient_id"] = [patient[i] for i in idx]
        Dataset.from_dict(data, features=features).to_parquet(os.path.join(out, f"{split}.parquet"))
    return {"seconds": time.perf_counter() - t}


def peak_rss_kb() -> int:
    """This process's peak RSS since exec (VmHWM): ru_maxrss would also count the parent's pages at fork."""
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))


def child(route: str, source: Path, out: Path, threads: int | None) -> dict:
    """One route in a fresh process: its seconds, its own peak RSS, its Parquet bytes."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import json, resource, sys; sys.path[:0] = [%r, %r]; import bench_medimeta as b; "
        "r = b.run_%s(%r, %r, %r); u = resource.getrusage(resource.RUSAGE_SELF); "
        "r['peak_rss_mb'] = b.peak_rss_kb() / 1024; r['cpu_seconds'] = u.ru_utime + u.ru_stime; "
        "print(json.dumps(r))" % (str(HERE), str(ROOT), route, str(source), str(out), threads)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{route} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    files = sorted(out.rglob("*.parquet"))
    result["bytes"] = sum(p.stat().st_size for p in files)
    result["files"] = len(files)
    return result


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description="MedIMeta conversion: hfmed against the plain datasets route")
    ap.add_argument(
        "--work", type=Path, required=True, help="scratch folder outside the repository (source and outputs)"
    )
    ap.add_argument("--images", type=int, default=20_000, help="images in the generated crc folder")
    ap.add_argument("--threads", type=int, help="hfmed encoding threads (default: all cores)")
    ap.add_argument("--keep", action="store_true", help="keep both outputs under --work")
    args = ap.parse_args()
    work = args.work.resolve()
    if work == ROOT or ROOT in work.parents:
        ap.error("--work must be outside the repository")
    work.mkdir(parents=True, exist_ok=True)
    source = generate(work, args.images)
    print(f"Machine: {machine()}; load average before the runs: {os.getloadavg()[0]:.2f}\n")
    rows = {}
    for route in ("plain", "hfmed"):
        out = work / f"out-{route}"
        rows[route] = child(route, source, out, args.threads)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    p, h, n = rows["plain"], rows["hfmed"], args.images
    shards_only = h["seconds"] - h["card_seconds"]
    print(
        "| input | images | plain img/s | hfmed img/s | speed-up | plain MB | hfmed MB "
        "| bytes ratio | plain peak RSS MB | hfmed peak RSS MB | plain CPU s | hfmed "
        "CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| generated MedIMeta folder (crc layout, 224 px RGB, images.hdf5) | {n} | "
        f"{n / p['seconds']:.0f} | {n / h['seconds']:.0f} | "
        f"**{p['seconds'] / h['seconds']:.2f}x** ({p['seconds'] / shards_only:.2f}x "
        f"without the card's {h['card_seconds']:.2f} s) | "
        f"{p['bytes'] / 1e6:.1f} | {h['bytes'] / 1e6:.1f} | "
        f"**{h['bytes'] / p['bytes']:.3f}x** | {p['peak_rss_mb']:.0f} | "
        f"{h['peak_rss_mb']:.0f} | "
        f"{p['cpu_seconds']:.0f} | {h['cpu_seconds']:.0f} |"
    )
    print(
        f"\nLoad average after the runs: {os.getloadavg()[0]:.2f} (CPU seconds, all "
        "threads of each process, are less sensitive to other load than wall time)"
    )
    print("\n" + json.dumps({"images": n, "plain": p, "hfmed": h}))


if __name__ == "__main__":
    main()
