"""train_hf.py through torchrun with one process and with two: does reading per rank scale?

Each process reads its own share of the rows (``hfmed.loaders.plan``); the figure is the training
images per second of the whole run (``train_images_per_second`` of results.json, all ranks), with
one process and with two, same per-device batch and steps, and their ratio. With two GPUs each
rank has its own (NCCL). With one GPU (``--share-gpu``) both ranks run on it: NCCL refuses two
ranks on one device, so the ranks talk through gloo, and the GPU's compute is shared, so the
ratio then measures what the input pipeline and the shared device allow, not scaling.

    python benchmarks/bench_ddp.py --data /tmp/hfmed-bench/medmnist --json $OUT/ddp.json           # GPU: ViT-B/16, bf16
    python benchmarks/bench_ddp.py --data /tmp/hfmed-bench/tiny/medmnist --tiny                       # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from train_flags import TRAINING_ONLY

ROOT = Path(__file__).resolve().parent.parent


def train_argv(args, out: Path) -> list[str]:
    argv = [
        "--dataset",
        str(args.data),
        "--subset",
        "pneumoniamnist",
        "--size",
        "224",
        "--preset",
        "finetune",
        "--arch",
        "vit",
        "--arch_size",
        "nano" if args.tiny else "base",
        "--per_device_train_batch_size",
        str(args.batch_size),
        "--per_device_eval_batch_size",
        "256",
        "--max_steps",
        str(args.steps),
        "--dataloader_num_workers",
        str(args.workers),
        *TRAINING_ONLY,
        "--output_dir",
        str(out),
    ]
    if args.tiny:
        return argv + ["--use_cpu", "true", "--ddp_backend", "gloo"]
    return argv + ["--bf16", "true"] + (["--ddp_backend", "gloo"] if args.share_gpu else [])


def launch(args, nproc: int) -> dict:
    out = args.work / f"ddp{nproc}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
    }
    if args.tiny:
        env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        __file__,
        "--rank-main",
        *(["--share-gpu"] if args.share_gpu else []),
        "--",
        *train_argv(args, out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    results = json.loads((out / "results.json").read_text())
    keys = (
        "train_images_per_second",
        "train_seconds",
        "wall_time_seconds",
        "train_batches_per_rank",
        "num_processes",
        "device",
        "precision",
    )
    return {k: results[k] for k in keys}


def rank_main(share_gpu: bool, argv: list[str]) -> int:
    if share_gpu:
        os.environ["LOCAL_RANK"] = "0"  # every rank on the one GPU (accelerate picks cuda:LOCAL_RANK)
    sys.path.insert(0, str(ROOT))
    import train_hf

    return train_hf.main(argv)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", type=Path, help="a medmnist build holding pneumoniamnist_224 (bench_loaders' or bench_train --tiny's)"
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/hfmed-ddp"))
    p.add_argument("--batch-size", type=int, help="per process; default 128 (--tiny: 8)")
    p.add_argument("--steps", type=int, help="optimizer steps per run; default 60 (--tiny: 4)")
    p.add_argument("--workers", type=int, help="loader workers per process; default 6 (--tiny: 0)")
    p.add_argument("--share-gpu", action="store_true", help="two ranks on one GPU (gloo)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: nano ViT, gloo")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--json", type=Path)
    p.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank_main:
        sys.exit(rank_main(args.share_gpu, [a for a in args.rest if a != "--"]))
    for name, full, tiny in (("batch_size", 128, 8), ("steps", 60, 4), ("workers", 6, 0)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    if args.data is None:
        p.error("--data is required")
    args.work = args.work.resolve()
    runs = {f"{n}_process": launch(args, n) for n in (1, 2)}
    one, two = (runs[k].get("train_images_per_second") for k in ("1_process", "2_process"))
    report = {
        "runs": runs,
        "scaling": (two / one) if one and two else None,
        "share_gpu": args.share_gpu,
        "settings": {"batch_size": args.batch_size, "steps": args.steps, "workers": args.workers, "tiny": args.tiny},
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
