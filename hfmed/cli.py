"""The ``hfmed`` command line.

User mistakes (a bad file, a wrong option) end as one line on stderr and exit code 2; a build that
differs from its source ends with exit code 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hfmed.errors import UserError

if TYPE_CHECKING:
    from hfmed.hub import PushResult

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_list(args: argparse.Namespace) -> int:
    from hfmed import registry

    print(_table(registry.get(args.collection).listing()))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from hfmed.build import build

    result = build(
        args.collection,
        args.names,
        all_configs=args.all,
        size=args.size,
        source=args.source,
        out=args.out,
        overwrite=args.overwrite,
        options={"unofficial": True} if args.unofficial else {},
        threads=args.threads,
        progress=not args.quiet,
        on_built=lambda name, path: print(f"built {name} -> {path}"),
    )
    if args.all:
        print(f"{len(result.built)} config(s) built, {len(result.skipped)} already complete in {result.out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from hfmed.verify import verify

    for report in verify(args.folder, args.config, args.source):
        print(f"{args.config} {report.split}: {report.rows} rows identical to the source")
    print(f"verified: {args.config} in {args.folder} is byte-identical to its source")
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def cmd_check(args: argparse.Namespace) -> int:
    from hfmed.hub import check

    report = check(args.folder)
    for line in report.problems:
        print(line)
    for line in report.warnings:
        print(f"warning: {line}")
    if report.problems:
        print(f"{len(report.problems)} problem(s) in {args.folder}", file=sys.stderr)
        return 1
    print(
        f"{args.folder}: ready for the Hub: {len(report.configs)} config(s), {len(report.files)} files, "
        f"{_size(report.total_bytes)}; checked offline (the Hub's online YAML validation was not contacted)"
    )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from hfmed.hub import PushRefused, push

    def announce(plan: PushResult) -> None:
        print(f"uploading {len(plan.files)} files ({_size(plan.total_bytes)}) to {plan.target}", file=sys.stderr)

    options = {"revision": args.revision, "private": args.private, "create_pr": args.create_pr, "token": args.token}
    try:
        result = push(
            args.folder,
            args.repo,
            **options,
            dry_run=args.dry_run,
            force=args.force,
            message=args.message,
            on_upload=announce,
        )
    except PushRefused as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        raise
    if result.dry_run:
        for f in result.files:
            print(f"{(result.folder / f).stat().st_size:>14,}  {f.as_posix()}")
        total = result.total_bytes
        print(
            f"dry run: {len(result.files)} files, {_size(total)} ({total:,} bytes) would be "
            f"uploaded to {result.target}; "
            f"the card's loading examples would name {result.repo}"
        )
        return 0
    print(f"pushed {len(result.files)} files ({_size(result.total_bytes)}) to {result.url}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from hfmed.ensemble import SCORED_SPLITS, ensemble

    results = ensemble(args.runs, args.out, overwrite=args.overwrite)
    for split in SCORED_SPLITS:
        figures = results[split]
        print(f"{split}: AUC {figures['auc']:.4f}  ACC {figures['acc']:.4f}")
    print(f"ensemble of {len(results['members'])} runs -> {args.out}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from hfmed import benchmark
    from hfmed.benchmark.budget import parse_budget

    if args.report:
        if args.subset or args.out:
            raise UserError(
                "--report DIR writes the table of finished benchmarks; give it alone, without --subset or --out"
            )
        made = benchmark.write_report(Path(args.report))
        plot = f", {made['plot']}" if made["plot"] else ""
        print(f"{len(made['subsets'])} subset(s): {', '.join(made['subsets'])} -> {made['markdown']}{plot}")
        return 0
    if not (args.subset and args.budget and args.out):
        raise UserError(
            "hfmed benchmark needs --subset, --budget and --out (or --report DIR); "
            "e.g. --subset breastmnist --budget 1h --out runs/breast"
        )
    try:
        seconds = parse_budget(args.budget)
    except ValueError as e:
        raise UserError(str(e)) from None
    data = {"collection": args.collection, "dataset": args.dataset, "size": args.size, "task": args.task}
    # SIGTERM (a batch scheduler's, a session's end) stops a benchmark as Ctrl-C does: its runs are
    # stopped and the time spent is kept for the resume, instead of the process vanishing mid-round.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.subset == "all":
            done = benchmark.run_decathlon(
                list(benchmark.SUBSETS), seconds, Path(args.out), source=args.source, parallel=args.parallel, **data
            )
        else:
            target = benchmark.Target(subset=args.subset, source=args.source, **data)
            done = [benchmark.run_subset(target, seconds, Path(args.out), parallel=args.parallel)]
    finally:
        signal.signal(signal.SIGTERM, previous)
    for result in done:
        test = result.results["test"]
        print(
            f"{result.results['subset']}: test AUC {test['auc']:.4f} "
            f"({test['auc_95ci'][0]:.3f}-{test['auc_95ci'][1]:.3f})  "
            f"ACC {test['acc']:.4f} ({test['acc_95ci'][0]:.3f}-{test['acc_95ci'][1]:.3f})  "
            f"{result.results['benchmark'].get('ensemble', result.results['benchmark']['winner'])} -> {result.out}"
        )
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_view(args: argparse.Namespace) -> int:
    from hfmed import view

    viewer = view.start(args.folder, host=args.host, port=args.port, config=args.config)
    print(f"serving {viewer.catalog.folder} at {viewer.url(args.config)}  (Ctrl-C stops)", flush=True)
    if not viewer.loopback:
        print(
            f"hfmed: warning: listening on {args.host}: anyone who can reach this machine can read this build",
            file=sys.stderr,
        )
    viewer.run()
    print("hfmed view: stopped", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    from hfmed import registry

    collections = registry.names()
    p = argparse.ArgumentParser(prog="hfmed", description="MedMNIST and MedIMeta as Hugging Face datasets.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list the subsets of a collection and their facts")
    ls.add_argument("collection", nargs="?", default="medmnist", choices=collections)
    ls.set_defaults(func=cmd_list)

    b = sub.add_parser("build", help="convert official files into a dataset folder")
    b.add_argument("collection", choices=collections)
    b.add_argument("names", nargs="*", help="subsets/configs to build (e.g. pneumoniamnist, retinamnist_224, bus)")
    b.add_argument(
        "--all", action="store_true", help="every config of the collection; complete ones are kept (resumable)"
    )
    b.add_argument("--size", type=int, help="MedMNIST image size: 28, 64, 128 or 224 (3D: 28 or 64)")
    b.add_argument(
        "--source", help="a local .npz file, or a folder holding the official files / MedIMeta dataset folders"
    )
    b.add_argument("--out", help="output folder (default: ./<collection>)")
    b.add_argument("--overwrite", action="store_true", help="rebuild configs that already exist")
    b.add_argument(
        "--unofficial",
        action="store_true",
        help="accept a MedMNIST file whose split sizes differ from the official release",
    )
    b.add_argument("--threads", type=int, help="encoding threads (default: all cores)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("verify", help="prove a built config identical to its source")
    v.add_argument("folder", help="the built dataset folder (e.g. medmnist)")
    v.add_argument("--config", required=True, help="the config to verify")
    v.add_argument("--source", help="the source file or folder, when it is not the cached download")
    v.set_defaults(func=cmd_verify)

    w = sub.add_parser(
        "view", help="browse a build on localhost as the Hub's viewer will show it; look inside 3D volumes"
    )
    w.add_argument("folder", help="the built dataset folder (e.g. medmnist)")
    w.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one, printed)")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    w.add_argument("--config", help="open the page on this config")
    w.set_defaults(func=cmd_view)

    _add_ensemble_command(sub)
    _add_benchmark_command(sub, collections)
    _add_hub_commands(sub)
    return p


def _add_hub_commands(sub: Subcommands) -> None:
    c = sub.add_parser(
        "check",
        help="check offline that a built folder is ready for the Hub and its viewer",
        description="Check a built folder offline: card YAML, data_files globs, schemas, embedded "
        "images, row-group sizes, "
        "config count, no .py files, and that every config streams with load_dataset. Prints one line per problem; "
        "exit code 0 when clean, 1 when problems were found, 2 when the folder cannot be checked. The Hub's online "
        "YAML validation is not contacted.",
    )
    c.add_argument("folder", help="the built dataset folder (e.g. medmnist)")
    c.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "push",
        help="upload a built folder to a Hub dataset repository (resumable)",
        description="Check the folder, then upload its card, shards and montages to a Hub dataset repository, creating "
        "it if needed. The token comes from --token, HF_TOKEN or `hf auth login`, and is never printed. Rerunning an "
        "interrupted push continues where it stopped. The folder is the whole dataset: the pushed card lists only its "
        "configs. The card's loading examples are rewritten to name --repo before the upload.",
    )
    p.add_argument("folder", help="the built dataset folder (e.g. medmnist)")
    p.add_argument("--repo", required=True, help="the dataset repository, ORG/NAME (e.g. my-org/medmnist)")
    p.add_argument(
        "--private", action="store_true", help="create the repository private (an existing one keeps its visibility)"
    )
    p.add_argument(
        "--revision",
        help="branch to push to; created from the default branch if missing (refs/pr/N continues a pull request)",
    )
    p.add_argument(
        "--create-pr",
        action="store_true",
        help="open a pull request against the default branch instead of committing to it; "
        "to continue an interrupted one, "
        "rerun with --revision refs/pr/N instead. With huggingface_hub older than 2 "
        "this is a single, non-resumable commit "
        "(upload_folder), since upload_large_folder cannot open pull requests",
    )
    p.add_argument("--message", default="Upload dataset with hfmed", help="commit message")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the files and total size that would be uploaded; no network, no token",
    )
    p.add_argument("--force", action="store_true", help="push even if `hfmed check` finds problems")
    p.add_argument(
        "--token",
        help="Hugging Face token (default: HF_TOKEN or the stored login); prefer HF_TOKEN, "
        "a command line is visible to other users",
    )
    p.set_defaults(func=cmd_push)


def _add_ensemble_command(sub: Subcommands) -> None:
    e = sub.add_parser(
        "ensemble",
        help="average the predictions of several train_hf.py runs (same task) and report the ensemble",
        description="Average the validation and test probabilities of finished train_hf.py runs of one task; "
        "writes results.json, results.md, roc_curve.png, confusion_matrix.png and predictions.npz.",
    )
    e.add_argument("runs", nargs="+", help="output folders of train_hf.py runs (two or more)")
    e.add_argument("--out", required=True, help="folder for the ensemble's report (new, or with --overwrite)")
    e.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    e.set_defaults(func=cmd_ensemble)


def _add_benchmark_command(sub: Subcommands, collections: list[str]) -> None:
    b = sub.add_parser(
        "benchmark",
        help="the MedMNIST Classification Decathlon in one command: search, select, ensemble, report (test read once)",
        description="Choose a recipe by cross-validation of train+validation within a wall-time budget, train it "
        "with several seeds, evaluate their average once on test, and report it beside the published rows. Rerun "
        "the same command to resume.",
    )
    b.add_argument("--subset", help="a subset (e.g. breastmnist), or `all` for the ten subsets of the decathlon")
    b.add_argument("--budget", help="wall time per subset: 90s, 45m, 1h, 1.5h")
    b.add_argument("--out", help="folder for the runs and the report (new, or an earlier benchmark's, to resume)")
    b.add_argument(
        "--report",
        metavar="DIR",
        help="write the decathlon table (results.md, decathlon.png) for the benchmarks in DIR",
    )
    b.add_argument("--collection", default="medmnist", choices=collections)
    b.add_argument("--dataset", help="the built dataset folder (default: ./<collection>)")
    b.add_argument("--source", help="an official .npz to build the subset from (with --subset all: a folder of them)")
    b.add_argument("--size", type=int, default=28, help="MedMNIST image size (default 28)")
    b.add_argument("--task", help="MedIMeta: the label column")
    b.add_argument("--parallel", type=int, help="runs at a time (default: one per GPU, else one per core)")
    b.set_defaults(func=cmd_benchmark)


def _warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"hfmed: warning: {message}", file=sys.stderr)


class _LogLine(logging.Handler):
    """The library logs (logging); the command line prints its warnings as one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"hfmed: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _print_library_logs(debug: bool) -> None:
    logger = logging.getLogger("hfmed")
    if not any(isinstance(h, _LogLine) for h in logger.handlers):
        logger.addHandler(_LogLine())
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _print_library_logs(args.debug)
    if not args.debug:
        warnings.showwarning = _warning_line
    try:
        return args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"hfmed: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hfmed: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    except Exception as e:
        from hfmed.verify import VerifyFailed

        if isinstance(e, VerifyFailed) and not args.debug:
            print(f"hfmed: verify failed: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
