"""Compare training recipes by K-fold cross-validation of train+validation, the test split unread.

Each recipe is a set of extra train_hf.py flags. Every (recipe, fold) pair is one train_hf.py run
with ``--cv_folds K --cv_fold i --seed i`` (the folds are the same for every recipe, and so is
the training seed of a fold: the comparison is paired), in its own process with
``--threads`` torch threads, ``--parallel`` at a time. A run whose results.json exists is kept,
so an interrupted comparison resumes. The report ranks the recipes by the mean over folds of the
held-out fold's AUC, each fold's checkpoint chosen on that fold as the recipe would choose it;
it also gives the spread over folds, the mean ACC and the AUC and ACC of all out-of-fold
predictions pooled.

    python benchmarks/cv_recipes.py --work /tmp/cv --folds 5 --parallel 2 \\
        --recipe published= --recipe wdls="--weight_decay 0.05 --label_smoothing_factor 0.1" \\
        -- --subset breastmnist --dataset /tmp/bm --source ../shared/data/medmnist/breastmnist.npz \\
           --preset medmnist --arch resnet --arch_size small
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hfmed import metrics  # noqa: E402


def parse_recipe(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition("=")
    if not sep or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"a recipe is NAME=FLAGS (FLAGS may be empty), got {text!r}")
    return name, shlex.split(flags)


def launch(command: list[str], log: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        return subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)


def run_all(jobs: list[tuple[list[str], Path]], parallel: int, threads: int) -> None:
    """Run (command, output folder) jobs, ``parallel`` at a time; stop at the first failure."""
    pending = [job for job in jobs if not (job[1] / "results.json").is_file()]
    running: list[tuple[subprocess.Popen, Path]] = []
    while pending or running:
        while pending and len(running) < parallel:
            command, out = pending.pop(0)
            print(f"start {out}", flush=True)
            running.append((launch(command, out.with_suffix(".log"), threads), out))
        time.sleep(2)
        for process, out in list(running):
            if process.poll() is None:
                continue
            running.remove((process, out))
            if process.returncode != 0:
                for other, _ in running:
                    other.terminate()
                raise SystemExit(f"{out} failed (exit {process.returncode}); see {out.with_suffix('.log')}")
            print(f"done  {out}", flush=True)


def summarize(work: Path, recipes: list[tuple[str, list[str]]], folds: int) -> list[dict]:
    rows = []
    for name, flags in recipes:
        aucs, accs, labels, scores, task = [], [], [], [], None
        for fold in range(folds):
            out = work / name / f"fold{fold}"
            results = json.loads((out / "results.json").read_text())
            task = results["task_type"]
            aucs.append(results["validation"]["auc"])
            accs.append(results["validation"]["acc"])
            with np.load(out / "predictions.npz") as npz:
                labels.append(npz["validation_labels"])
                scores.append(npz["validation_scores"])
        pooled = metrics.compute(task, np.concatenate(labels), np.concatenate(scores))
        rows.append(
            {
                "recipe": name,
                "flags": shlex.join(flags),
                "fold_auc": aucs,
                "fold_acc": accs,
                "mean_auc": float(np.mean(aucs)),
                "sd_auc": float(np.std(aucs, ddof=1)),
                "mean_acc": float(np.mean(accs)),
                "pooled_auc": pooled["auc"],
                "pooled_acc": pooled["acc"],
            }
        )
    return sorted(rows, key=lambda r: -r["mean_auc"])


def markdown(rows: list[dict]) -> str:
    lines = [
        "| recipe | flags | fold AUC (mean +- sd) | fold ACC (mean) | pooled out-of-fold AUC / ACC | fold AUCs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | `{r['flags'] or '(none)'}` | {r['mean_auc']:.3f} +- "
            f"{r['sd_auc']:.3f} | {r['mean_acc']:.3f} "
            f"| {r['pooled_auc']:.3f} / {r['pooled_acc']:.3f} | {' '.join(f'{a:.3f}' for a in r['fold_auc'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    common = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs: WORK/<recipe>/fold<i>")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--recipe", type=parse_recipe, action="append", required=True, help="NAME=FLAGS, repeatable")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--json", type=Path, help="write the summary here too")
    args = parser.parse_args(own)
    names = [name for name, _ in args.recipe]
    if len(set(names)) != len(names):
        parser.error("recipe names must differ")
    if any(
        flag.startswith(("--cv_fold", "--output_dir", "--seed"))
        for flag in common + [f for _, fl in args.recipe for f in fl]
    ):
        parser.error("--cv_folds, --cv_fold, --output_dir and --seed are set per run by this script")
    jobs = []
    for fold in range(args.folds):  # fold by fold, so that a partial comparison is a paired one
        for name, flags in args.recipe:
            out = args.work / name / f"fold{fold}"
            command = [
                sys.executable,
                "train_hf.py",
                *common,
                *flags,
                "--cv_folds",
                str(args.folds),
                "--cv_fold",
                str(fold),
                "--seed",
                str(fold),
                "--output_dir",
                str(out),
            ]
            jobs.append((command, out))
    run_all(jobs, args.parallel, args.threads)
    rows = summarize(args.work, args.recipe, args.folds)
    print(markdown(rows))
    print(f"\nchosen by mean fold AUC: {rows[0]['recipe']}")
    if args.json:
        args.json.write_text(
            json.dumps({"folds": args.folds, "common_flags": shlex.join(common), "recipes": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
