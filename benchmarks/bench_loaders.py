"""Batches per second: medmnist's in-memory loader, the plain ``datasets`` route, and hfmed.loaders.

Side by side, in one run, on the same data: a pneumoniamnist build at 28 px with the official
split sizes, and a generated 224 px build (20,000 training images, 5,000 each for validation and
test). Content is derived from real 28 px scans (see ``realistic_images``), so PNG compresses it
about as much as real ones. Each case runs in a fresh process (so no loader inherits another's
memory or threads), skips its first batches (worker start-up, prefetch fill) and then times whole
epochs, with persistent workers; ``--repeat`` rounds of every case, medians in the table. Every case runs
with ``torch.set_num_threads(1)``, as DataLoader workers do: on a small machine, intra-op threads
in the main process fight everything else (medmnist's 0-worker loader ran 3x slower with them).

The loaders compared, all yielding float32 ``(B, 1, H, W)`` in [0, 1] plus labels:

- medmnist: ``medmnist.PneumoniaMNIST(split="train", root=..., size=..., download=False,
  transform=ToTensor())`` in a torch ``DataLoader(shuffle=True)`` (the arrays decoded in memory,
  one image per ``__getitem__``, ``default_collate``); only its ``__len__``, which asserts the
  official row count, is overridden for the larger 224 px file;
- datasets: ``load_dataset(folder, config, split="train", streaming=True).with_format("torch")``
  in a ``DataLoader``, uint8 -> float in the collate. Not shuffled, unlike the other two: in
  ``datasets`` 5.2 a shuffled stream sleeps 5 s at the end of every pass
  (``config.SLEEP_TIME_ON_THREADS_SHUTDOWN``), which would dominate these epochs; so this is the
  route at its fastest, and the ratios against it are conservative;
- hfmed: ``hfmed.loaders.dataloader(folder, config, shuffle=True, ...)``, streaming (PNG decoded
  every epoch); plus ``dtype=torch.uint8`` (what crosses to an accelerator) and ``streaming=False``
  (decoded once into the local pixel cache; its one-off preparation time is reported apart).

Peak RSS of hfmed's loader is then measured on the 224 px validation and train splits (5,000 and
20,000 rows): main process and largest worker, from ``getrusage``.

Setup, once: medmnist needs torchvision, which is not a dependency of hfmed and whose PyPI wheel
does not import beside the project's torch 2.13, so the benchmark has its own environment::

    python3 -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 medmnist
    /tmp/benchvenv/bin/pip install -e ".[test]"  # hfmed, its dependencies, pytest (the data helpers)

Run (generates and builds the data under --work on first use, ~5 GB)::

    /tmp/benchvenv/bin/python benchmarks/bench_loaders.py --work /tmp/hfmed-bench

``--gpu`` measures instead what the issue asks of an accelerator: ViT-B/16 at 224 px in bf16,
training images per second fed by hfmed's loader (``device="cuda"``: uint8 batches, resize and
normalise on the GPU) against the same model fed synthetic tensors already on the GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REAL_28PX = ROOT.parent / "shared" / "data" / "medmnist" / "breastmnist.npz"
FLAG = "pneumoniamnist"
LARGE = {"train": 20_000, "val": 5_000, "test": 5_000}
LOADERS = ("medmnist", "datasets", "hfmed", "hfmed-uint8", "hfmed-cached")
RSS_BUFFER = 1000  # rows; smaller than both splits measured, so both hold a full shuffle buffer
SETUP = __doc__[__doc__.index("Setup, once") : __doc__.index("Run (generates")]


# --- data ---------------------------------------------------------------------------------------


def _seed_images() -> np.ndarray:
    """Real 28 px scans to derive realistic content from (BreastMNIST, all splits), else smooth fields."""
    if REAL_28PX.exists():
        with np.load(REAL_28PX) as z:
            return np.concatenate([z[f"{s}_images"] for s in ("train", "val", "test")])
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    out = []
    for _ in range(512):
        a, b, c = rng.normal(size=3)
        field = 128 + 60 * np.sin(3 * a * xx + 2 * b * yy) + 40 * c * (xx - 0.5) * (yy - 0.5)
        out.append(field + rng.normal(0, 6, (28, 28)))
    return np.clip(out, 0, 255).astype(np.uint8)


def realistic_images(n: int, size: int, seed: int) -> np.ndarray:
    """Distinct images with the statistics of real scans: flipped, shifted, gamma-varied real 28 px
    images; at larger sizes upsampled bicubically, with sensor-like noise so PNG does not see a
    blur (the result compresses to about what real MedMNIST+ scans do, not to nothing)."""
    import torch
    import torch.nn.functional as F

    base = _seed_images()
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), dtype=np.uint8)
    for start in range(0, n, 512):
        m = min(512, n - start)
        pick = base[rng.integers(0, len(base), m)].astype(np.float32)
        flip = rng.random(m) < 0.5
        pick[flip] = pick[flip, :, ::-1]
        shifts = rng.integers(-3, 4, (m, 2))
        pick = np.stack([np.roll(p, tuple(s), axis=(0, 1)) for p, s in zip(pick, shifts)])
        gamma = rng.uniform(0.8, 1.25, (m, 1, 1)).astype(np.float32)
        pick = 255.0 * (pick / 255.0) ** gamma
        if size != 28:
            t = F.interpolate(torch.from_numpy(pick)[:, None], size=(size, size), mode="bicubic", align_corners=False)[:, 0].numpy()
            pick = t + rng.normal(0, 3.0, t.shape).astype(np.float32)
        out[start : start + m] = np.clip(np.rint(pick), 0, 255).astype(np.uint8)
    return out


def make_data(work: Path) -> dict[int, dict]:
    """The two npz files (medmnist's input) and their hfmed builds (everyone else's)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_npz

    from hfmed import facts
    from hfmed.writer import build_config
    from loading_scripts.medmnist import MedMNIST

    official = facts.load("medmnist")["subsets"][FLAG]["splits"]
    plans = {28: {"train": official["train"], "val": official["validation"], "test": official["test"]}, 224: LARGE}
    npz_dir, out = work / "npz", work / "medmnist"
    npz_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for size, rows in plans.items():
        config = FLAG if size == 28 else f"{FLAG}_{size}"
        path = npz_dir / f"{config}.npz"
        if not path.exists():
            print(f"generating {path} ({sum(rows.values())} images at {size} px)", file=sys.stderr)
            members = {}
            for i, (split, n) in enumerate(rows.items()):
                members[f"{split}_images"] = realistic_images(n, size, seed=size + i)
                members[f"{split}_labels"] = np.random.default_rng(i).integers(0, 2, (n, 1), dtype=np.uint8)
            tmp = path.with_suffix(".tmp")
            write_npz(tmp, members, [f"{s}_images" for s in rows] + [f"{s}_labels" for s in rows])
            tmp.rename(path)
        if not (out / config).is_dir():
            print(f"building {out / config}", file=sys.stderr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build_config(MedMNIST(config, path, unofficial=True), out, progress=False)
        shards = sorted((out / config).glob("train-*.parquet"))
        png_bytes = sum(p.stat().st_size for p in shards)
        result[size] = {"config": config, "npz": str(path), "rows": rows, "train_shards": len(shards), "png_bytes_per_image": png_bytes / rows["train"]}
    return result


# --- one case, in its own process ---------------------------------------------------------------


def _float_collate(batch):
    import torch
    from torch.utils.data import default_collate

    out = default_collate(batch)
    out["image"] = out["image"].to(torch.float32).div_(255)
    return out


def _loader(case: dict):
    """(iterable, set_epoch) for one case; construction is not timed."""
    import torch
    from torch.utils.data import DataLoader

    kind, workers, batch = case["kind"], case["workers"], case["batch"]
    persistent = {"persistent_workers": True} if workers else {}
    if kind == "medmnist":
        import medmnist
        from torchvision.transforms import ToTensor

        class PneumoniaMNIST(medmnist.PneumoniaMNIST):
            # medmnist's __len__ asserts the official row count; the 224 px file is larger on purpose.
            # Everything that loads an example (__init__, __getitem__) is medmnist's own.
            def __len__(self):
                return self.imgs.shape[0]

        ds = PneumoniaMNIST(split=case["split"], root=case["npz_dir"], size=case["size"], download=False, transform=ToTensor())
        dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0), **persistent)
        return dl, lambda e: None
    if kind == "datasets":
        from datasets import load_dataset

        # No .shuffle(): in datasets 5.2 a shuffled stream sleeps 5 s (SLEEP_TIME_ON_THREADS_SHUTDOWN)
        # when each pass ends, which would dominate an epoch here; unshuffled is its fastest route.
        ds = load_dataset(case["build"], case["config"], split=case["split"], streaming=True).with_format("torch")
        dl = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=_float_collate, **persistent)
        return dl, ds.set_epoch
    from hfmed import loaders

    options = {"hfmed": {}, "hfmed-uint8": {"dtype": torch.uint8}, "hfmed-cached": {"streaming": False, "cache_dir": case["cache_dir"]}}[kind]
    options.update(case.get("hfmed", {}))
    dl = loaders.dataloader(
        case["build"], case["config"], split=case["split"], batch_size=batch, num_workers=workers, shuffle=True, progress=False, **persistent, **options
    )
    return dl, dl.set_epoch


def run_case(case: dict) -> dict:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)  # as in DataLoader workers; see the module docstring
    t = time.perf_counter()
    loader, set_epoch = _loader(case)
    setup_s = time.perf_counter() - t
    if not case["epochs"]:
        return {**case, "setup_s": setup_s}
    warmup, seen, images, batches = case["warmup"], 0, 0, 0
    start = None
    for epoch in range(case["epochs"]):
        set_epoch(epoch)
        for batch in loader:
            seen += 1
            if seen == warmup:
                start = time.perf_counter()
            elif seen > warmup:
                labels = batch[1] if isinstance(batch, (list, tuple)) else batch.get("labels", batch.get("label"))
                images += len(labels)
                batches += 1
    elapsed = time.perf_counter() - start
    del loader, set_epoch  # stops the workers, so that their peak memory is counted below
    gc.collect()
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {**case, "setup_s": setup_s, "seconds": elapsed, "images": images, "batches": batches,
            "images_per_s": images / elapsed, "batches_per_s": batches / elapsed, "peak_rss_mb": self_rss, "peak_worker_rss_mb": child_rss}


def spawn(case: dict, timeout: float) -> dict:
    done = subprocess.run([sys.executable, __file__, "--run-case", json.dumps(case)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode:
        return {**case, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report ---------------------------------------------------------------------------------


def machine() -> dict:
    import datasets
    import PIL
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    try:
        import medmnist

        mm = medmnist.__version__
    except ImportError:
        mm = "not installed"
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": round(mem / 2**20, 1), "python": platform.python_version(), "torch": torch.__version__,
            "datasets": datasets.__version__, "pillow": PIL.__version__, "medmnist": mm, "loadavg_at_start": os.getloadavg()[0]}


def _median(runs: list[dict]) -> dict:
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["images_per_s"])
    if not ok:
        return runs[0]
    mid = ok[len(ok) // 2]
    return {**mid, "runs": len(ok), "low": ok[0]["images_per_s"], "high": ok[-1]["images_per_s"]}


def table(results: list[dict]) -> str:
    """Median of the repeats per case; ratios are of medians, at the same size and worker count."""
    cases: dict[tuple, list[dict]] = {}
    for r in results:
        cases.setdefault((r["size"], r["workers"], r["kind"]), []).append(r)
    medians = {k: _median(v) for k, v in cases.items()}
    lines = ["| size | workers | loader | images/s (median) | range | batches/s | x datasets | x medmnist |", "|---|---|---|---|---|---|---|---|"]
    for (size, workers, kind), r in medians.items():
        if "error" in r:
            lines.append(f"| {size} px | {workers} | {kind} | failed: {r['error']} | | | | |")
            continue
        ratios = []
        for ref in ("datasets", "medmnist"):
            other = medians.get((size, workers, ref))
            ratios.append(f"{r['images_per_s'] / other['images_per_s']:.2f}" if other and "error" not in other else "-")
        spread = f"{r['low']:,.0f}-{r['high']:,.0f}" if r["runs"] > 1 else "-"
        lines.append(f"| {size} px | {workers} | {kind} | {r['images_per_s']:,.0f} | {spread} | {r['batches_per_s']:.2f} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


def main_cpu(args) -> None:
    work = args.work.resolve()
    data = make_data(work)
    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    for size, d in data.items():
        print(f"data {size} px: {d['config']} train {d['rows']['train']} images, {d['train_shards']} shard(s), {d['png_bytes_per_image']:,.0f} PNG bytes/image", flush=True)
    results = []
    for rep in range(args.repeat):  # whole rounds, so that a busy spell on the machine hits every loader alike
        for size in args.sizes:
            d = data[size]
            epochs = max(1, math.ceil(args.min_images / d["rows"]["train"]))
            for workers in args.workers:
                for kind in args.loaders:
                    case = {"kind": kind, "size": size, "workers": workers, "batch": args.batch_size, "split": "train", "epochs": epochs, "warmup": args.warmup,
                            "config": d["config"], "build": str(work / "medmnist"), "npz_dir": str(work / "npz"), "cache_dir": str(work / "cache")}
                    if kind == "hfmed-cached" and rep == 0:  # the one-off decoding into the cache is timed apart
                        prep = spawn({**case, "epochs": 0}, args.timeout)
                        if "error" not in prep:
                            print(f"  pixel cache for {size} px ready after {prep['setup_s']:.1f} s", flush=True)
                    r = spawn(case, args.timeout)
                    results.append(r)
                    shown = r.get("error") or f"{r['images_per_s']:,.0f} images/s, {r['batches_per_s']:.2f} batches/s"
                    print(f"  round {rep + 1}: {size} px, {workers} workers, {kind}: {shown}", flush=True)
    print("\n" + table(results))
    if args.rss:
        print(f"\nPeak RSS of hfmed's loader (streaming, 224 px, 2 workers, shuffle_buffer={RSS_BUFFER} rows, one epoch), by split size:\n")
        print("| split | rows | main process MB | largest worker MB |\n|---|---|---|---|")
        for split, rows in (("validation", LARGE["val"]), ("train", LARGE["train"])):
            case = {"kind": "hfmed", "size": 224, "workers": 2, "batch": args.batch_size, "split": split, "epochs": 1, "warmup": 1, "hfmed": {"shuffle_buffer": RSS_BUFFER}, "purpose": "rss",
                    "config": data[224]["config"], "build": str(work / "medmnist"), "npz_dir": str(work / "npz"), "cache_dir": str(work / "cache")}
            r = spawn(case, args.timeout)
            results.append(r)
            print(f"| {split} | {rows:,} | {r.get('peak_rss_mb', float('nan')):,.0f} | {r.get('peak_worker_rss_mb', float('nan')):,.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "data": data, "results": results}, indent=1))


# --- on an accelerator --------------------------------------------------------------------------


def main_gpu(args) -> None:
    """ViT-B/16, 224 px, bf16: train images/s fed by hfmed vs fed synthetic tensors on the device."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from hfmed import loaders
    from synthetic import seconds_on_one_batch, synchronize, training_step

    device = torch.device(args.device)
    work = args.work.resolve()
    data = make_data(work)
    d = data[224]
    config = ViTConfig() if not args.tiny else ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.num_labels = 2
    model = ViTForImageClassification(config).to(device).train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    step = training_step(model, optim, device, bf16=True)

    b = args.batch_size
    pixels = torch.randn(b, 3, 224, 224, device=device)
    labels = torch.randint(0, 2, (b,), device=device)
    synthetic = args.steps * b / seconds_on_one_batch(step, pixels, labels, device, args.warmup, args.steps)

    loader = loaders.dataloader(work / "medmnist", d["config"], batch_size=b, shuffle=True, drop_last=True, num_workers=args.workers[-1],
                                persistent_workers=args.workers[-1] > 0, rgb=True, mean=(0.5,), std=(0.5,), device=device, progress=False)
    seen, start, images = 0, None, 0
    while seen < args.warmup + args.steps:
        for batch in loader:
            step(batch["pixel_values"], batch["labels"])
            seen += 1
            if seen == args.warmup:
                synchronize(device)
                start = time.perf_counter()
            elif seen > args.warmup:
                images += len(batch["labels"])
            if seen == args.warmup + args.steps:
                break
    synchronize(device)
    real = images / (time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(json.dumps({"device": name, "model": "ViT-B/16" if not args.tiny else "tiny ViT", "batch": b, "workers": args.workers[-1],
                      "synthetic_images_per_s": synthetic, "hfmed_images_per_s": real, "ratio": real / synthetic}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/hfmed-bench"), help="where the data, builds and cache go")
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 224], choices=[28, 224])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--loaders", nargs="+", default=list(LOADERS), choices=LOADERS)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--min-images", type=int, default=20_000, help="timed images per case at least (whole epochs)")
    p.add_argument("--warmup", type=int, default=5, help="batches skipped before timing")
    p.add_argument("--repeat", type=int, default=3, help="rounds of every case; the table shows medians")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--no-rss", dest="rss", action="store_false", help="skip the peak-memory runs (memory is bounded by the shuffle buffer, not the split)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--setup", action="store_true", help="print how to create the benchmark environment")
    p.add_argument("--gpu", action="store_true", help="ViT-B/16 bf16 on --device: hfmed-fed vs synthetic")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--tiny", action="store_true", help="a tiny ViT instead of ViT-B/16 (smoke test of --gpu on a CPU)")
    p.add_argument("--run-case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_case:
        print(json.dumps(run_case(json.loads(args.run_case))))
    elif args.setup:
        print(SETUP)
    elif args.gpu:
        main_gpu(args)
    else:
        main_cpu(args)


if __name__ == "__main__":
    main()
