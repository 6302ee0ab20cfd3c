"""Images per second: an in-memory medmnist-style loader, the plain ``datasets`` route, and hfmed.loaders.

Side by side, in one run, on realistic content at 28 and 224 px:

- grayscale: BreastMNIST as published (``../shared/data/medmnist/breastmnist.npz``: real
  ultrasound scans, 546 / 78 / 156 rows), as it is at 28 px and resized to 224 px (Pillow bicubic);
- RGB: no MedMNIST RGB file is available here, so square tiles of scikit-learn's two sample
  photographs (real JPEG photos, ``load_sample_images``), random crops of 64-427 px, maybe
  mirrored, resized to 28 and 224 px, with RetinaMNIST's split sizes (1,080 / 120 / 400 rows) and
  random labels of its five grades.

Each content and size is written as a MedMNIST-format ``.npz`` file and built with hfmed. Each
case runs in a fresh process (so no loader inherits another's memory or threads), runs one
untimed epoch (worker start-up, prefetch fill, persistent workers) and then times whole epochs,
at least ``--min-images`` images (8x as many at 28 px); ``--repeat`` rounds of every case, medians in the table, the
load average before each case printed (the machine may be shared). Every case runs with
``torch.set_num_threads(1)``, as DataLoader workers do: on a small machine, intra-op threads in
the main process fight everything else.

The loaders compared, all yielding float32 ``(B, C, H, W)`` normalised with mean 0.5 and std 0.5
(except ``hfmed-uint8``), plus labels, batch 128:

- inmemory: the split's arrays in RAM, a PIL image per ``__getitem__`` as medmnist's dataset
  classes do, ``ToTensor`` + ``Normalize`` (written out: torchvision does not install beside the
  project's torch), a torch ``DataLoader(shuffle=True)``;
- datasets: ``load_dataset(folder, config, split="train", streaming=True).with_format("torch")``
  in a ``DataLoader``, uint8 -> float and normalisation in the collate. Not shuffled, unlike the
  others: in ``datasets`` 5.2 a shuffled stream sleeps 5 s at the end of every pass
  (``config.SLEEP_TIME_ON_THREADS_SHUTDOWN``), which would dominate these epochs; so this is the
  route at its fastest, and the ratios against it are conservative;
- hfmed: ``hfmed.loaders.dataloader(folder, config, shuffle=True, mean=, std=)``, streaming (PNG
  decoded every epoch); ``hfmed-uint8`` (``dtype=torch.uint8``: what crosses to an accelerator);
  ``hfmed-cached`` (``streaming=False``: decoded once into the local pixel cache, its one-off
  preparation timed apart).

``--loaders`` also takes the places uint8 can become float, each against ``hfmed`` (uint8 crosses
from the workers and is converted in the consuming process into recycled memory):
``float-in-workers`` (``StreamingImageDataset`` in a plain ``DataLoader``: float batches cross
processes), ``float-on-device`` (``device="cpu"``: the device path, converted where the batch
lands) and ``float-fused`` (uint8 batches, converted by the consumer's first step, as a model that
folds the normalisation into its first layer would).

Peak RSS of hfmed's loader is then measured on the 224 px RGB validation and train splits: main
process and largest worker, from ``getrusage``.

Setup, once: the project's environment (``pip install -e ".[test]"``: hfmed, scikit-learn for the
photographs, pytest's helpers for the npz files); nothing else.

Run (writes and builds the data under --work on first use, about 400 MB)::

    python benchmarks/bench_loaders.py --work /tmp/hfmed-bench --json /tmp/bench_loaders.json

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
REAL_GRAY = ROOT.parent / "shared" / "data" / "medmnist" / "breastmnist.npz"
# content: (subset whose name and label set the build takes, rows per split)
CONTENT = {
    "gray": ("breastmnist", None),  # the real file's own splits (546 / 78 / 156)
    "rgb": ("retinamnist", {"train": 1_080, "val": 120, "test": 400}),  # RetinaMNIST's split sizes
}
LOADERS = ("inmemory", "datasets", "hfmed", "hfmed-uint8", "hfmed-cached")
# Where uint8 becomes float, each against ``hfmed`` (uint8 crosses from the workers, converted in the
# consuming process into recycled memory): in the workers, through ``device="cpu"``, or by the model.
FLOAT_PLACES = ("float-in-workers", "float-on-device", "float-fused")
MEAN, STD = (0.5,), (0.5,)  # every float loader normalises, as MedMNIST's examples do
RSS_BUFFER = 500  # rows; smaller than the train split, so the measure holds a full shuffle buffer
SETUP = __doc__[__doc__.index("Setup, once") : __doc__.index("Run (writes")]


# --- data ---------------------------------------------------------------------------------------


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Pillow's bicubic resize, image by image (antialiased when shrinking), as one would prepare them."""
    from PIL import Image

    if images.shape[1] == size:
        return images
    return np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)) for a in images])


def gray_images(size: int) -> dict[str, np.ndarray]:
    """BreastMNIST as published (real ultrasound scans, 28 px), resized to ``size``; labels as they are."""
    with np.load(REAL_GRAY) as z:
        out = {k: z[k] for k in z.files}
    for split in ("train", "val", "test"):
        out[f"{split}_images"] = _resize(out[f"{split}_images"], size)
    return out


def rgb_tiles(n: int, size: int, seed: int) -> np.ndarray:
    """Square tiles of scikit-learn's two sample photographs (real JPEG photos, 427 x 640), each a
    random crop of 64 to 427 px, maybe mirrored, resized to ``size``: real RGB content, no MedMNIST
    RGB file being available here."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(64, photo.shape[0] + 1))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        tile = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BICUBIC)
        out[i] = np.asarray(tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else tile)
    return out


def _members(content: str, size: int) -> dict[str, np.ndarray]:
    if content == "gray":
        return gray_images(size)
    rows = CONTENT["rgb"][1]
    members = {}
    for i, (split, n) in enumerate(rows.items()):
        members[f"{split}_images"] = rgb_tiles(n, size, seed=i)  # the same tiles at every size
        members[f"{split}_labels"] = np.random.default_rng(i).integers(0, 5, (n, 1), dtype=np.uint8)
    return members


def make_data(work: Path, sizes=(28, 224)) -> dict[tuple[str, int], dict]:
    """An npz file per content and size (the in-memory loader's input) and its hfmed build (everyone else's)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_npz
    from hfmed.loading_scripts.medmnist import MedMNIST

    from hfmed.writer import build_config

    npz_dir, out = work / "npz", work / "medmnist"
    npz_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for content, (flag, _) in CONTENT.items():
        for size in sizes:
            config = flag if size == 28 else f"{flag}_{size}"
            path = npz_dir / f"{config}.npz"
            if not path.exists():
                print(f"writing {path}", file=sys.stderr)
                members = _members(content, size)
                order = [f"{s}_images" for s in ("train", "val", "test")] + [
                    f"{s}_labels" for s in ("train", "val", "test")
                ]
                tmp = path.with_suffix(".tmp")
                write_npz(tmp, members, order)
                tmp.rename(path)
            if not (out / config).is_dir():
                print(f"building {out / config}", file=sys.stderr)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    build_config(MedMNIST(config, path, unofficial=True), out, progress=False)
            with np.load(path) as z:
                rows = {s: len(z[f"{s}_labels"]) for s in ("train", "val", "test")}
            shards = sorted((out / config).glob("train-*.parquet"))
            png_bytes = sum(p.stat().st_size for p in shards)
            result[content, size] = {
                "content": content,
                "config": config,
                "npz": str(path),
                "rows": rows,
                "train_shards": len(shards),
                "png_bytes_per_image": png_bytes / rows["train"],
            }
    return result


# --- one case, in its own process ---------------------------------------------------------------


def _datasets_collate(batch):
    """``default_collate``, then what the model needs: (B, C, H, W) float32, normalised."""
    import torch
    from torch.utils.data import default_collate

    out = default_collate(batch)
    x = out["image"]
    x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x.unsqueeze(1)
    out["image"] = x.to(torch.float32).div_(255).sub_(MEAN[0]).div_(STD[0])
    return out


class InMemory:
    """A medmnist-style dataset: the split's arrays in RAM, one PIL image per ``__getitem__``
    (``medmnist.dataset.MedMNIST2D.__getitem__``), then ``ToTensor`` and ``Normalize``.

    torchvision does not install beside the project's torch here, so its two transforms are
    written out with the operations torchvision's functional versions perform for a PIL image.
    """

    def __init__(self, npz: str, split: str):
        with np.load(npz) as z:
            self.imgs, self.labels = z[f"{split}_images"], z[f"{split}_labels"]

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        img, target = self.imgs[index], self.labels[index].astype(int)
        img = Image.fromarray(img)
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(img.size[1], img.size[0], len(img.getbands()))
        x = x.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)  # ToTensor
        mean = torch.as_tensor(MEAN, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(STD, dtype=x.dtype).view(-1, 1, 1)
        return x.clone().sub_(mean).div_(std), target  # Normalize


def _loader(case: dict):
    """(iterable, set_epoch) for one case; construction is not timed."""
    import torch
    from torch.utils.data import DataLoader

    kind, workers, batch = case["kind"], case["workers"], case["batch"]
    persistent = {"persistent_workers": True} if workers else {}
    if kind == "inmemory":
        ds = InMemory(case["npz"], case["split"])
        dl = DataLoader(
            ds,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),
            **persistent,
        )
        return dl, lambda e: None
    if kind == "datasets":
        from datasets import load_dataset

        # No .shuffle(): in datasets 5.2 a shuffled stream sleeps 5 s (SLEEP_TIME_ON_THREADS_SHUTDOWN)
        # when each pass ends, which would dominate an epoch here; unshuffled is its fastest route.
        ds = load_dataset(case["build"], case["config"], split=case["split"], streaming=True).with_format("torch")
        dl = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=_datasets_collate, **persistent)
        return dl, ds.set_epoch
    from hfmed import loaders

    common = dict(batch_size=batch, shuffle=True, progress=False, mean=MEAN, std=STD)
    if kind == "float-in-workers":  # the whole transform in the workers: float batches cross processes
        ds = loaders.StreamingImageDataset(case["build"], case["config"], case["split"], **common)
        dl = DataLoader(ds, batch_size=None, num_workers=workers, **persistent)
        return dl, ds.set_epoch
    options = {
        "hfmed": {},
        "hfmed-uint8": {"dtype": torch.uint8, "mean": None, "std": None},
        "float-fused": {"dtype": torch.uint8, "mean": None, "std": None},
        "float-on-device": {"device": "cpu"},
        "hfmed-cached": {"streaming": False, "cache_dir": case["cache_dir"]},
    }[kind]
    options.update(case.get("hfmed", {}))
    dl = loaders.dataloader(
        case["build"], case["config"], split=case["split"], num_workers=workers, **persistent, **{**common, **options}
    )
    if kind == "float-fused":  # uint8 to the model, whose first step converts (normalisation folded into its weights)
        return _converted(dl), dl.set_epoch
    return dl, dl.set_epoch


class _converted:
    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        import torch

        for batch in self.loader:
            yield {"pixel_values": batch["pixel_values"].to(torch.float32), "labels": batch["labels"]}


def run_case(case: dict) -> dict:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)  # as in DataLoader workers; see the module docstring
    t = time.perf_counter()
    loader, set_epoch = _loader(case)
    setup_s = time.perf_counter() - t
    if not case["epochs"]:
        return {**case, "setup_s": setup_s}
    images, batches, start = 0, 0, None
    for epoch in range(case["warmup_epochs"] + case["epochs"]):
        if epoch == case["warmup_epochs"]:
            start = time.perf_counter()
        set_epoch(epoch)
        for batch in loader:
            if epoch >= case["warmup_epochs"]:
                labels = batch[1] if isinstance(batch, (list, tuple)) else batch.get("labels", batch.get("label"))
                images += len(labels)
                batches += 1
    elapsed = time.perf_counter() - start
    del loader, set_epoch, batch  # stops the workers, so that their peak memory is counted below
    gc.collect()
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        **case,
        "setup_s": setup_s,
        "seconds": elapsed,
        "images": images,
        "batches": batches,
        "images_per_s": images / elapsed,
        "batches_per_s": batches / elapsed,
        "peak_rss_mb": self_rss,
        "peak_worker_rss_mb": child_rss,
    }


def spawn(case: dict, timeout: float) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--run-case", json.dumps(case)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if done.returncode:
        return {**case, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report ---------------------------------------------------------------------------------


def machine() -> dict:
    import datasets
    import PIL
    import torch

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    try:
        import medmnist

        mm = medmnist.__version__
    except ImportError:
        mm = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(mem / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "datasets": datasets.__version__,
        "pillow": PIL.__version__,
        "medmnist": mm,
        "loadavg_at_start": os.getloadavg()[0],
    }


def _median(runs: list[dict]) -> dict:
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["images_per_s"])
    if not ok:
        return runs[0]
    mid = ok[len(ok) // 2]
    return {**mid, "runs": len(ok), "low": ok[0]["images_per_s"], "high": ok[-1]["images_per_s"]}


def table(results: list[dict]) -> str:
    """Median of the repeats per case; ratios are of medians, same content, size and worker count."""
    cases: dict[tuple, list[dict]] = {}
    for r in results:
        if r.get("purpose") != "rss":
            cases.setdefault((r["content"], r["size"], r["workers"], r["kind"]), []).append(r)
    medians = {k: _median(v) for k, v in cases.items()}
    lines = [
        "| content | size | workers | loader | images/s (median) | range | x datasets | x in-memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (content, size, workers, kind), r in medians.items():
        if "error" in r:
            lines.append(f"| {content} | {size} px | {workers} | {kind} | failed: {r['error']} | | | |")
            continue
        ratios = []
        for ref in ("datasets", "inmemory"):
            other = medians.get((content, size, workers, ref))
            ratios.append(f"{r['images_per_s'] / other['images_per_s']:.2f}" if other and "error" not in other else "-")
        spread = f"{r['low']:,.0f}-{r['high']:,.0f}" if r["runs"] > 1 else "-"
        lines.append(
            f"| {content} | {size} px | {workers} | {kind} | {r['images_per_s']:,.0f} | "
            f"{spread} | {ratios[0]} | {ratios[1]} |"
        )
    return "\n".join(lines)


def _case(args, d: dict, work: Path, kind: str, workers: int) -> dict:
    size = int(d["config"].rpartition("_")[2]) if "_" in d["config"] else 28
    epochs = max(
        1, math.ceil(args.min_images * (8 if size == 28 else 1) / d["rows"]["train"])
    )  # 28 px: seconds, not tenths
    return {
        "kind": kind,
        "content": d["content"],
        "size": size,
        "workers": workers,
        "batch": args.batch_size,
        "split": "train",
        "epochs": epochs,
        "warmup_epochs": 1,
        "config": d["config"],
        "build": str(work / "medmnist"),
        "npz": d["npz"],
        "cache_dir": str(work / "cache"),
    }


def main_cpu(args) -> None:
    work = args.work.resolve()
    data = make_data(work, tuple(args.sizes))
    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    for d in data.values():
        print(
            f"data {d['config']}: train {d['rows']['train']} images, {d['train_shards']} "
            f"shard(s), {d['png_bytes_per_image']:,.0f} PNG bytes/image",
            flush=True,
        )
    results, loads = [], []
    for rep in range(args.repeat):  # whole rounds, so that a busy spell on the machine hits every loader alike
        for (content, size), d in data.items():
            if content not in args.content:
                continue
            kinds = list(args.loaders) + (list(args.places) if (content, size) == ("rgb", 224) else [])
            for workers in args.workers:
                for kind in kinds:
                    case = _case(args, d, work, kind, workers)
                    if kind == "hfmed-cached" and rep == 0:  # the one-off decoding into the cache is timed apart
                        prep = spawn({**case, "epochs": 0}, args.timeout)
                        if "error" not in prep:
                            print(f"  pixel cache for {d['config']} ready after {prep['setup_s']:.1f} s", flush=True)
                    loads.append(os.getloadavg()[0])
                    r = spawn(case, args.timeout)
                    results.append(r)
                    shown = r.get("error") or f"{r['images_per_s']:,.0f} images/s"
                    print(
                        f"  round {rep + 1}: {d['config']}, {workers} workers, {kind}: {shown} (load {loads[-1]:.1f})",
                        flush=True,
                    )
    print("\n" + table(results))
    print(
        f"\nload average (1 min) before each case: median {np.median(loads):.1f}, range "
        f"{min(loads):.1f}-{max(loads):.1f}"
    )
    if args.rss:
        d = data["rgb", 224] if ("rgb", 224) in data else next(iter(data.values()))
        print(
            f"\nPeak RSS of hfmed's loader (streaming, {d['config']}, 2 workers, "
            f"shuffle_buffer={RSS_BUFFER} rows, one epoch):\n"
        )
        print("| split | rows | main process MB | largest worker MB |\n|---|---|---|---|")
        for split in ("validation", "train"):
            case = {
                **_case(args, d, work, "hfmed", 2),
                "split": split,
                "epochs": 1,
                "warmup_epochs": 0,
                "hfmed": {"shuffle_buffer": RSS_BUFFER},
                "purpose": "rss",
            }
            r = spawn(case, args.timeout)
            results.append(r)
            rows = d["rows"]["val" if split == "validation" else split]
            print(
                f"| {split} | {rows:,} | {r.get('peak_rss_mb', float('nan')):,.0f} | "
                f"{r.get('peak_worker_rss_mb', float('nan')):,.0f} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "data": {f"{c}-{s}": d for (c, s), d in data.items()},
                    "loads": loads,
                    "results": results,
                },
                indent=1,
            )
        )


# --- on an accelerator --------------------------------------------------------------------------


def main_gpu(args) -> None:
    """ViT-B/16, 224 px, bf16: train images/s fed by hfmed vs fed synthetic tensors on the device."""
    import torch
    from synthetic import seconds_on_one_batch, synchronize, training_step
    from transformers import ViTConfig, ViTForImageClassification

    from hfmed import loaders

    device = torch.device(args.device)
    work = args.work.resolve()
    d = make_data(work, (224,))["rgb", 224]
    config = (
        ViTConfig()
        if not args.tiny
        else ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    config.num_labels = 5  # the RGB content's labels: RetinaMNIST's five grades
    model = ViTForImageClassification(config).to(device).train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    step = training_step(model, optim, device, bf16=True)

    b = args.batch_size
    pixels = torch.randn(b, 3, 224, 224, device=device)
    labels = torch.randint(0, config.num_labels, (b,), device=device)
    synthetic = args.steps * b / seconds_on_one_batch(step, pixels, labels, device, args.warmup, args.steps)

    loader = loaders.dataloader(
        work / "medmnist",
        d["config"],
        batch_size=b,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers[-1],
        persistent_workers=args.workers[-1] > 0,
        mean=MEAN,
        std=STD,
        device=device,
        progress=False,
    )
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
    print(
        json.dumps(
            {
                "device": name,
                "model": "ViT-B/16" if not args.tiny else "tiny ViT",
                "batch": b,
                "workers": args.workers[-1],
                "synthetic_images_per_s": synthetic,
                "hfmed_images_per_s": real,
                "ratio": real / synthetic,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/hfmed-bench"), help="where the data, builds and cache go")
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 224], choices=[28, 224])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--content", nargs="+", default=list(CONTENT), choices=list(CONTENT))
    p.add_argument("--loaders", nargs="+", default=list(LOADERS), choices=LOADERS + FLOAT_PLACES)
    p.add_argument(
        "--places",
        nargs="*",
        default=list(FLOAT_PLACES),
        choices=FLOAT_PLACES,
        help="also measured, at 224 px RGB only",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--min-images",
        type=int,
        default=3_000,
        help="timed images per case at least (whole epochs, after one untimed epoch)",
    )
    p.add_argument("--warmup", type=int, default=5, help="--gpu: training steps before timing")
    p.add_argument("--repeat", type=int, default=3, help="rounds of every case; the table shows medians")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument(
        "--no-rss",
        dest="rss",
        action="store_false",
        help="skip the peak-memory runs (memory is bounded by the shuffle buffer, not the split)",
    )
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
