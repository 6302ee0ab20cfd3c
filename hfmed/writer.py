"""Writing one config of a collection as Parquet shards, atomically.

A config is written into a hidden folder beside its final place and renamed into place only
when every split is complete, so a folder that ``load_dataset`` or the Hub sees never holds half
a config: a build that is killed leaves only the hidden folder, which the next run removes.

Shards are planned from the raw bytes of a row so that the layout depends on the source alone
(deterministic names ``<split>-NNNNN-of-MMMMM.parquet``), large splits get several shards for
DataLoader workers to share, and row groups stay far below the viewer's limit.
"""

from __future__ import annotations

import math
import os
import queue
import re
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hfmed import cards, montage, outdir, parquet_options
from hfmed.builder import Builder, SplitGenerator
from hfmed.errors import UserError
from hfmed.features import encode_batch, schema_with_metadata

SHARD_RAW_BYTES = 384 << 20  # raw pixels per shard; PNG makes the file smaller
SHARD_MAX_ROWS = 20_000  # so that large 28 px splits still give workers several shards
ROW_GROUP_RAW_BYTES = (
    16 << 20
)  # far under the 300 MB the viewer reads at once (hfmed.viewer_rules) and datasets' 100 MB
ROW_GROUP_MAX_ROWS = 2_000
TMP_PREFIX = ".hfmed-tmp-"
OLD_PREFIX = ".hfmed-old-"
RESERVED_NAMES = {"readme.md", "images", ".gitattributes"}  # top-level names of the card and montages


@dataclass(frozen=True)
class Plan:
    rows_per_shard: int
    rows_per_group: int
    num_shards: int


def plan_shards(num_rows: int, row_nbytes: int) -> Plan:
    row_nbytes = max(1, row_nbytes)
    per_group = max(1, min(ROW_GROUP_MAX_ROWS, ROW_GROUP_RAW_BYTES // row_nbytes))
    per_shard = max(per_group, min(SHARD_MAX_ROWS, SHARD_RAW_BYTES // row_nbytes))
    per_shard -= per_shard % per_group  # whole row groups per shard
    return Plan(per_shard, per_group, max(1, math.ceil(num_rows / per_shard)))


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def _raw_row_nbytes(batch: dict[str, Any]) -> int:
    total = 0
    for v in batch.values():
        if isinstance(v, np.ndarray) and len(v):
            total += v.nbytes // len(v)
    return total


def _prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Read the next batches in a thread while the current one is encoded (zlib releases the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def run() -> None:
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


def _rebatch(batches: Iterator[dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    """Cut the reader's batches into exactly ``size`` rows so row groups and shards line up."""
    pending: list[dict[str, Any]] = []
    have = 0
    for b in batches:
        n = len(next(iter(b.values())))
        pending.append(b)
        have += n
        while have >= size:
            merged = _concat(pending)
            yield _slice(merged, 0, size)
            rest = _slice(merged, size, have)
            have -= size
            pending = [rest] if have else []
    if have:
        yield _concat(pending)


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        out[k] = np.concatenate(vals) if isinstance(vals[0], np.ndarray) else [x for v in vals for x in v]
    return out


def _slice(batch: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    return {k: v[a:b] for k, v in batch.items()}


def _write_split(
    builder: Builder, split: SplitGenerator, folder: Path, executor: Executor, threads: int, bar: tqdm
) -> None:
    schema = schema_with_metadata(builder.features, builder.metadata())
    source = _prefetch(builder.batches(split))
    try:
        first = next(source)
    except StopIteration:
        raise UserError(
            f"split {split.name} of {builder.config_name} yielded no rows; the source is incomplete"
        ) from None
    plan = plan_shards(split.num_rows, _raw_row_nbytes(first))

    def all_batches() -> Iterator[dict[str, Any]]:
        yield first
        yield from source

    written = 0
    writer = None
    shard = -1
    try:
        for group in _rebatch(all_batches(), plan.rows_per_group):
            n = len(next(iter(group.values())))
            if written + n > split.num_rows:
                raise UserError(
                    f"split {split.name} of {builder.config_name} has more rows than its declared "
                    f"{split.num_rows}; the source is inconsistent"
                )
            if written // plan.rows_per_shard != shard:
                if writer is not None:
                    writer.close()
                shard = written // plan.rows_per_shard
                writer = pq.ParquetWriter(
                    folder / shard_name(split.name, shard, plan.num_shards),
                    schema,
                    **parquet_options.writer_options(builder.features, schema),
                )
            table = encode_batch(builder.features, group, executor, threads).replace_schema_metadata(schema.metadata)
            writer.write_table(table, row_group_size=plan.rows_per_group)
            written += n
            bar.update(n)
    finally:
        if writer is not None:
            writer.close()
    if written != split.num_rows:
        raise UserError(
            f"split {split.name} of {builder.config_name} has {written} rows, expected "
            f"{split.num_rows}; the source is truncated"
        )


def _pid_of(path: Path) -> int | None:
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def clean_stale(out_dir: Path, config: str) -> None:
    """Undo what an interrupted build of this config left behind: ours only (by prefix), and only
    where the process that wrote it is gone, so a build running beside this one keeps its files.

    A build killed between moving the previous config aside and moving the new one in leaves
    the previous one under the ``old`` prefix: it is put back rather than lost.
    """
    final = out_dir / config

    def dead(p: Path) -> bool:
        pid = _pid_of(p)
        return p.is_dir() and not p.is_symlink() and pid is not None and not outdir.pid_alive(pid)

    for p in sorted(out_dir.glob(f"{OLD_PREFIX}{config}-*")):
        if not dead(p):
            continue
        if not final.exists():
            p.rename(final)
        else:
            shutil.rmtree(p, ignore_errors=True)
    for p in out_dir.glob(f"{TMP_PREFIX}{config}-*"):
        if dead(p):
            shutil.rmtree(p, ignore_errors=True)


def _check_collection(out_dir: Path, collection: str) -> None:
    """One collection per folder, checked before anything is written."""
    found = {outdir.card_collection(out_dir / outdir.CARD)}
    for folder in out_dir.iterdir():
        if not folder.name.startswith("."):
            found.add(outdir.config_collection(folder))
    others = sorted(c for c in found - {None, collection})
    if others:
        raise UserError(f"{out_dir} holds a {others[0]} build; build {collection} into its own folder (--out)")


def _check_card_files(out_dir: Path, config: str) -> None:
    """The card and this config's montage may be replaced only if hfmed wrote them."""
    card = out_dir / outdir.CARD
    if (card.exists() or card.is_symlink()) and not outdir.is_our_card(card):
        outdir.refuse_foreign(card, "a README.md")
    folder = out_dir / montage.MONTAGE_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        outdir.refuse_foreign(folder, "an images file")
    picture = out_dir / montage.relative_path(config)
    if (picture.exists() or picture.is_symlink()) and not outdir.is_our_png(picture):
        outdir.refuse_foreign(picture, "an images/ file")


def _prepare(builder: Builder, out_dir: Path, overwrite: bool) -> bool:
    """Checks before the source is read; True when the config is already complete and its card current."""
    final = out_dir / builder.config_name
    if builder.config_name.lower() in RESERVED_NAMES:
        raise UserError(
            f"{builder.config_name!r} cannot be a config: {out_dir / builder.config_name} "
            "is where the card and its montages go; rename the dataset"
        )
    outdir.check_apart(out_dir, builder.source_paths())
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file, not a folder; choose another --out")
    if not out_dir.is_dir():
        return False
    _check_collection(out_dir, builder.collection)
    _check_card_files(out_dir, builder.config_name)
    if not (final.exists() or final.is_symlink()):
        return False
    if outdir.config_collection(final) is None:
        outdir.refuse_foreign(final, f"a folder named {builder.config_name} (holding files other than hfmed shards)")
    card = out_dir / outdir.CARD
    if overwrite:
        return False
    if builder.config_name in outdir.card_configs(card):
        raise UserError(f"{final} already exists; pass --overwrite to rebuild it, or choose another --out")
    return True  # placed by a build that stopped before its card: the card is completed below


def _write_config(builder: Builder, out_dir: Path, overwrite: bool, threads: int, progress: bool) -> Path:
    """Write the config into a hidden folder and move it into place (the config's lock is held)."""
    config = builder.config_name
    final = out_dir / config
    clean_stale(out_dir, config)
    if final.exists() and not overwrite:  # placed meanwhile by a build that finished before this one
        raise UserError(f"{final} already exists; pass --overwrite to rebuild it, or choose another --out")
    splits = builder.splits()  # validates the whole source before anything is written
    tmp = out_dir / f"{TMP_PREFIX}{config}-{os.getpid()}"
    tmp.mkdir()
    total = sum(s.num_rows for s in splits)
    try:
        with (
            ThreadPoolExecutor(threads) as executor,
            tqdm(total=total, desc=config, unit="img", disable=not progress) as bar,
        ):
            for split in splits:
                _write_split(builder, split, tmp, executor, threads, bar)
        if final.exists():
            old = out_dir / f"{OLD_PREFIX}{config}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_card(out_dir: Path) -> Path:
    """The card, rewritten from disk while no other build of this folder writes it."""
    with outdir.locked(out_dir, outdir.CARD, wait=True):
        return cards.write_card(out_dir)


def build_config(
    builder: Builder, out_dir: str | Path, *, overwrite: bool = False, threads: int | None = None, progress: bool = True
) -> Path:
    """Write ``<out_dir>/<config>/`` and refresh ``<out_dir>/README.md``; returns the config folder.

    A config that a stopped build already placed gets its card completed instead of an error.
    A folder that cannot be written (read-only, full) is one line, and what was begun is removed.
    """
    out_dir = Path(out_dir)
    complete = _prepare(builder, out_dir, overwrite)
    created = not out_dir.exists()
    try:
        if not complete:
            out_dir.mkdir(parents=True, exist_ok=True)
            with outdir.locked(out_dir, builder.config_name, wait=False):
                _write_config(builder, out_dir, overwrite, threads or os.cpu_count() or 1, progress)
        write_card(out_dir)
    except BaseException as e:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # the folder as it was: absent
        if isinstance(e, OSError):  # reading errors are UserErrors already; this is the output
            raise UserError(
                f"cannot write into {out_dir} "
                f"({os.strerror(e.errno) if e.errno else _os_reason(e)}); free some space, or "
                "choose a writable --out, and rerun"
            ) from None
        raise
    return out_dir / builder.config_name


def _os_reason(e: BaseException) -> str:
    """Why writing failed, as the OS says it (pyarrow's OSErrors carry the errno in their text only)."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    code = re.search(r"\[errno (\d+)\]", text)
    return os.strerror(int(code.group(1))) if code else text
