"""Fetching official archives into the local cache.

The MedMNIST archives come from Zenodo and the large ones (224 px, 3D) run to gigabytes, so a
dropped connection must not cost the bytes already received: a download resumes from its
``.part`` file, both across retries within one run and across runs. A file takes its final
name only once its checksum is proven, so whatever sits under that name in the cache can be
trusted without talking to the network.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO

from tqdm import tqdm

from hfmed import __version__
from hfmed.errors import UserError

if TYPE_CHECKING:
    import urllib.response

    # what urlopen answers: an HTTP(S) response, or a file: URL's
    Response = http.client.HTTPResponse | urllib.response.addinfourl

_CHUNK = 1 << 20
_OFFLINE_VALUES = frozenset({"1", "true", "yes", "on"})
_PARTIAL_RANGE = re.compile(r"bytes\s+(\d+)-\d+/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class _Transient(Exception):
    """A failure worth another attempt; the next one resumes from the bytes on disk."""


def cache_dir() -> pathlib.Path:
    """$HFMED_CACHE if set, else $HF_HOME/hfmed if HF_HOME is set, else ~/.cache/hfmed (created on demand).

    HFMED_CACHE exists because home folders on clusters are often small and the archives are
    not; HF_HOME is where a huggingface_hub user has already moved every Hugging Face cache.
    """
    configured = os.environ.get("HFMED_CACHE")
    hf_home = os.environ.get("HF_HOME")
    if configured:
        path = pathlib.Path(configured).expanduser()
    else:
        path = pathlib.Path(hf_home).expanduser() / "hfmed" if hf_home else pathlib.Path.home() / ".cache" / "hfmed"
    _make_folder(path)
    return path


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Read in chunks because the archives can be larger than the machine's memory."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    url: str,
    dest: pathlib.Path,
    md5: str | Iterable[str] | None = None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> pathlib.Path:
    """Make ``dest`` a checked copy of ``url``, downloading only when the cache cannot serve it.

    ``md5`` may name several checksums because a file from a superseded official release is
    as good as the current one; ``None`` trusts whatever arrives. ``dest`` is ours (a cache
    entry), so one that fails its checksum is replaced rather than reported.
    """
    dest = pathlib.Path(dest)
    accepted = _accepted(md5)
    stale = False
    if dest.is_file():
        if accepted is None or md5sum(dest) in accepted:
            return dest
        stale = True
    if _offline():
        problem = "fails its md5 check" if stale else "is not in the cache"
        raise UserError(
            f"{dest} {problem} and {_offline()} is set, so it cannot be fetched from {url}; "
            f"put the official file at {dest}, or pass a local copy with --source"
        )
    _make_folder(dest.parent)
    part = dest.with_name(dest.name + ".part")
    if stale:
        # Removed first so that a failure below never leaves a bad file under the final name.
        _remove(dest)

    last_error: _Transient | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _attempt(url, part, timeout=timeout, progress=progress, label=dest.name)
            break
        except _Transient as err:
            last_error = err
    else:
        raise UserError(
            f"cannot download {url}: {last_error} (gave up after {retries + 1} attempts); "
            "check the connection and run again (a partial download resumes), or pass a local copy with --source"
        )

    if accepted is not None:
        actual = md5sum(part)
        if actual not in accepted:
            _remove(part)
            expected = " or ".join(sorted(accepted))
            raise UserError(
                f"md5 mismatch for {url}: expected {expected}, got {actual}; "
                f"run again to download it afresh, or pass a local copy with --source"
            )
    try:
        os.replace(part, dest)
    except OSError as err:
        raise UserError(
            f"cannot move {part} to {dest}: {_describe(err)}; set HFMED_CACHE to a writable folder"
        ) from err
    return dest


def _accepted(md5: str | Iterable[str] | None) -> frozenset[str] | None:
    if md5 is None:
        return None
    checksums = [md5] if isinstance(md5, str) else list(md5)
    if not checksums:
        raise ValueError("md5 must name at least one checksum, or be None to skip the check")
    return frozenset(checksum.strip().lower() for checksum in checksums)


def _offline() -> str | None:
    """The variable that forbids downloads: HFMED_OFFLINE, or HF_HUB_OFFLINE as huggingface_hub reads it."""
    for name in ("HFMED_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _OFFLINE_VALUES:
            return name
    return None


def _make_folder(path: pathlib.Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the cache folder {path}: {_describe(err)}; set HFMED_CACHE to a writable folder"
        ) from err


def _remove(path: pathlib.Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot remove {path}: {_describe(err)}; delete it by hand or set HFMED_CACHE to a writable folder"
        ) from err


def _describe(err: BaseException) -> str:
    """One line, because the message ends up inside a one-line UserError."""
    reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
    text = " ".join(str(reason).split())
    return text or type(reason).__name__


def _attempt(url: str, part: pathlib.Path, *, timeout: float, progress: bool, label: str) -> None:
    """One request, continuing ``part`` where it stops; on return ``part`` holds the whole file."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"hfmed/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        with err:
            _refused(url, err, part, offset)
        return
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(_describe(err)) from err
    with response:
        _receive(response, part, offset, progress=progress, label=label)


def _refused(url: str, err: urllib.error.HTTPError, part: pathlib.Path, offset: int) -> None:
    """Sort an HTTP error into done (416), worth retrying, or the user's to fix."""
    if err.code == 416 and offset:
        match = _UNSATISFIED_RANGE.fullmatch((err.headers.get("Content-Range") or "").strip())
        if match and int(match.group(1)) != offset:
            # The part is longer than the file: the file changed or the part is junk.
            _remove(part)
            raise _Transient(f"the partial download does not match the server's file of {match.group(1)} bytes")
        return
    if err.code == 429 or err.code >= 500:
        raise _Transient(f"HTTP {err.code} {_describe(err)}")
    raise UserError(
        f"cannot download {url}: HTTP {err.code} {_describe(err)}; check the URL, or pass a local copy with --source"
    )


def _receive(response: Response, part: pathlib.Path, offset: int, *, progress: bool, label: str) -> None:
    length = _as_int(response.headers.get("Content-Length"))
    if response.status == 206:
        match = _PARTIAL_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
        if not match or int(match.group(1)) != offset:
            _remove(part)
            raise _Transient(
                f"the server answered a different range ({response.headers.get('Content-Range')}) than asked for"
            )
        mode, total = "ab", _as_int(match.group(2))
    else:
        # Any full answer (a server that ignores Range, a file: URL) starts over.
        offset, mode, total = 0, "wb", None
    if total is None and length is not None:
        total = offset + length

    try:
        with (
            open(part, mode) as handle,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not (progress and _stderr_is_terminal()),
            ) as bar,
        ):
            received = _copy(response, handle, bar)
    except OSError as err:
        raise UserError(
            f"cannot write {part}: {_describe(err)}; free some space or set HFMED_CACHE to a writable folder"
        ) from err
    # http.client reports a connection closed early as a plain end of body; only the
    # announced length tells a cut download from a finished one.
    if length is not None and received < length:
        raise _Transient(f"the connection closed after {received} of {length} bytes")


def _copy(response: Response, handle: BinaryIO, bar: tqdm) -> int:
    """Network failures become _Transient here so that OSError past this point means the disk.

    ``read1`` hands over whatever has arrived, where ``read`` would hold up to a whole chunk
    in its buffer and lose it to a timeout, leaving nothing on disk to resume from.
    """
    read = getattr(response, "read1", response.read)
    received = 0
    while True:
        try:
            chunk = read(_CHUNK)
        except (OSError, http.client.HTTPException) as err:
            raise _Transient(_describe(err)) from err
        if not chunk:
            return received
        handle.write(chunk)
        received += len(chunk)
        bar.update(len(chunk))


def _as_int(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())
