"""The ``hfmed benchmark`` command: parses, calls the library, prints."""

from __future__ import annotations

from pathlib import Path

from hfmed.errors import UserError


def add_command(sub) -> None:
    from hfmed import registry

    b = sub.add_parser(
        "benchmark",
        help="the MedMNIST Classification Decathlon in one command: search, select, ensemble, report (test read once)",
        description="Choose a recipe by cross-validation of train+validation within a wall-time "
        "budget, train it with several "
        "seeds, evaluate their average once on test, and report it beside the "
        "published rows. Rerun the same command to resume.",
    )
    b.add_argument("--subset", help="a subset (e.g. breastmnist), or `all` for the ten subsets of the decathlon")
    b.add_argument("--budget", help="wall time per subset: 90s, 45m, 1h, 1.5h")
    b.add_argument("--out", help="folder for the runs and the report (new, or an earlier benchmark's, to resume)")
    b.add_argument(
        "--report",
        metavar="DIR",
        help="write the decathlon table (results.md, decathlon.png) for the benchmarks in DIR",
    )
    b.add_argument("--collection", default="medmnist", choices=registry.names())
    b.add_argument("--dataset", help="the built dataset folder (default: ./<collection>)")
    b.add_argument("--source", help="an official .npz to build the subset from (with --subset all: a folder of them)")
    b.add_argument("--size", type=int, default=28, help="MedMNIST image size (default 28)")
    b.add_argument("--task", help="MedIMeta: the label column")
    b.add_argument("--parallel", type=int, help="runs at a time (default: one per GPU, else one per core)")
    b.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args) -> int:
    from hfmed import benchmark
    from hfmed.benchmark.budget import parse_budget

    if args.report:
        if args.subset or args.out:
            raise UserError(
                "--report DIR writes the table of finished benchmarks; give it alone, without --subset or --out"
            )
        made = benchmark.write_report(Path(args.report))
        print(
            f"{len(made['subsets'])} subset(s): {', '.join(made['subsets'])} -> {made['markdown']}"
            + (f", {made['plot']}" if made["plot"] else "")
        )
        return 0
    if not (args.subset and args.budget and args.out):
        raise UserError(
            "hfmed benchmark needs --subset, --budget and --out (or --report DIR); e.g. "
            "--subset breastmnist --budget 1h --out runs/breast"
        )
    try:
        seconds = parse_budget(args.budget)
    except ValueError as e:
        raise UserError(str(e)) from None
    data = {"collection": args.collection, "dataset": args.dataset, "size": args.size, "task": args.task}
    if args.subset == "all":
        done = benchmark.run_decathlon(
            list(benchmark.SUBSETS), seconds, Path(args.out), source=args.source, parallel=args.parallel, **data
        )
    else:
        done = [
            benchmark.run_subset(
                benchmark.Target(subset=args.subset, source=args.source, **data),
                seconds,
                Path(args.out),
                parallel=args.parallel,
            )
        ]
    for result in done:
        test = result.results["test"]
        print(
            f"{result.results['subset']}: test AUC {test['auc']:.4f} "
            f"({test['auc_95ci'][0]:.3f}-{test['auc_95ci'][1]:.3f})  "
            f"ACC {test['acc']:.4f} ({test['acc_95ci'][0]:.3f}-{test['acc_95ci'][1]:.3f})  "
            f"winner {result.record['selection']['winner']} -> {result.out}"
        )
    return 0
