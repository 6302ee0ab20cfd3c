"""The ``hfmed`` command line.

User mistakes (a bad file, a wrong option) end as one line on stderr and exit code 2; a build that
differs from its source ends with exit code 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from hfmed.errors import UserError


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_list(args) -> int:
    from hfmed.builder import builder_class

    print(_table(builder_class(args.collection).listing()))
    return 0


def cmd_build(args) -> int:
    from hfmed import outdir
    from hfmed.builder import builder_class
    from hfmed.writer import build_config, write_card

    cls = builder_class(args.collection)
    source = Path(args.source).expanduser() if args.source else None
    out = Path(args.out or args.collection)
    outdir.check_apart(out, [source] if source is not None else [])
    names = cls.config_names(args.names, all_configs=args.all, size=args.size, source=source)
    options = {"unofficial": True} if args.unofficial else {}
    built = skipped = 0
    for name in names:
        if args.all and not args.overwrite and outdir.config_collection(out / name) == args.collection:
            skipped += 1  # complete: configs are placed whole
            continue
        try:
            builder = cls(name, source, **options)
        except TypeError:
            raise UserError(f"--unofficial applies to medmnist only, not {args.collection}") from None
        path = build_config(builder, out, overwrite=args.overwrite, threads=args.threads, progress=not args.quiet)
        print(f"built {name} -> {path}")
        built += 1
    if args.all:
        if out.is_dir():
            write_card(out)
        print(f"{built} config(s) built, {skipped} already complete in {out}")
    return 0


def cmd_verify(args) -> int:
    from hfmed.verify import verify

    for report in verify(args.folder, args.config, args.source):
        print(f"{args.config} {report.split}: {report.rows} rows identical to the source")
    print(f"verified: {args.config} in {args.folder} is byte-identical to its source")
    return 0


def cmd_view(args) -> int:
    from hfmed import view

    viewer = view.start(args.folder, host=args.host, port=args.port, config=args.config)
    print(f"serving {viewer.catalog.folder} at {viewer.url(args.config)}  (Ctrl-C stops)", flush=True)
    if not viewer.loopback:
        print(f"hfmed: warning: listening on {args.host}: anyone who can reach this machine can read this build", file=sys.stderr)
    viewer.run()
    print("hfmed view: stopped", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hfmed", description="MedMNIST and MedIMeta as Hugging Face datasets.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list the subsets of a collection and their facts")
    ls.add_argument("collection", nargs="?", default="medmnist", choices=["medmnist", "medimeta"])
    ls.set_defaults(func=cmd_list)

    b = sub.add_parser("build", help="convert official files into a dataset folder")
    b.add_argument("collection", choices=["medmnist", "medimeta"])
    b.add_argument("names", nargs="*", help="subsets/configs to build (e.g. pneumoniamnist, retinamnist_224, bus)")
    b.add_argument("--all", action="store_true", help="every config of the collection; complete ones are kept (resumable)")
    b.add_argument("--size", type=int, help="MedMNIST image size: 28, 64, 128 or 224 (3D: 28 or 64)")
    b.add_argument("--source", help="a local .npz file, or a folder holding the official files / MedIMeta dataset folders")
    b.add_argument("--out", help="output folder (default: ./<collection>)")
    b.add_argument("--overwrite", action="store_true", help="rebuild configs that already exist")
    b.add_argument("--unofficial", action="store_true", help="accept a MedMNIST file whose split sizes differ from the official release")
    b.add_argument("--threads", type=int, help="encoding threads (default: all cores)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("verify", help="prove a built config identical to its source")
    v.add_argument("folder", help="the built dataset folder (e.g. medmnist)")
    v.add_argument("--config", required=True, help="the config to verify")
    v.add_argument("--source", help="the source file or folder, when it is not the cached download")
    v.set_defaults(func=cmd_verify)

    w = sub.add_parser("view", help="browse a build on localhost as the Hub's viewer will show it; look inside 3D volumes")
    w.add_argument("folder", help="the built dataset folder (e.g. medmnist)")
    w.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one, printed)")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    w.add_argument("--config", help="open the page on this config")
    w.set_defaults(func=cmd_view)

    from hfmed import ensemble

    ensemble.add_command(sub)
    from hfmed import benchmark

    benchmark.add_command(sub)
    _add_hub_commands(sub)
    return p


def _add_hub_commands(sub) -> None:
    """`check` and `push` live in hfmed.hub; registered here when that module is present."""
    try:
        from hfmed import hub
    except ImportError:
        return
    hub.add_commands(sub)


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"hfmed: warning: {message}", file=sys.stderr)


class _LogLine(logging.Handler):
    """The library logs (logging); the command line prints its warnings as one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"hfmed: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _print_library_logs(debug: bool) -> None:
    for name in ("hfmed", "loading_scripts"):
        logger = logging.getLogger(name)
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
