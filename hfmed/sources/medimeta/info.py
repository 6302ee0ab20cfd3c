"""``info.yaml``: a MedIMeta dataset's description of itself (tasks, label keys, split sizes, sources).

The file is untrusted: it goes through a safe YAML loader without aliases, with bounded size and
bounded text fields, and no name in it may make a path outside the folder.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hfmed.errors import UserError
from hfmed.sources.medimeta.layout import LABELS_DIR, RESERVED_COLUMNS, SPLIT_FILES, fail, regular_file

MAX_INFO_BYTES = 1 << 20  # the largest official info.yaml is a few KB
MAX_TEXT_CHARS = 20_000  # one text field of info.yaml (a summary, a citation)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CC_LICENSE = re.compile(r"\((CC [A-Z][A-Z -]*? \d\.\d)\)")


def _task_types() -> dict[str, str]:
    from hfmed import facts

    return facts.load("medimeta")["task_targets"]


# --- info.yaml -------------------------------------------------------------------------------
class _InfoLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 booleans, so a label named ``No`` or ``Yes`` stays text.

    Nothing in the info schema is a boolean, while label names are free text; everything else
    (including ``112_120`` read as an integer) is plain ``safe_load`` behaviour.
    """


class _AliasRefused(yaml.YAMLError):
    pass


def _no_aliases(self: _InfoLoader, parent: yaml.Node | None, index: yaml.Node | int | None) -> yaml.Node | None:
    # An alias repeats a node without repeating its text: a 1 KB file can expand to gigabytes.
    if self.check_event(yaml.AliasEvent):
        raise _AliasRefused("uses YAML aliases (*name)")
    return yaml.composer.Composer.compose_node(self, parent, index)


_InfoLoader.compose_node = _no_aliases
_InfoLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def is_dataset_id(name: str) -> bool:
    """A name safe as a folder name: letters, digits, '_', '-', '.', and never '..'."""
    return bool(_ID.fullmatch(name)) and ".." not in name


def snake_case(name: str) -> str:
    """Column name for a task: ``"DR level"`` -> ``dr_level``, ``"calcType"`` -> ``calc_type``."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    if not text:
        return "task"
    return f"task_{text}" if text[0].isdigit() else text


def license_id(text: str) -> str:
    """Hub license id from the license text, e.g. ``... (CC BY-SA 4.0)`` -> ``cc-by-sa-4.0``."""
    m = _CC_LICENSE.search(text or "")
    return m.group(1).lower().replace(" ", "-") if m else "other"


@dataclass(frozen=True)
class Task:
    """One task of a dataset: its labels file, its column, and the key -> class id mapping."""

    name: str  # as written in info.yaml; also the labels file name
    column: str
    type: str  # binary | multi-class | ordinal | multi-label
    keys: tuple[int, ...]  # label keys in ascending order; class id i is keys[i]
    names: tuple[str, ...]  # label names in key order, unique

    @property
    def multi_label(self) -> bool:
        return self.type == "multi-label"

    @property
    def contiguous(self) -> bool:
        return self.keys == tuple(range(len(self.keys)))

    def ids(self, values: np.ndarray) -> np.ndarray:
        """Class ids of label keys (keys already checked against the declared ones)."""
        values = np.asarray(values).astype(np.int64, copy=False)
        if self.contiguous:
            return values
        return np.searchsorted(np.asarray(self.keys, dtype=np.int64), values).astype(np.int64)

    def undeclared(self, values: np.ndarray) -> int | None:
        """The first value that is not a declared key (or not 0/1 for a multi-label task)."""
        values = np.asarray(values)
        if self.multi_label:
            bad = (values != 0) & (values != 1)
        else:
            keys = np.asarray(self.keys, dtype=np.int64)
            pos = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
            bad = keys[pos] != values
        return int(values[bad].flat[0]) if bad.any() else None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "column": self.column,
            "type": self.type,
            "keys": list(self.keys),
            "names": list(self.names),
        }


@dataclass(frozen=True)
class Info:
    """What a dataset's ``info.yaml`` declares, checked and normalised."""

    path: Path
    id: str
    name: str
    domain: str
    summary: str
    license: str
    input_size: tuple[int, int, int]  # (channels, height, width)
    total: int
    splits: dict[str, int]  # our split names -> declared sizes
    original_splits: dict[str, int] | None
    tasks: tuple[Task, ...]
    original_data: tuple[dict[str, Any], ...] = field(default=())  # name, url, license, citations
    homepage: str = ""
    doi: str = ""

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def image_shape(self) -> tuple[int, ...]:
        c, h, w = self.input_size
        return (h, w) if c == 1 else (h, w, c)

    def split_sizes(self, kind: str) -> dict[str, int] | None:
        return self.splits if kind == "splits" else self.original_splits


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _BadText(ValueError):
    """A text field that is not plain text of bounded size (reported with the file's path)."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict, set, bytes)):
        raise _BadText(f"holds a {type(value).__name__} where text is expected ({str(value)[:40]}...)")
    text = str(value)
    if len(text) > MAX_TEXT_CHARS:
        raise _BadText(f"holds a text field of {len(text):,} characters (at most {MAX_TEXT_CHARS:,})")
    return " ".join(text.split())


def _sizes(path: Path, raw: Any, key: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise fail(
            path, f"'{key}' must map train/val/test to image counts; this info.yaml is not in the MedIMeta format"
        )
    out = {}
    for split, stem in SPLIT_FILES.items():
        n = raw.get(stem, 0)
        if not _int(n) or n < 0:
            raise fail(path, f"'{key}.{stem}' is {n!r}, expected a count of images (a whole number >= 0)")
        out[split] = n
    extra = sorted(set(map(str, raw)) - set(SPLIT_FILES.values()))
    if extra:
        raise fail(path, f"'{key}' names unknown split(s) {', '.join(extra)}; MedIMeta splits are train, val and test")
    return out


def _check_task_name(path: Path, name: Any, index: int) -> str:
    if not isinstance(name, str) or not name.strip():
        raise fail(path, f"task {index + 1} has task_name {name!r}; every task needs a name (it names its labels file)")
    if any(c in name for c in "/\\\0") or ".." in name or name != name.strip():
        raise fail(
            path,
            f"task name {name!r} cannot name a file inside {LABELS_DIR}/ (it holds a path separator, '..', "
            "a NUL or surrounding spaces); rename the task in info.yaml and its labels file to match",
        )
    return name


def _parse_task(
    path: Path, raw: Any, index: int, types: dict[str, str]
) -> tuple[str, str, tuple[int, ...], tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise fail(path, f"task {index + 1} is not a mapping with task_name, task_target and labels")
    name = _check_task_name(path, raw.get("task_name"), index)
    target = raw.get("task_target")
    if target not in types:
        raise fail(path, f"task {name!r} has task_target {target!r}; supported: {', '.join(types)}")
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise fail(path, f"task {name!r} has no 'labels' mapping of label keys to names")
    bad = [k for k in labels if not _int(k)]
    if bad:
        raise fail(path, f"task {name!r} has label key {bad[0]!r}; label keys must be whole numbers")
    keys = tuple(sorted(labels))
    names = []
    for k in keys:
        text = _text(labels[k])
        if not text:
            raise fail(path, f"task {name!r}: label {k} has no name")
        names.append(text)
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    # ClassLabel needs unique names; a repeated name keeps its key so nothing is merged
    names = [f"{n} ({k})" if seen[n] > 1 else n for n, k in zip(names, keys)]
    return name, types[target], keys, tuple(names)


def _columns(task_names: list[str]) -> list[str]:
    """Snake-case columns, made unique in task order (``image`` and ``patient_id`` are ours)."""
    taken = set(RESERVED_COLUMNS)
    out = []
    for name in task_names:
        base = snake_case(name)
        col, n = base, 2
        while col in taken:
            col, n = f"{base}_{n}", n + 1
        taken.add(col)
        out.append(col)
    return out


def _original_data(raw: Any) -> tuple[dict[str, Any], ...]:
    """The sources a dataset was made from, with whitespace collapsed (YAML folds long lines)."""
    out = []
    for source in raw if isinstance(raw, list) else []:
        if isinstance(source, dict):
            cites = source.get("citations")
            cites = [_text(c) for c in cites if _text(c)] if isinstance(cites, list) else []
            out.append(
                {
                    "name": _text(source.get("name")),
                    "url": _text(source.get("url")),
                    "license": _text(source.get("license")),
                    "citations": cites,
                }
            )
    return tuple(out)


def parse_info(path: str | Path, root: Path | None = None) -> Info:
    """Read and check one ``info.yaml``; every problem is one :class:`UserError` line."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise UserError(
            f"{path}: missing; a MedIMeta dataset folder holds its info.yaml (download the complete folder)"
        )
    regular_file(path, root or path.parent)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INFO_BYTES + 1)
        if len(data) > MAX_INFO_BYTES:
            raise fail(
                path,
                f"is larger than {MAX_INFO_BYTES >> 20} MiB; a MedIMeta info.yaml is a few KB, restore the original",
            )
        raw = yaml.load(data.decode("utf-8"), Loader=_InfoLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as e:
        raise fail(path, f"{e}; MedIMeta info files use none, restore the original info.yaml") from None
    except RecursionError:
        raise fail(path, "nests YAML too deeply; restore the original info.yaml") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise fail(
            path,
            f"malformed YAML{line} ({getattr(e, 'problem', None) or 'syntax error'}); restore the original info.yaml",
        ) from None
    except UnicodeDecodeError:
        raise fail(path, "not UTF-8 text; restore the original info.yaml") from None
    except OSError as e:
        raise fail(path, f"cannot be read ({e.strerror}); check its permissions") from None
    try:
        return _info_from(path, raw)
    except _BadText as e:
        raise fail(path, f"{e}; text fields must be plain text, restore the original info.yaml") from None


def _info_from(path: Path, raw: Any) -> Info:
    if not isinstance(raw, dict) or not {"id", "tasks", "input_size"} <= set(map(str, raw)):
        raise fail(
            path,
            "not a MedIMeta info.yaml (it needs id, tasks and input_size); point --source "
            "at the MedIMeta dataset folders",
        )
    ds_id = raw["id"]
    if not isinstance(ds_id, str) or not is_dataset_id(ds_id):
        raise fail(path, f"id {ds_id!r} is not a dataset id (letters, digits, '_', '-', '.')")
    size = raw["input_size"]
    if not (isinstance(size, list) and len(size) == 3 and all(_int(v) and v > 0 for v in size) and size[0] in (1, 3)):
        raise fail(path, f"input_size {size!r} is not [channels, height, width] with 1 or 3 channels")
    tasks_raw = raw["tasks"]
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise fail(path, "'tasks' must be a non-empty list of tasks")
    types = _task_types()
    parsed = [_parse_task(path, t, i, types) for i, t in enumerate(tasks_raw)]
    names = [p[0] for p in parsed]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise fail(path, f"task {dup!r} is declared twice; task names must be unique (each names one labels file)")
    tasks = tuple(Task(n, col, typ, keys, lab) for (n, typ, keys, lab), col in zip(parsed, _columns(names)))
    total = raw.get("total_num_samples")
    if not _int(total) or total < 0:
        raise fail(path, f"total_num_samples is {total!r}, expected the number of images")
    splits = _sizes(path, raw.get("splits_num_samples"), "splits_num_samples")
    original = raw.get("original_splits_num_samples")
    original = _sizes(path, original, "original_splits_num_samples") if original is not None else None
    return Info(
        path=path,
        id=ds_id,
        name=_text(raw.get("name")) or ds_id,
        domain=_text(raw.get("domain")),
        summary=_text(raw.get("summary")),
        license=_text(raw.get("license")),
        input_size=tuple(size),
        total=total,
        splits=splits,
        original_splits=original,
        tasks=tasks,
        original_data=_original_data(raw.get("original_data")),
        homepage=_text(raw.get("project_website")),
        doi=_text(raw.get("DOI")),
    )


def summarize(info: Info) -> dict[str, Any]:
    """The facts-table entry of a dataset (``loading_scripts/medimeta.yaml`` holds these for the 19)."""
    return {
        "name": info.name,
        "domain": info.domain,
        "input_size": list(info.input_size),
        "images": info.total,
        "splits": dict(info.splits),
        "original_splits": dict(info.original_splits) if info.original_splits is not None else None,
        "license": info.license,
        "license_id": license_id(info.license),
        "tasks": [
            {"name": t.name, "column": t.column, "type": t.type, "labels": dict(zip(t.keys, t.names))}
            for t in info.tasks
        ],
        "original_data": [dict(o) for o in info.original_data],
    }
