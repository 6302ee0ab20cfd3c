"""Conversion throughput: hfmed's builder against the plain `datasets` route, side by side.

The plain route is what a user would write without hfmed: load the arrays with numpy, then
``Dataset.from_dict`` with the same features, then ``to_parquet`` (Pillow encodes each PNG, one
thread). ``hfmed-pillow`` is hfmed's builder with Pillow as the encoder on hfmed's threads, which
shows what ``hfmed/png.py`` itself is worth. Each route runs in its own process, so peak RSS and
CPU seconds are that route's alone; cores = CPU seconds / wall seconds. Inputs are real pictures
(``benchmarks/realistic.py``): BreastMNIST as shipped and resized to 224 px, and tiles of
scikit-learn's sample photographs at 224 px RGB. Usage:

    python benchmarks/bench_convert.py --work /tmp/bench --photos 2000
    python benchmarks/bench_convert.py --work /tmp/bench --micro    # per-image encode/decode, one thread
    python benchmarks/bench_convert.py --work /tmp/bench --memory   # adds the >= 4 GB / 8 GB memory runs

Prints Markdown tables for BENCHMARKS.md.
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
    from hfmed.loading_scripts.medmnist import MedMNIST

    import hfmed.writer as writer

    card_seconds = 0.0
    write_card = writer.cards.write_card

    def timed_card(folder):  # the card is a fixed cost per config, reported apart
        nonlocal card_seconds
        t0 = time.perf_counter()
        write_card(folder)
        card_seconds += time.perf_counter() - t0

    writer.cards.write_card = timed_card
    t, c = time.perf_counter(), time.process_time()  # process time: every thread of this process
    writer.build_config(MedMNIST(config, source, unofficial=unofficial), out, progress=False)
    return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c, "card_seconds": card_seconds}


def run_hfmed_pillow(source: str, config: str, out: str, unofficial: bool) -> dict:
    """hfmed's builder with each image encoded by Pillow (what datasets does), on the same threads."""
    from hfmed import features

    features._encode_slice = pillow_pngs
    return run_hfmed(source, config, out, unofficial)


def pillow_pngs(images) -> list[bytes]:
    import io

    from PIL import Image

    out = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")  # Pillow's defaults, as datasets' Image feature encodes
        out.append(buf.getvalue())
    return out


def run_plain(source: str, config: str, out: str, unofficial: bool) -> dict:
    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Image

    from hfmed import facts

    flag = config.split("_")[0]
    names = facts.load("medmnist")["subsets"][flag]["labels"]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    t, c = time.perf_counter(), time.process_time()
    data = np.load(source)
    os.makedirs(out, exist_ok=True)
    for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        images = data[f"{prefix}_images"]
        if len(images) == 0:
            continue
        ds = Dataset.from_dict(
            {"image": list(images), "label": data[f"{prefix}_labels"].reshape(-1)}, features=features
        )
        ds.to_parquet(os.path.join(out, f"{split}.parquet"))
    return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c}


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
        "r = b.run_%s(%r, %r, %r, %r); r['peak_rss_mb'] = b.peak_rss_mb(); print(json.dumps(r))"
        % (str(HERE), route.replace("-", "_"), source, config, out, unofficial)
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
        "b.run_hfmed(%r, %r, %r, True); print(b.peak_rss_mb())" % (str(HERE), source, config, out)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return float(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


ROUTES = ("plain", "hfmed", "hfmed-pillow")


def compare(name: str, source: str, config: str, work: Path, unofficial: bool, n_images: int) -> str:
    import shutil

    rows = {}
    for route in ROUTES:
        out = work / f"out-{route}-{config}"
        shutil.rmtree(out, ignore_errors=True)
        rows[route] = child(route, source, config, str(out), unofficial)
        shutil.rmtree(out, ignore_errors=True)
    p, h, hp = rows["plain"], rows["hfmed"], rows["hfmed-pillow"]

    def cores(r: dict) -> str:
        return f"{r['cpu_seconds']:.1f} s, {r['cpu_seconds'] / r['seconds']:.2f}"

    return (
        f"| {name} | {n_images} | {n_images / p['seconds']:.0f} | "
        f"{n_images / hp['seconds']:.0f} | {n_images / h['seconds']:.0f} | "
        f"**{p['seconds'] / h['seconds']:.2f}x** | {hp['seconds'] / h['seconds']:.2f}x "
        f"| {p['bytes'] / 1e6:.1f} | {h['bytes'] / p['bytes']:.3f}x | "
        f"{h['bytes'] / hp['bytes']:.3f}x | "
        f"{cores(p)} | {cores(hp)} | {cores(h)} | {h['card_seconds']:.2f} | "
        f"{p['peak_rss_mb']:.0f} / {h['peak_rss_mb']:.0f} |"
    )


def micro(name: str, images, repeat: int = 3) -> str:
    """One thread: CPU ms per image to encode with png.py and with Pillow, bytes, and Pillow's decode of each."""
    import io
    import time

    from PIL import Image

    from hfmed import png

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        return min(times) / len(images) * 1000

    ours, theirs = png.encode_batch(images), pillow_pngs(images)

    def decode(blobs):
        for b in blobs:
            Image.open(io.BytesIO(b)).load()

    enc_ours, enc_pil = best(lambda: png.encode_batch(images)), best(lambda: pillow_pngs(images))
    dec_ours, dec_pil = best(lambda: decode(ours)), best(lambda: decode(theirs))
    return (
        f"| {name} | {len(images)} | {enc_pil:.2f} | {enc_ours:.2f} | "
        f"**{enc_pil / enc_ours:.2f}x** | "
        f"{sum(map(len, ours)) / sum(map(len, theirs)):.3f}x | "
        f"{dec_pil:.2f} | {dec_ours:.2f} | {dec_pil / dec_ours:.2f}x |"
    )


def main() -> None:
    sys.path.insert(0, str(HERE))

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for generated files and outputs")
    ap.add_argument("--photos", type=int, default=2000, help="photo tiles in the 224 px RGB input")
    ap.add_argument("--micro", action="store_true", help="per-image encode and decode on one thread, instead of builds")
    ap.add_argument("--memory", action="store_true", help="also run the >= 4 GB and doubled-size memory builds")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import PIL.features
    import realistic

    print(
        f"Machine: {machine()}; load average at start {os.getloadavg()[0]:.1f} (shared "
        f"with other jobs); Pillow {PIL.__version__} with zlib-ng "
        f"{PIL.features.version_feature('zlib_ng')}\n"
    )
    b224 = args.work / "breastmnist_224.npz"
    if not b224.exists():
        realistic.breastmnist_224(b224)
    photos = args.work / f"photos{args.photos}" / "pathmnist_224.npz"
    photos.parent.mkdir(exist_ok=True)
    if not photos.exists():
        realistic.photos_224(photos, args.photos)
    if args.micro:
        print(
            "| input | images | Pillow encode ms | png.py encode ms | png.py faster | "
            "bytes png.py / Pillow | Pillow decode ms of Pillow's | of png.py's | decode "
            "faster |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print(micro("breastmnist resized to 224 px L", np.load(b224)["train_images"][:300]), flush=True)
        print(micro("photo tiles, 224 px RGB", np.load(photos)["train_images"][:300]), flush=True)
        return
    print(
        "| input | images | plain img/s | hfmed-pillow img/s | hfmed img/s | hfmed vs "
        "plain | hfmed vs hfmed-pillow | plain MB | hfmed bytes / plain | hfmed / "
        "hfmed-pillow | plain CPU s, cores | hfmed-pillow CPU s, cores | hfmed CPU s, "
        "cores | card s | peak RSS MB plain / hfmed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        compare("breastmnist (real, 28 px L)", str(REAL / "breastmnist.npz"), "breastmnist", args.work, False, 780),
        flush=True,
    )
    print(compare("breastmnist resized to 224 px L", str(b224), "breastmnist_224", args.work, True, 780), flush=True)
    print(compare("photo tiles, 224 px RGB", str(photos), "pathmnist_224", args.work, True, args.photos), flush=True)

    if args.memory:
        from synthetic import write_medmnist_like  # memory depends on sizes, not content: generated images serve

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
