"""Where a built split's rows live, and what they mean: `hfmed build` output (its inputs are `hfmed.sources`).

A local build folder and a Hub dataset repository have the same shape (a ``README.md`` whose YAML
lists ``configs`` with their ``data_files``, and Parquet shards), so both resolve to the same
thing: an ordered list of files, their row groups (the unit a Parquet reader fetches at once) and
the schema, whose ``datasets`` features and ``hfmed`` facts say which column holds the images,
which the labels, and what kind of task the labels are.

Local folders are read with pyarrow's native files; Hub repositories through
``huggingface_hub.HfFileSystem`` (``hf://`` paths) when streaming, or downloaded once into the Hub
cache with ``snapshot_download`` when not. Files are opened lazily in each process, so a split
object crosses into DataLoader workers as plain data.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Array3D, ClassLabel, Image, List, Sequence

from hfmed import registry
from hfmed.builder import Builder
from hfmed.errors import UserError
from hfmed.features import read_metadata

if TYPE_CHECKING:
    from datasets.features.features import FeatureType
    from huggingface_hub import HfFileSystem

TASK_TYPES = ("binary", "multi-class", "ordinal", "multi-label")
CARD = "README.md"


def hub_filesystem(token: str | bool | None) -> HfFileSystem:
    """The filesystem Hub repositories are read through (a seam the tests replace with an in-memory one)."""
    from huggingface_hub import HfFileSystem

    return HfFileSystem(token=token)


@dataclass(frozen=True)
class Location:
    """A local build folder, or a Hub dataset repository read over ``hf://``."""

    name: str  # as the user gave it, for messages
    root: str  # a folder path, or ``datasets/<repo>[@<revision>]`` on the Hub filesystem
    remote: bool
    token: str | bool | None = field(default=None, repr=False)

    def glob(self, pattern: str) -> list[str]:
        if self.remote:
            return sorted(hub_filesystem(self.token).glob(f"{self.root}/{pattern}"))
        return sorted(glob.glob(os.path.join(glob.escape(self.root), pattern), recursive=True))

    def read_text(self, name: str) -> str | None:
        try:
            if self.remote:
                return hub_filesystem(self.token).read_text(f"{self.root}/{name}", encoding="utf-8")
            return Path(self.root, name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def open(self, path: str) -> pq.ParquetFile:
        """A Parquet file to read; the caller closes it with ``close(force=True)`` (``opened``)."""
        if self.remote:
            return pq.ParquetFile(hub_filesystem(self.token).open(path, "rb"))
        return pq.ParquetFile(path)

    @contextmanager
    def opened(self, path: str) -> Iterator[pq.ParquetFile]:
        """``open``, closed after, Hub connection included (pyarrow leaves a file object it was
        given open unless forced): nothing of it is left for interpreter exit to tear down."""
        pf = self.open(path)
        try:
            yield pf
        finally:
            pf.close(force=True)


def _hub_failure(repo: str, e: Exception) -> UserError:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return UserError(
        f"cannot read the Hub dataset {repo!r} ({type(e).__name__}: {first}); check the "
        "repo id, your network and token, "
        "or pass the path of a local build folder"
    )


def resolve_location(
    source: str | os.PathLike, *, revision: str | None = None, token: str | bool | None = None
) -> Location:
    """A folder that exists wins; anything else must be a Hub dataset id such as ``my-org/medmnist``."""
    path = Path(source).expanduser()
    if path.is_dir():
        return Location(str(source), str(path), remote=False)
    if path.exists():
        raise UserError(
            f"{source}: a file, not a dataset folder; pass the folder `hfmed build` wrote, or a Hub repo id"
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(source)
    try:
        validate_repo_id(text)
    except HFValidationError:
        text = ""
    if "/" not in text:
        raise UserError(
            f"{source}: no such folder, and not a Hub dataset id (owner/name); build it "
            "with `hfmed build` or check the path"
        )
    root = f"datasets/{text}" + (f"@{quote(revision, safe='')}" if revision else "")
    return Location(text, root, remote=True, token=token)


def download(location: Location, patterns: list[str], *, revision: str | None) -> Location:
    """For ``streaming=False``: the same repository, with the files a split needs, in the Hub cache."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            location.name,
            repo_type="dataset",
            revision=revision,
            token=location.token,
            allow_patterns=[CARD, *patterns],
        )
    except Exception as e:  # offline, unknown repo, gated, bad revision: the user acts on each the same way
        raise _hub_failure(location.name, e) from None
    return Location(location.name, str(folder), remote=False)


def read_card(location: Location) -> dict[str, Any]:
    """The YAML header of the card (``{}`` when there is no card)."""
    from huggingface_hub import DatasetCard

    try:
        text = location.read_text(CARD)
    except Exception as e:
        if location.remote:
            raise _hub_failure(location.name, e) from None
        raise
    if text is None:
        return {}
    try:
        return DatasetCard(text).data.to_dict()
    except Exception as e:  # malformed YAML header
        raise UserError(
            f"{location.name}/{CARD}: the YAML header cannot be read ({e}); rebuild the folder with `hfmed build`"
        ) from None


def card_configs(card: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """``{config: {split: [patterns]}}`` from the card's ``configs`` entries."""
    out: dict[str, dict[str, list[str]]] = {}
    for entry in card.get("configs") or []:
        if not isinstance(entry, dict) or "config_name" not in entry:
            continue
        files = entry.get("data_files")
        splits: dict[str, list[str]] = {}
        if isinstance(files, str):
            splits["train"] = [files]
        elif isinstance(files, dict):
            splits = {str(k): [v] if isinstance(v, str) else list(v) for k, v in files.items()}
        elif isinstance(files, list):
            for item in files:
                if isinstance(item, dict) and "split" in item:
                    paths = item.get("path", [])
                    splits.setdefault(str(item["split"]), []).extend([paths] if isinstance(paths, str) else list(paths))
                elif isinstance(item, str):
                    splits.setdefault("train", []).append(item)
        out[str(entry["config_name"])] = splits
    return out


def default_config(card: dict[str, Any]) -> str | None:
    entries = [e for e in card.get("configs") or [] if isinstance(e, dict) and "config_name" in e]
    for e in entries:
        if e.get("default"):
            return str(e["config_name"])
    return str(entries[0]["config_name"]) if len(entries) == 1 else None


def card_split_sizes(card: dict[str, Any], config: str) -> dict[str, int]:
    for info in card.get("dataset_info") or []:
        if isinstance(info, dict) and info.get("config_name") == config:
            return {
                str(s["name"]): int(s["num_examples"])
                for s in info.get("splits") or []
                if "name" in s and "num_examples" in s
            }
    return {}


@dataclass(frozen=True)
class ConfigFiles:
    """The files of every split of one config, as the card (or, without one, the folder layout) declares."""

    location: Location
    config: str
    patterns: dict[str, list[str]]
    split_sizes: dict[str, int]


def config_files(
    source: str | os.PathLike,
    config: str | None,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    streaming: bool = True,
) -> ConfigFiles:
    location = resolve_location(source, revision=revision, token=token)
    card = read_card(location)
    configs = card_configs(card)
    if config is None:
        config = default_config(card)
        if config is None:
            names = ", ".join(configs) or "none found"
            raise UserError(f"{location.name}: name a config (available: {names})")
    patterns = configs.get(config)
    if patterns is None:
        if configs:
            raise UserError(f"{location.name} has no config {config!r}; available: {', '.join(configs)}")
        # No card: the layout hfmed writes, <config>/<split>-NNNNN-of-MMMMM.parquet.
        names = sorted({Path(p).name.split("-", 1)[0] for p in location.glob(f"{config}/*.parquet")})
        if not names:
            raise UserError(f"{location.name} has no card and no {config}/*.parquet files; build it with `hfmed build`")
        patterns = {s: [f"{config}/{s}-*.parquet"] for s in names}
    if location.remote and not streaming:
        location = download(location, [p for ps in patterns.values() for p in ps], revision=revision)
    return ConfigFiles(location, config, patterns, card_split_sizes(card, config))


@dataclass(frozen=True)
class Unit:
    """One row group of one file."""

    file: int
    group: int
    num_rows: int


@dataclass(frozen=True)
class SplitSource:
    """An ordered list of row groups, the schema, and the columns that make a training example."""

    location: Location
    config: str
    split: str
    files: tuple[str, ...]
    units: tuple[Unit, ...]
    schema: pa.Schema
    row_nbytes: int  # mean bytes of a row as stored (uncompressed Parquet), to bound buffers

    @property
    def num_rows(self) -> int:
        return sum(u.num_rows for u in self.units)

    @property
    def unit_rows(self) -> list[int]:
        return [u.num_rows for u in self.units]

    def open(self, file: int) -> pq.ParquetFile:
        return self.location.open(self.files[file])

    def describe(self) -> str:
        return f"{self.location.name} {self.config}/{self.split}"

    def where(self, unit: int, row: int | None = None) -> str:
        """``<file>, row group G[, row R]`` for messages; ``row`` counts within the unit (row group)
        and is reported as the row of the file, which is what a Parquet reader shows."""
        u = self.units[unit]
        text = f"{self.files[u.file]}, row group {u.group}"
        if row is None:
            return text
        before = sum(v.num_rows for v in self.units if v.file == u.file and v.group < u.group)
        return f"{text}, row {before + row}"


def split_source(cf: ConfigFiles, split: str) -> SplitSource:
    patterns = cf.patterns.get(split)
    if patterns is None:
        raise UserError(
            f"{cf.location.name} config {cf.config!r} has no split {split!r}; available: {', '.join(cf.patterns)}"
        )
    try:
        files = sorted({f for p in patterns for f in cf.location.glob(p)})
    except Exception as e:
        if cf.location.remote:
            raise _hub_failure(cf.location.name, e) from None
        raise
    if not files:
        raise UserError(
            f"{cf.location.name}: no files match {', '.join(patterns)} for "
            f"{cf.config}/{split}; rebuild the config with `hfmed build --overwrite`"
        )
    units: list[Unit] = []
    schema = None
    nbytes = 0
    for i, path in enumerate(files):
        try:
            with cf.location.opened(path) as pf:
                meta = pf.metadata
        except Exception as e:  # pyarrow raises several types for damaged files; the Hub its own
            if cf.location.remote:
                raise _hub_failure(cf.location.name, e) from None
            raise UserError(
                f"{path}: not a readable Parquet file ({e}); rebuild this config with `hfmed build --overwrite`"
            ) from None
        if schema is None:
            schema = meta.schema.to_arrow_schema()
        units.extend(
            Unit(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups) if meta.row_group(g).num_rows
        )
        nbytes += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    rows = sum(u.num_rows for u in units)
    if not rows:
        raise UserError(
            f"{cf.location.name} {cf.config}/{split} has no rows; rebuild the config with `hfmed build --overwrite`"
        )
    return SplitSource(cf.location, cf.config, split, tuple(files), tuple(units), schema, max(1, nbytes // rows))


# --- what the columns mean ------------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    """What a config's examples are, for building a model and reporting on it.

    ``task`` is one of ``binary``, ``multi-class``, ``ordinal`` (class ids, trained like
    multi-class) or ``multi-label`` (multi-hot float vectors). ``image_shape`` is the stored shape:
    ``(H, W)`` for images, ``(D, H, W)`` for volumes; ``channels`` the stored channels (1 for
    grayscale and volumes, 3 for RGB). ``splits`` gives the rows of each split as the card declares.
    """

    config: str
    image_column: str
    label_column: str
    task: str
    label_names: tuple[str, ...]
    channels: int
    image_shape: tuple[int, ...]
    volumetric: bool
    splits: dict[str, int] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def multi_label(self) -> bool:
        return self.task == "multi-label"

    @property
    def image_size(self) -> int:
        """The side of the stored (square or cubic) images; see ``image_shape`` otherwise."""
        return self.image_shape[-1]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


def _is_label(feature: FeatureType) -> bool:
    return isinstance(feature, ClassLabel) or (
        isinstance(feature, (List, Sequence)) and isinstance(feature.feature, ClassLabel)
    )


def declared_task_types(meta: dict[str, Any]) -> dict[str, str]:
    """Task types a build declares, by column ("*": every column), as its collection reads them.

    A build of a collection not registered here (made elsewhere) keeps the ``tasks`` its shards list.
    """
    collection = str(meta.get("collection") or "")
    reader = registry.get(collection) if collection in registry.names() else Builder
    return {column: kind for column, kind in reader.task_types(meta).items() if kind in TASK_TYPES}


def _first_image(source: SplitSource, column: str) -> tuple[int, tuple[int, int]]:
    """Channels and (H, W) of the first stored image: the shape every batch is decoded to."""
    from PIL import Image as PILImage

    with source.location.opened(source.files[source.units[0].file]) as pf:
        cell = pf.read_row_group(source.units[0].group, columns=[column]).column(column)[0].as_py()
    if cell is None or not cell.get("bytes"):
        raise UserError(
            f"{source.files[0]}: the first {column!r} is empty; rebuild this config with `hfmed build --overwrite`"
        )
    with PILImage.open(io.BytesIO(cell["bytes"])) as im:
        channels = 1 if im.mode in ("L", "I", "I;16", "1", "F") else 3
        return channels, (im.size[1], im.size[0])


def read_task_info(source: SplitSource, task: str | None = None, split_sizes: dict[str, int] | None = None) -> TaskInfo:
    """Image column, label column and task type of a split, from its schema (and one image)."""
    features, meta = read_metadata(source.schema)
    where = f"{source.location.name} config {source.config!r}"
    volumes = [n for n, f in features.items() if isinstance(f, Array3D)]
    images = [n for n, f in features.items() if isinstance(f, Image)]
    if volumes:
        image_column = volumes[0]  # 3D subsets also hold an Image `preview` for the viewer
    elif len(images) == 1:
        image_column = images[0]
    else:
        found = ", ".join(images) or "none"
        raise UserError(f"{where}: expected one image column, found {found}; this is not an hfmed build")
    labels = [n for n, f in features.items() if _is_label(f)]
    if task is not None:
        if task not in labels:
            raise UserError(
                f"{where} has no task column {task!r}; its label columns are: {', '.join(labels) or 'none'}"
            )
        label_column = task
    elif len(labels) == 1:
        label_column = labels[0]
    elif not labels:
        raise UserError(f"{where} has no label column (ClassLabel); it cannot be used for classification")
    else:
        raise UserError(f"{where} has several tasks; choose one with task= ({', '.join(labels)})")
    feature = features[label_column]
    if isinstance(feature, ClassLabel):
        names = tuple(feature.names)
        declared = declared_task_types(meta)
        kind = declared.get(label_column, declared.get("*"))
        if kind not in TASK_TYPES or kind == "multi-label":
            kind = "binary" if len(names) == 2 else "multi-class"
    else:
        names, kind = tuple(feature.feature.names), "multi-label"
    if volumes:
        channels, shape = 1, tuple(int(s) for s in features[image_column].shape)
    else:
        channels, shape = _first_image(source, image_column)
    return TaskInfo(
        source.config,
        image_column,
        label_column,
        kind,
        names,
        channels,
        tuple(shape),
        bool(volumes),
        dict(split_sizes or {}),
    )
