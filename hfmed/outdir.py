"""What hfmed may touch in an output folder: only what it wrote, and never a source.

An ``--out`` folder may also hold the user's own files. hfmed recognises its own by marks that do
not depend on time, process or path, so builds stay byte-identical:

- a shard carries the ``hfmed`` entry in its Parquet schema metadata (``features.HFMED_METADATA_KEY``);
- a config folder is a real folder that holds nothing but such shards;
- the card (``README.md``) carries ``hfmed:`` in its YAML header (cards of earlier versions are
  recognised by the sentence every hfmed card has, "built with hfmed <version>");
- a montage PNG carries a ``Software: hfmed`` text chunk;
- working files are hidden and named with the writing process's id (``.hfmed-tmp-<config>-<pid>``,
  ``.README.md.<pid>.tmp``): they are removed only once that process is gone.

Everything else is left alone; where hfmed would have to replace something it did not write, it
stops with one line instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from hfmed.errors import UserError

CARD = "README.md"
CARD_MARK_KEY = "hfmed"  # YAML key of the card's header
PNG_MARK = ("Software", "hfmed")  # tEXt chunk of every montage
LOCK_PREFIX = ".hfmed-lock-"
SHARD_NAME = re.compile(r"[A-Za-z0-9_.]+-\d{5}-of-\d{5}\.parquet")
_LEGACY_CARD = re.compile(r"\(built with hfmed \d[^)]*\)")
# Only the working files of what hfmed writes beside the shards: the card, LICENSE, montages.
_PID_TMP = re.compile(r"\.(?P<name>README\.md|LICENSE|[A-Za-z0-9_]+\.png)\.(?P<pid>\d+)\.tmp")


# --- marks -------------------------------------------------------------------------------------


def shard_collection(path: Path) -> str | None:
    """The collection recorded in a shard hfmed wrote, or None if ``path`` is not one."""
    import pyarrow.parquet as pq

    from hfmed.features import HFMED_METADATA_KEY, read_metadata

    if path.is_symlink() or not path.is_file() or not SHARD_NAME.fullmatch(path.name):
        return None
    try:
        schema = pq.read_schema(path)
    except Exception:  # pyarrow raises several types for files that are not Parquet
        return None
    if HFMED_METADATA_KEY not in (schema.metadata or {}):
        return None
    try:
        return str(read_metadata(schema)[1].get("collection"))
    except Exception:
        return None


def config_collection(folder: Path) -> str | None:
    """The collection of a config folder made only of hfmed shards, or None if it is anything else."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    found = set()
    for entry in folder.iterdir():
        collection = shard_collection(entry)
        if collection is None:
            return None
        found.add(collection)
    return found.pop() if len(found) == 1 else None


def card_header(text: str) -> dict | None:
    import yaml
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    m = REGEX_YAML_BLOCK.search(text)
    if m is None:
        return None
    try:
        data = yaml.safe_load(m.group(2))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def is_our_card(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    header = card_header(text)
    if header is None:
        return False
    return isinstance(header.get(CARD_MARK_KEY), dict) or ("dataset_info" in header and bool(_LEGACY_CARD.search(text)))


def card_collection(path: Path) -> str | None:
    """The collection a card of ours describes (None for an empty build or no card of ours)."""
    if not is_our_card(path):
        return None
    mark = card_header(path.read_text(encoding="utf-8")).get(CARD_MARK_KEY)
    return mark.get("collection") if isinstance(mark, dict) else None


def card_configs(path: Path) -> set[str]:
    """The config names a card of ours declares."""
    header = card_header(path.read_text(encoding="utf-8")) if is_our_card(path) else None
    return {c.get("config_name") for c in (header or {}).get("configs") or [] if isinstance(c, dict)}


def is_our_png(path: Path) -> bool:
    """A montage hfmed wrote: marked, or (before the mark existed) linked by an earlier hfmed card.

    An unmarked montage counts only where the folder's card is a card of ours from before the
    mark and links exactly this file, and the PNG carries no text chunk at all, as those did.
    """
    from PIL import Image

    if path.is_symlink() or not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                return False
            if im.info.get(PNG_MARK[0]) == PNG_MARK[1]:
                return True
            unmarked = not any(isinstance(v, str) for v in im.info.values())
    except Exception:  # not an image at all
        return False
    card = path.parent.parent / CARD
    if not unmarked or not is_our_card(card):
        return False
    text = card.read_text(encoding="utf-8")
    return card_header(text).get(CARD_MARK_KEY) is None and f"({path.parent.name}/{path.name})" in text


def refuse_foreign(path: Path, what: str) -> None:
    """Stop before replacing or removing a file hfmed did not write."""
    raise UserError(
        f"{path}: {what} that hfmed did not write is in the way; move it elsewhere "
        "(hfmed never replaces your files) or choose another --out"
    )


# --- sources -----------------------------------------------------------------------------------


def check_apart(out_dir: Path, sources: list[Path]) -> None:
    """Refuse an ``--out`` that is a source, lies inside a source folder, or contains a source folder.

    A source file inside ``--out`` is allowed: hfmed never writes or removes a file it did not write.
    """
    out = out_dir.expanduser().resolve()
    for source in sources:
        src = source.expanduser().resolve()
        if out == src:
            raise UserError(f"--out {out_dir} is the source {source}; choose an output folder outside the source")
        if src.is_dir() and out.is_relative_to(src):
            raise UserError(
                f"--out {out_dir} lies inside the source folder {source}; choose an output folder outside the source"
            )
        if src.is_dir() and src.is_relative_to(out):
            raise UserError(
                f"--out {out_dir} contains the source folder {source}; choose an output folder that holds no source"
            )


# --- working files -----------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_tmp_files(folder: Path) -> None:
    """Remove hfmed's own ``.<name>.<pid>.tmp`` files left by processes that no longer run.

    Only names hfmed writes this way match: a user's ``.notes.12.tmp`` is never removed.
    """
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        m = _PID_TMP.fullmatch(p.name)
        if m and not p.is_dir() and not pid_alive(int(m["pid"])):
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(out_dir: Path, name: str, *, wait: bool) -> Iterator[None]:
    """Hold ``<out_dir>/.hfmed-lock-<name>`` for the block; refuse at once unless ``wait``.

    The file is removed while still locked; a process that opened it just before checks that the
    file it locked is still the one at the path, and tries again otherwise.
    """
    path = out_dir / f"{LOCK_PREFIX}{name}"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"another hfmed process is building {name} in {out_dir} right now; wait for it to finish, then rerun"
            ) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
