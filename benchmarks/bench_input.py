"""The training input pipeline against the loaders alone: does the Trainer get batches as fast as
hfmed.loaders gives them?

Three ways to get one epoch of BreastMNIST training batches (the real images of
``../shared/data/medmnist/breastmnist.npz``; at 224 px the same images upscaled bilinearly, so
the content is real grayscale texture), each run in a fresh interpreter, in rotation, medians of
``--repeats``:

- ``loaders``: ``hfmed.loaders.dataloader`` alone (shuffled, pixel cache, mean/std 0.5, batch
  128, workers kept across epochs as ``train_hf.py`` keeps them), every batch taken and dropped;
- ``input``: the batches the Trainer receives. A ``MedTrainer`` of this checkout with the model
  replaced by a no-op (one parameter, its loss ignores the batch), fed as ``train_hf.py`` feeds it
  (``hfmed.training.Data.loader``); its ``get_train_dataloader()`` is iterated and every batch goes
  through ``_prepare_inputs``, as in a training step. This is the ratio issue 12 asks to be at
  least 0.95 of ``loaders``.
- ``train``: the same Trainer's whole ``train()`` with the no-op model, timed from the first epoch's
  start: the input plus the Trainer's own work per step (optimizer step, scheduler, callbacks),
  which at 28 px and a no-op model is most of the time.
- ``input_before``/``train_before`` (with ``--before PATH``): the same two through the per-example
  route of a checkout that still has it (``StreamingImageDataset(batch_size=None)``, the Trainer's
  DataLoader re-batching, ``training.Collator`` converting, resizing and normalising), hfmed
  imported from PATH instead of this checkout: ``--before /work/main`` measured main before this
  change (commit 73d14e5).

Rates are images per second over every epoch of a run (worker start-up included).

    python benchmarks/bench_input.py --work /tmp/hfmed-input --before /work/main --json /tmp/bench_input.json
    python benchmarks/bench_input.py --alternate 15    # both pipelines in one process per case, in turns
    python benchmarks/bench_input.py --tiny     # smoke test: 28 px, one repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from train_flags import TRAINING_ONLY

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "data" / "medmnist" / "breastmnist.npz"
EPOCHS = {28: 400, 224: 40}  # per timed run: a few seconds of batches, so one-off set-up is not the figure


def make_data(work: Path, sizes: list[int]) -> Path:
    """medmnist/breastmnist (the real file) and medmnist/breastmnist_224 (its images upscaled)."""
    sys.path.insert(0, str(ROOT))
    from hfmed.loading_scripts.medmnist import MedMNIST
    from PIL import Image

    from hfmed.writer import build_config

    out = work / "medmnist"
    for size in sizes:
        config = "breastmnist" if size == 28 else f"breastmnist_{size}"
        if (out / config).is_dir():
            continue
        source = REAL
        if size != 28:
            with np.load(REAL) as npz:
                arrays = {k: npz[k] for k in npz.files}
            for key in [k for k in arrays if k.endswith("_images")]:
                arrays[key] = np.stack(
                    [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in arrays[key]]
                )
            source = work / f"breastmnist_{size}.npz"
            np.savez_compressed(source, **arrays)
        build_config(MedMNIST(config, source, unofficial=size != 28), out, progress=False)
    return out


def _argv(case: dict) -> list[str]:
    return [
        "--dataset",
        case["data"],
        "--subset",
        "breastmnist",
        "--size",
        str(case["size"]),
        "--arch",
        "vit",
        "--image_size",
        str(case["size"]),
        "--per_device_train_batch_size",
        "128",
        "--num_train_epochs",
        str(case["epochs"]),
        "--dataloader_num_workers",
        str(case["workers"]),
        *TRAINING_ONLY,
        "--logging_strategy",
        "no",
        "--use_cpu",
        "true",
        "--output_dir",
        case["out"],
    ]


def _noop_model():
    import torch

    class NoOp(torch.nn.Module):
        """One parameter; the loss does not look at the batch, so the pipeline is all that is timed."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def forward(self, pixel_values, labels=None):
            return {"loss": self.weight * self.weight, "logits": self.weight.expand(pixel_values.shape[0], 2)}

    return NoOp()


def _loaders_alone(case: dict):
    from hfmed import loaders

    side = case["size"]
    return loaders.dataloader(
        case["data"],
        "breastmnist" if side == 28 else f"breastmnist_{side}",
        split="train",
        batch_size=128,
        num_workers=case["workers"],
        persistent_workers=case["workers"] > 0,
        shuffle=True,
        streaming=False,
        mean=(0.5,),
        std=(0.5,),
        progress=False,
    )


def _epochs(loader, epochs: int, prepare=None) -> float:
    """Images per second over ``epochs`` passes, every batch taken (through ``prepare`` if given)."""
    images, start = 0, time.perf_counter()
    for epoch in range(epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            images += (prepare(batch) if prepare else batch)["pixel_values"].shape[0]
    return images / (time.perf_counter() - start)


def run_loaders(case: dict) -> float:
    return _epochs(_loaders_alone(case), case["epochs"])


def _trainer(case: dict):
    from hfmed import training

    data_args, model_args, recipe_args, args = training.parse_args(_argv(case))
    if hasattr(training, "Collator"):  # a checkout before issue 12: the per-example route
        data = training.open_data(data_args, args)
        collator = training.Collator(image_size=case["size"], channels=1, mean=(0.5,), std=(0.5,))
        return training.MedTrainer(
            model=_noop_model(),
            args=args,
            train_dataset=data.splits()["train"],
            data_collator=collator,
            train_collator=collator,
        )
    data = training.open_data(data_args, args, model_args)
    feed = training.Feed(case["size"], 1, (0.5,), (0.5,))
    return training.MedTrainer(model=_noop_model(), args=args, train_dataset=data.loader("train", feed, args))


def run_input(case: dict) -> float:
    """The batches the Trainer receives: its train dataloader, each batch through ``_prepare_inputs``."""
    trainer = _trainer(case)
    return _epochs(trainer.get_train_dataloader(), case["epochs"], trainer._prepare_inputs)


def run_alternating(case: dict) -> dict[str, list[float]]:
    """Both pipelines in one process, built once (workers kept), timed in turns of ``epochs``.

    Fresh-process runs carry each interpreter's own noise (its import state, where its memory
    landed, what else the machine did in those seconds); alternating the two in one process on
    the same pixel cache compares them under the same conditions, turn after turn."""
    alone, trainer = _loaders_alone(case), _trainer(case)
    fed = trainer.get_train_dataloader()
    _epochs(alone, 1), _epochs(fed, 1, trainer._prepare_inputs)  # worker start-up and first reads, once each
    rates: dict[str, list[float]] = {"loaders": [], "input": []}
    for _ in range(case["turns"]):
        rates["loaders"].append(_epochs(alone, case["epochs"]))
        rates["input"].append(_epochs(fed, case["epochs"], trainer._prepare_inputs))
    return rates


def run_train(case: dict) -> float:
    """``train()`` with the no-op model, from the first epoch's start (the Trainer's set-up excluded)."""
    from transformers import TrainerCallback

    trainer = _trainer(case)
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            if not marks:
                marks.append(time.perf_counter())

    trainer.add_callback(Clock())
    trainer.train()
    return trainer.images_seen / (time.perf_counter() - marks[0])


RUNNERS = {"loaders": run_loaders, "input": run_input, "train": run_train, "alternate": run_alternating}


def spawn(case: dict, before: str | None):
    """One case in a fresh interpreter, importing hfmed from ``before`` when given."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in (before, str(ROOT)) if p)}
    done = subprocess.run(
        [sys.executable, __file__, "--run-case", json.dumps(case)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=before or ROOT,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines or not lines[-1].startswith("RATE "):
        raise RuntimeError(f"{case['kind']} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def markdown(rows: list[dict], before: bool) -> str:
    head = [
        "size",
        "workers",
        "loaders alone",
        "Trainer input, after",
        "after / loaders",
        "no-op train(), after",
        "/ loaders",
    ]
    if before:
        head += ["Trainer input, before", "before / loaders", "no-op train(), before", "/ loaders"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['size']} px", str(r["workers"]), f"{r['loaders']:,.0f}"]
        for kind in ("input", "train") + (("input_before", "train_before") if before else ()):
            cells += [f"{r[kind]:,.0f}", f"{r[kind] / r['loaders']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def alternate(data: Path, work: Path, args: argparse.Namespace) -> None:
    """Per size and worker count: one process, the two pipelines in turns; medians of the turns."""
    rows = []
    for size in args.sizes:
        for workers in args.workers:
            case = {
                "kind": "alternate",
                "data": str(data),
                "size": size,
                "workers": workers,
                "epochs": max(1, EPOCHS[size] // 4),
                "turns": args.alternate,
                "out": str(work / "runs" / "alternate"),
            }
            rates = spawn(case, None)
            ratios = [b / a for a, b in zip(rates["loaders"], rates["input"])]
            row = {
                "size": size,
                "workers": workers,
                "loaders": statistics.median(rates["loaders"]),
                "input": statistics.median(rates["input"]),
                "ratio_median": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
                "all": rates,
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "all"}), flush=True)
    print(
        "| size | workers | loaders alone | Trainer input | input / loaders, median of "
        "turns (range) |\n|---|---|---|---|---|"
    )
    for r in rows:
        low, high = r["ratio_range"]
        print(
            f"| {r['size']} px | {r['workers']} | {r['loaders']:,.0f} | {r['input']:,.0f} | "
            f"{r['ratio_median']:.3f} ({low:.2f}-{high:.2f}) |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"loadavg_at_start": os.getloadavg()[0], "nproc": os.cpu_count(), "rows": rows}, indent=1)
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/hfmed-input"))
    p.add_argument("--before", help="a checkout with the per-example route (e.g. /work/main before issue 12)")
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 224])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="28 px, 0 workers, one repeat, two epochs")
    p.add_argument(
        "--alternate",
        type=int,
        metavar="TURNS",
        help="instead: loaders alone and the Trainer's input in one process per case, TURNS turns each",
    )
    p.add_argument("--json", type=Path)
    p.add_argument("--run-case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_case:
        case = json.loads(args.run_case)
        print("RATE", json.dumps(RUNNERS[case["kind"]](case)), flush=True)
        return
    if args.tiny:
        args.sizes, args.workers, args.repeats = [28], [0], 1
    work = args.work.resolve()
    data = make_data(work, args.sizes)
    os.environ["HFMED_CACHE"] = str(work / "cache")
    if args.alternate:
        alternate(data, work, args)
        return
    kinds = ["loaders", "input", "train"] + (["input_before", "train_before"] if args.before else [])
    rows = []
    for size in args.sizes:
        for workers in args.workers:
            rates: dict[str, list[float]] = {k: [] for k in kinds}
            for _ in range(args.repeats):
                for kind in kinds:
                    before = kind.endswith("_before")
                    case = {
                        "kind": kind.removesuffix("_before"),
                        "data": str(data),
                        "size": size,
                        "workers": workers,
                        "epochs": 2 if args.tiny else EPOCHS[size],
                        "out": str(work / "runs" / kind),
                    }
                    rates[kind].append(spawn(case, args.before if before else None))
            row = {
                "size": size,
                "workers": workers,
                **{k: statistics.median(v) for k, v in rates.items()},
                "all": rates,
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "all"}), flush=True)
    print(markdown(rows, bool(args.before)))
    if args.json:
        args.json.write_text(
            json.dumps({"loadavg_at_start": os.getloadavg()[0], "nproc": os.cpu_count(), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
