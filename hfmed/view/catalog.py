"""What a build folder holds, read as the Hub reads it: the card's configs, their splits' shards, their columns.

The card's YAML (``configs`` with ``data_files``, ``dataset_info`` with features) is what ``datasets``
and the Hub's viewer go by, so the viewer goes by it too; a folder without a card falls back to one
config per sub-folder of shards, as ``datasets`` would infer it. Nothing is remembered between
requests: every answer reads the card and the shard footers again, so a config rebuilt while the
viewer runs is shown as it now is. Start-up reads the card only; shards are opened when a config is
asked for, so one broken shard spoils its own config and nothing else.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import yaml

from hfmed.errors import UserError

if TYPE_CHECKING:
    import pyarrow.parquet as pq

CARD = "README.md"
SPLIT_ORDER = ("train", "validation", "test")  # the Hub lists these first, in this order
YAML_BLOCK = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.DOTALL)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml keeps a 60-config card well under 100 ms


class NotFound(Exception):
    """A config, split or file the request names does not exist in this build."""


class Broken(Exception):
    """A config's files cannot be read; the message says which file and what to do."""


@dataclass(frozen=True)
class Column:
    """One column as the viewer renders it."""

    name: str
    kind: str  # "image", "class_label", "label_list", "array3d" or "value"
    names: tuple[str, ...] = ()  # class names by id (class_label, label_list)
    shape: tuple[int, ...] = ()  # array3d
    dtype: str = ""

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "names": list(self.names),
            "shape": list(self.shape),
            "dtype": self.dtype,
        }


@dataclass
class Config:
    name: str
    patterns: dict[str, list[str]]  # split -> data_files patterns relative to the build folder
    declared: list | None = None  # the card's `dataset_info` features (YAML list form), when it has them
    default: bool = False
    declared_rows: dict[str, int] = field(default_factory=dict)  # split -> num_examples in the card


def _names(class_label: dict) -> tuple[str, ...]:
    names = class_label.get("names") or {}
    if isinstance(names, dict):  # the YAML form: {'0': name, ...}
        return tuple(str(names[k]) for k in sorted(names, key=lambda k: int(k)))
    return tuple(str(n) for n in names)


def column_from_yaml(entry: dict) -> Column:
    """A column from the card's YAML form (``datasets`` ``Features._to_yaml_list``)."""
    name = str(entry.get("name"))
    if "list" in entry or "sequence" in entry:
        inner = entry.get("list", entry.get("sequence"))
        if isinstance(inner, dict) and "class_label" in inner:
            return Column(name, "label_list", _names(inner["class_label"]))
        return Column(name, "value", dtype="list")
    dtype = entry.get("dtype")
    if dtype == "image":
        return Column(name, "image")
    if isinstance(dtype, dict) and "class_label" in dtype:
        return Column(name, "class_label", _names(dtype["class_label"]))
    if isinstance(dtype, dict) and "array3_d" in dtype:
        spec = dtype["array3_d"]
        return Column(name, "array3d", shape=tuple(int(s) for s in spec["shape"]), dtype=str(spec.get("dtype", "")))
    return Column(name, "value", dtype=str(dtype))


def column_from_arrow_json(name: str, spec: dict) -> Column:
    """A column from a shard's ``huggingface`` schema metadata (``Features.to_dict`` form)."""
    kind = spec.get("_type")
    if kind == "Image":
        return Column(name, "image")
    if kind == "ClassLabel":
        return Column(name, "class_label", _names(spec))
    if (
        kind in ("List", "Sequence", "LargeList")
        and isinstance(spec.get("feature"), dict)
        and spec["feature"].get("_type") == "ClassLabel"
    ):
        return Column(name, "label_list", _names(spec["feature"]))
    if kind == "Array3D":
        return Column(name, "array3d", shape=tuple(int(s) for s in spec["shape"]), dtype=str(spec.get("dtype", "")))
    return Column(name, "value", dtype=str(spec.get("dtype", kind)))


def _safe_pattern(pattern: str) -> bool:
    p = PurePosixPath(pattern)
    return (
        bool(pattern) and not p.is_absolute() and ".." not in p.parts and "\\" not in pattern and "://" not in pattern
    )


def _split_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


@dataclass
class Build:
    """What the card says at one moment: the configs in order, and the card's Markdown body."""

    configs: list[Config]
    body: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.configs]

    def config(self, name: str) -> Config:
        for c in self.configs:
            if c.name == name:
                return c
        raise NotFound(f"no config {name!r} in this build")


class Catalog:
    """The configs of one build folder; every file it hands out lies inside that folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser().absolute()
        if not self.folder.is_dir():
            raise UserError(
                f"{folder}: no such build folder; build one with `hfmed build` or name the folder that holds README.md"
            )
        self.root = Path(os.path.realpath(self.folder))

    # --- the card ----------------------------------------------------------------------------

    def card(self) -> tuple[dict | None, str]:
        """The card's YAML data (None without a card) and its Markdown body."""
        path = self.folder / CARD
        if not path.is_file():
            return None, ""
        text = path.read_text(encoding="utf-8")
        m = YAML_BLOCK.match(text)
        if not m:
            return None, text
        try:
            data = yaml.load(m.group(1), Loader=_Loader)
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"{path}: the card's YAML header does not parse ({first}); rebuild it with `hfmed build`"
            ) from None
        return (data if isinstance(data, dict) else None), text[m.end() :]

    def read(self) -> Build:
        """The card and the configs it declares, read now (once per request: never kept)."""
        data, body = self.card()
        configs = self._from_card(data) if data and data.get("configs") else self._from_folders()
        return Build(configs, body)

    def _from_card(self, data: dict) -> list[Config]:
        infos = {i.get("config_name", "default"): i for i in data.get("dataset_info") or [] if isinstance(i, dict)}
        if isinstance(data.get("dataset_info"), dict):
            infos = {data["dataset_info"].get("config_name", "default"): data["dataset_info"]}
        out = []
        for entry in data["configs"]:
            if not isinstance(entry, dict):
                continue
            name = str(entry.get("config_name", "default"))
            files = entry.get("data_files") or []
            if isinstance(files, (str, list)) and not (
                isinstance(files, list) and files and isinstance(files[0], dict)
            ):
                files = [{"split": "train", "path": files}]
            patterns: dict[str, list[str]] = {}
            for item in files:
                paths = item.get("path")
                patterns.setdefault(str(item.get("split", "train")), []).extend(
                    paths if isinstance(paths, list) else [paths]
                )
            info = infos.get(name) or {}
            rows = {
                str(s.get("name")): int(s.get("num_examples", 0))
                for s in info.get("splits") or []
                if isinstance(s, dict)
            }
            out.append(
                Config(
                    name,
                    dict(sorted(patterns.items(), key=lambda kv: _split_key(kv[0]))),
                    info.get("features"),
                    bool(entry.get("default")),
                    rows,
                )
            )
        return out

    def _from_folders(self) -> list[Config]:
        out = []
        for sub in sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            splits = sorted({f.name.split("-", 1)[0] for f in sub.glob("*.parquet")}, key=_split_key)
            if splits:
                out.append(Config(sub.name, {s: [f"{sub.name}/{s}-*.parquet"] for s in splits}))
        return out

    # --- files -------------------------------------------------------------------------------

    def inside(self, path: Path) -> Path | None:
        """The real path of ``path`` when it is a regular file inside the build folder, else None."""
        real = Path(os.path.realpath(path))
        if real != self.root and self.root in real.parents and real.is_file():
            return real
        return None

    def shards(self, config: Config, split: str) -> list[Path]:
        """The split's shards in name order; a pattern or file leading outside the folder is an error."""
        if split not in config.patterns:
            raise NotFound(f"config {config.name!r} has no split {split!r}")
        found: set[Path] = set()
        for pattern in config.patterns[split]:
            if not isinstance(pattern, str) or not _safe_pattern(pattern):
                raise Broken(
                    f"{CARD}: data_files pattern {pattern!r} of {config.name}/{split} is not a path "
                    "inside the build folder"
                )
            for path in self.folder.glob(pattern):
                rel = path.relative_to(self.folder)
                if any(part.startswith(".") for part in rel.parts):  # datasets skips hidden files too
                    continue
                real = self.inside(path)
                if real is None:
                    raise Broken(
                        f"{rel}: leads outside the build folder {self.folder}; the viewer reads only files inside it"
                    )
                found.add(path)
        if not found:
            raise Broken(
                f"{config.name}/{split}: the card's data_files {config.patterns[split]} match "
                "no file; rebuild the config with `hfmed build --overwrite`"
            )
        return sorted(found)

    def columns(self, config: Config) -> list[Column]:
        """The card's features for the config, else those stored in its first shard."""
        if isinstance(config.declared, list) and config.declared:
            return [column_from_yaml(e) for e in config.declared if isinstance(e, dict)]
        first = self.shards(config, next(iter(config.patterns)))[0]
        schema = open_parquet(first).schema_arrow
        meta = (schema.metadata or {}).get(b"huggingface")
        features = json.loads(meta).get("info", {}).get("features", {}) if meta else {}
        return [
            column_from_arrow_json(f.name, features.get(f.name, {"_type": "Value", "dtype": str(f.type)}))
            for f in schema
        ]


def open_parquet(path: Path) -> pq.ParquetFile:
    """Open a shard (a ``pyarrow.parquet.ParquetFile``); pyarrow's several error types become one naming the file."""
    import pyarrow.parquet as pq  # not needed to start: the card is read with YAML alone

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise Broken(
            f"{path.parent.name}/{path.name}: not a readable Parquet file ({e}); rebuild "
            "this config with `hfmed build --overwrite`"
        ) from None
