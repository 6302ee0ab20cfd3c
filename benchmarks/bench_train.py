"""Training images per second on an accelerator: train_hf.py's real pipeline against synthetic input.

For ViT-B/16 and ConvNeXt-T at 224 px (bf16, batch 128 by default), two figures per model, each
run in its own process (so no memory, threads or CUDA state carry over from one to the next):

- real: ``train_hf.run(argv)``, the whole pipeline a user gets, on the generated 224 px
  pneumoniamnist build of ``bench_loaders.make_data`` (20,000 training images): ``--preset
  finetune`` (AdamW, warmup + cosine, affine augmentation), ``--dataloader_num_workers``, the
  default pixel cache (each split decoded once, before training starts), channels-last for ConvNeXt
  (train_hf's default for convolutional models). The batches come from ``hfmed.loaders`` with
  ``device=`` the GPU: uint8 crosses the bus, and resizing, augmentation and normalisation run there.
  Evaluation and checkpoints inside training are off (``--eval_strategy no --save_strategy no
  --load_best_model_at_end false``); the validation and test passes that train_hf always runs come
  after ``trainer.train()``, outside every figure here. Two rates: the steady one, images over
  ``--steps`` optimizer steps after ``--warmup`` steps, from a callback that synchronizes the
  device at both ends (comparable with the synthetic rate), and train_hf's own
  ``train_images_per_second``, which spans all of ``trainer.train()``: worker start-up, the first
  batches and cuDNN's first calls included, so it is lower for a run this short.
- synthetic: the same model, built by the same code from the same flags (``training.build_model``),
  same batch, precision (``torch.autocast`` bf16), memory format and optimizer class and settings
  (the Trainer's own ``get_optimizer_cls_and_kwargs``), trained in a plain loop on one batch
  already on the device: forward, backward, step; timed after the warmup steps, synchronized at
  both ends. No gradient clipping, scheduler or Trainer bookkeeping: the ratio real / synthetic
  charges those to the pipeline, along with loading, augmenting and copying the batches.

The GPU machine cannot reach the Hub, so the models are the from-scratch configurations with the
same shapes (throughput does not depend on the weights' values): ``--arch vit --arch_size base``
at 224 px is ViT-B/16 (16 px patches, hidden 768, 12 layers, 12 heads, MLP 3072) and ``--arch
convnext --arch_size base`` is ConvNeXt-T (4x4 stem, widths 96/192/384/768, depths 3/3/9/3). One
difference from the ImageNet checkpoints: the data is grayscale, so the first layer takes one
channel instead of three, a negligible part of the compute.

On the GPU machine (generates and builds the data under --work on first use; the 28 px build of
bench_loaders comes along)::

    python benchmarks/bench_train.py --work /tmp/hfmed-bench --json /tmp/bench_train.json

Smoke test on a CPU (nano models, a 64/16/16-image build, fp32, a few steps; under a minute)::

    python benchmarks/bench_train.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import types
from pathlib import Path

from train_flags import TRAINING_ONLY

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"vit": "ViT-B/16", "convnext": "ConvNeXt-T"}
TINY_ROWS = {"train": 64, "val": 16, "test": 16}


# --- data ---------------------------------------------------------------------------------------


def _conftest_importable() -> None:
    """tests/conftest.py (whose npz writer the data helpers use) imports pytest, a test-only
    dependency an accelerator machine may lack; the writer itself needs none of it."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        sys.modules["pytest"] = types.SimpleNamespace(fixture=lambda f=None, **_: f or (lambda g: g))


def build(work: Path, tiny: bool) -> Path:
    """The medmnist folder holding pneumoniamnist_224: bench_loaders' build, or a tiny random one."""
    _conftest_importable()
    if not tiny:
        from bench_loaders import make_data

        make_data(work)
        return work / "medmnist"
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_medmnist_npz
    from hfmed.loading_scripts.medmnist import MedMNIST

    from hfmed.writer import build_config

    out = work / "medmnist"
    if not (out / "pneumoniamnist_224").is_dir():
        (work / "npz").mkdir(parents=True, exist_ok=True)
        npz = make_medmnist_npz(work / "npz", "pneumoniamnist", 224, TINY_ROWS)
        build_config(MedMNIST("pneumoniamnist_224", npz, unofficial=True), out, progress=False)
    return out


def train_argv(args, arch: str, data: Path) -> list[str]:
    argv = [
        "--dataset",
        str(data),
        "--subset",
        "pneumoniamnist",
        "--size",
        "224",
        "--preset",
        "finetune",
        "--arch",
        arch,
        "--arch_size",
        "nano" if args.tiny else "base",
        "--per_device_train_batch_size",
        str(args.batch_size),
        "--max_steps",
        str(args.warmup + args.steps),
        "--dataloader_num_workers",
        str(args.workers),
        *TRAINING_ONLY,
        "--output_dir",
        str(data.parent / "runs" / arch),
    ]
    argv += ["--use_cpu", "true"] if args.device == "cpu" else ["--bf16", "true"]
    return argv + shlex.split(args.train_args)


# --- one case, in its own process ---------------------------------------------------------------


def _device_name(device) -> str:
    import torch

    from hfmed import training

    return torch.cuda.get_device_name(device) if device.type == "cuda" else training.device_description()


def run_real(case: dict) -> dict:
    """train_hf.run, with a callback that clocks the steps after the warmup."""
    import torch
    from transformers import TrainerCallback

    import train_hf
    from hfmed import training

    first, last = case["warmup"], case["warmup"] + case["steps"]
    marks: dict[int, tuple[float, int]] = {}
    device = []

    class Clock(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (first, last):
                device[:] = [args.device]
                if args.device.type == "cuda":
                    torch.cuda.synchronize(args.device)
                marks[state.global_step] = (time.perf_counter(), self.trainer.images_seen)

    class ClockedTrainer(training.MedTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(Clock(self))

    training.MedTrainer = ClockedTrainer  # train_hf.run looks it up at call time
    results = train_hf.run(case["argv"])
    (t0, n0), (t1, n1) = marks[first], marks[last]
    return {
        "images_per_s": (n1 - n0) / (t1 - t0),
        "images_timed": n1 - n0,
        "device": _device_name(device[0]),
        **{
            k: results[k]
            for k in (
                "train_images_per_second",
                "train_seconds",
                "wall_time_seconds",
                "precision",
                "channels_last",
                "model",
                "image_size",
                "num_samples",
            )
        },
    }


def run_synthetic(case: dict) -> dict:
    """The model train_hf builds from the same flags, trained on one batch already on the device."""
    import synthetic
    import torch
    from transformers import Trainer

    from hfmed import training

    torch.manual_seed(0)
    data_args, model_args, recipe_args, training_args = training.parse_args(
        case["argv"]
    )  # also sets TF32 as the Trainer would
    info = training.open_data(data_args, training_args).info  # the card and one schema; no pixels
    bundle = training.build_model(model_args, recipe_args, info, data_args)
    channels_last = training.wants_channels_last(model_args, bundle.model)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    device = training_args.device
    model = bundle.model.to(device, memory_format=fmt).train()
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    optimizer = optimizer_cls(model.parameters(), weight_decay=training_args.weight_decay, **kwargs)
    b, side = training_args.per_device_train_batch_size, bundle.image_size
    pixels = torch.randn(b, bundle.channels, side, side, device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, info.num_labels, (b,), device=device)

    step = synthetic.training_step(model, optimizer, device, training_args.bf16)
    seconds = synthetic.seconds_on_one_batch(step, pixels, labels, device, case["warmup"], case["steps"])
    return {
        "images_per_s": case["steps"] * b / seconds,
        "seconds": seconds,
        "optimizer": optimizer_cls.__name__,
        "precision": "bf16" if training_args.bf16 else "fp32",
        "channels_last": channels_last,
        "device": _device_name(device),
    }


def spawn(case: dict, timeout: float) -> dict:
    """One case in a fresh interpreter; its result comes back through a file (train_hf prints to stdout)."""
    out = Path(case["result"])
    out.unlink(missing_ok=True)
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--run-case", json.dumps(case)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode or not out.exists():
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.read_text())


# --- the report ---------------------------------------------------------------------------------


def machine() -> dict:
    import accelerate
    import datasets
    import torch
    import transformers

    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "loadavg_at_start": os.getloadavg()[0],
    }


def table(rows: list[dict], batch: int) -> str:
    lines = [
        "| model | images/s real (steady) | images/s real (train_hf, whole train()) | "
        "images/s synthetic | real / synthetic | s per epoch real "
        "| batch | precision | channels-last | device |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        real, synth = r["real"], r["synthetic"]
        if "error" in real or "error" in synth:
            lines.append(f"| {r['name']} | failed: {real.get('error') or synth.get('error')} | | | | | {batch} | | | |")
            continue
        epoch = real["num_samples"]["train"] / real["images_per_s"]
        lines.append(
            f"| {r['name']} | {real['images_per_s']:,.1f} | "
            f"{real['train_images_per_second']:,.1f} | {synth['images_per_s']:,.1f} "
            f"| {real['images_per_s'] / synth['images_per_s']:.2f} | {epoch:,.1f} | {batch} | {real['precision']} "
            f"| {'yes' if real['channels_last'] else 'no'} | {real['device']} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/hfmed-bench"),
        help="where the data, pixel cache and runs go (--tiny: under <work>/tiny)",
    )
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch-size", type=int, help="per device; default 128 (--tiny: 16)")
    p.add_argument("--steps", type=int, help="timed optimizer steps; default 100 (--tiny: 3)")
    p.add_argument("--warmup", type=int, help="steps before timing, at least 1; default 10 (--tiny: 2)")
    p.add_argument("--workers", type=int, help="dataloader workers of the real runs; default 8 (--tiny: 1)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda: bf16; cpu: fp32 (--use_cpu true)")
    p.add_argument(
        "--train-args", default="", help="more train_hf.py flags for the real and synthetic runs, e.g. '--augment none'"
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="smoke test on a CPU: nano models, a 64/16/16-image build, fp32, a few steps",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--run-case", help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))  # hfmed, loading_scripts and train_hf from this checkout, installed or not
    if args.run_case:
        case = json.loads(args.run_case)
        result = (run_real if case["kind"] == "real" else run_synthetic)(case)
        Path(case["result"]).write_text(json.dumps(result))
        return
    for name, full, tiny in (("batch_size", 128, 16), ("steps", 100, 3), ("warmup", 10, 2), ("workers", 8, 1)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    if args.tiny:
        args.device = "cpu"
    if args.warmup < 1:
        p.error("--warmup must be at least 1 (the clock starts at the end of a step)")

    work = (args.work / "tiny" if args.tiny else args.work).resolve()
    data = build(work, args.tiny)
    os.environ["HFMED_CACHE"] = str(work / "cache")  # the runs' pixel cache, beside the data (children inherit it)
    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    rows = []
    for arch in args.models:
        name = MODELS[arch] if not args.tiny else f"{arch} nano"
        argv = train_argv(args, arch, data)
        row = {"name": name, "argv": argv}
        for kind in ("real", "synthetic"):
            case = {
                "kind": kind,
                "argv": argv,
                "warmup": args.warmup,
                "steps": args.steps,
                "result": str(work / "runs" / f"{arch}-{kind}.json"),
            }
            (work / "runs").mkdir(parents=True, exist_ok=True)
            row[kind] = r = spawn(case, args.timeout)
            shown = r.get("error") or f"{r['images_per_s']:,.1f} images/s"
            print(f"  {name}, {kind}: {shown}", file=sys.stderr, flush=True)
        rows.append(row)
    print(f"\n{rows[0]['name']}, real: python train_hf.py {shlex.join(rows[0]['argv'])}\n")
    print(table(rows, args.batch_size))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "settings": {
                        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "run_case"
                    },
                    "results": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
