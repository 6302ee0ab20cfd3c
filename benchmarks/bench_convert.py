"""Conversion throughput: hfmed's builder against the plain `datasets` route, side by side.

The plain route is what a user would write without hfmed: load the arrays with numpy, then
``Dataset.from_dict`` with the same features, then ``to_parquet``. Each route runs in its own
process so peak RSS is that route's alone. Usage:

    python benchmarks/bench_convert.py --work /tmp/bench            # breastmnist + 20,000 x 224 px RGB
    python benchmarks/bench_convert.py --work /tmp/bench --memory   # adds the >= 4 GB / 8 GB memory runs

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REAL = ROOT.parent / "shared" / "data" / "medmnist"


def run_hfmed(source: str, config: str, out: str, unofficial: bool) -> dict:
    import hfmed.writer as writer
    from loading_scripts.medmnist import MedMNIST

    card_seconds = 0.0
    write_card = writer.cards.write_card

    def timed_card(folder):  # the card is a fixed cost per config, reported apart
        nonlocal card_seconds
        t0 = time.perf_counter()
        write_card(folder)
        card_seconds += time.perf_counter() - t0

    writer.cards.write_card = timed_card
    t = time.perf_counter()
    writer.build_config(MedMNIST(config, source, unofficial=unofficial), out, progress=False)
    return {"seconds": time.perf_counter() - t, "card_seconds": card_seconds}


def run_plain(source: str, config: str, out: str, unofficial: bool) -> dict:
    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Image

    from hfmed import facts

    flag = config.split("_")[0]
    names = facts.load("medmnist")["subsets"][flag]["labels"]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    t = time.perf_counter()
    data = np.load(source)
    os.makedirs(out, exist_ok=True)
    for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        images = data[f"{prefix}_images"]
        if len(images) == 0:
            continue
        ds = Dataset.from_dict({"image": list(images), "label": data[f"{prefix}_labels"].reshape(-1)}, features=features)
        ds.to_parquet(os.path.join(out, f"{split}.parquet"))
    return {"seconds": time.perf_counter() - t}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM): unlike ru_maxrss it never inherits the parent's."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(route: str, source: str, config: str, out: str, unofficial: bool) -> dict:
    """Run one route in a fresh process; report its time, its own peak RSS and its output bytes."""
    code = (
        "import json, sys; sys.path.insert(0, %r); import bench_convert as b; "
        "r = b.run_%s(%r, %r, %r, %r); r['peak_rss_mb'] = b.peak_rss_mb(); "
        "print(json.dumps(r))" % (str(HERE), route, source, config, out, unofficial)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{route} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["bytes"] = sum(p.stat().st_size for p in Path(out).rglob("*.parquet"))
    return result


def rss_child(source: str, config: str, out: str) -> float:
    """Peak RSS (MiB) of an hfmed build alone, measured with a process of its own."""
    code = (
        "import sys; sys.path.insert(0, %r); import bench_convert as b; "
        "b.run_hfmed(%r, %r, %r, True); print(b.peak_rss_mb())"
        % (str(HERE), source, config, out)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return float(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def compare(name: str, source: str, config: str, work: Path, unofficial: bool, n_images: int) -> str:
    import shutil

    rows = {}
    for route in ("plain", "hfmed"):
        out = work / f"out-{route}-{config}"
        shutil.rmtree(out, ignore_errors=True)
        rows[route] = child(route, source, config, str(out), unofficial)
        shutil.rmtree(out, ignore_errors=True)
    p, h = rows["plain"], rows["hfmed"]
    shards_only = h["seconds"] - h["card_seconds"]
    return (
        f"| {name} | {n_images} | {n_images / p['seconds']:.0f} | {n_images / h['seconds']:.0f} | "
        f"**{p['seconds'] / h['seconds']:.2f}x** ({p['seconds'] / shards_only:.2f}x without the card's {h['card_seconds']:.2f} s) | {p['bytes'] / 1e6:.1f} | {h['bytes'] / 1e6:.1f} | "
        f"**{h['bytes'] / p['bytes']:.3f}x** | {p['peak_rss_mb']:.0f} | {h['peak_rss_mb']:.0f} |"
    )


def main() -> None:
    sys.path.insert(0, str(HERE))
    from synthetic import write_medmnist_like

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for generated files and outputs")
    ap.add_argument("--images", type=int, default=20_000, help="images in the generated 224 px file")
    ap.add_argument("--memory", action="store_true", help="also run the >= 4 GB and doubled-size memory builds")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    print(f"Machine: {machine()}\n")
    print("| input | images | plain img/s | hfmed img/s | speed-up | plain MB | hfmed MB | bytes ratio | plain peak RSS MB | hfmed peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(compare("breastmnist (real, 28 px L)", str(REAL / "breastmnist.npz"), "breastmnist", args.work, False, 780), flush=True)
    gen = args.work / "pathmnist_224.npz"
    if not gen.exists():
        write_medmnist_like(gen, args.images, 224, 3)
    print(compare("generated 224 px RGB", str(gen), "pathmnist_224", args.work, True, args.images), flush=True)

    if args.memory:
        per_image = 224 * 224 * 3
        n1 = -(-(4 * 10**9) // per_image)  # images member of at least 4 GB uncompressed
        print("\n| images member (uncompressed) | images | hfmed peak RSS MB |")
        print("|---|---|---|")
        results = []
        for n in (n1, 2 * n1):
            path = args.work / f"mem{n}" / "pathmnist_224.npz"
            path.parent.mkdir(exist_ok=True)
            if not path.exists():
                write_medmnist_like(path, n, 224, 3, seed=1)
            out = args.work / f"mem-out-{n}"
            import shutil

            shutil.rmtree(out, ignore_errors=True)
            rss = rss_child(str(path), "pathmnist_224", str(out))
            shutil.rmtree(out, ignore_errors=True)
            results.append(rss)
            print(f"| {n * per_image / 1e9:.2f} GB | {n} | {rss:.0f} |", flush=True)
        print(f"\nDoubling the file changes peak RSS by {100 * (results[1] / results[0] - 1):+.1f}%")


if __name__ == "__main__":
    main()
