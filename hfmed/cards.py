"""The dataset card (``README.md``) of a built folder.

The card is derived from what is on disk: every complete config folder, its shards' schemas,
row counts and label columns, plus the hand-written sources under ``dataset_cards/`` (a Jinja
template per collection and a prose file per subset or dataset). Nothing else is remembered
between builds, so adding a config, rebuilding one, or recovering from a killed build always
yields the same card for the same shards.

Rendering goes through ``huggingface_hub.DatasetCard.from_template`` so that the YAML header is
written by the same code the Hub's own tools use; the Hub metadata (license, task, size, tags)
is computed from the built configs, never typed in by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import ClassLabel, Features, List
from huggingface_hub import DatasetCard, DatasetCardData

from hfmed import montage, outdir
from hfmed.builder import SPLITS
from hfmed.errors import UserError
from hfmed.features import read_metadata

# size_categories buckets of the Hub, by upper bound on the number of rows (datasets'
# utils/resources/size_categories.json holds the same names).
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
]


@dataclass
class SplitSummary:
    name: str
    num_examples: int
    num_bytes: int  # uncompressed Parquet bytes, as `datasets` reports dataset_size
    download_size: int  # bytes on disk
    files: list[Path] = field(default_factory=list)


@dataclass
class ConfigSummary:
    name: str
    features: Features
    meta: dict
    splits: list[SplitSummary]

    @property
    def num_examples(self) -> int:
        return sum(s.num_examples for s in self.splits)


def _split_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


def scan(out_dir: str | Path) -> list[ConfigSummary]:
    """Every complete config under ``out_dir``, in name order, read from the shards' footers.

    Folders of the user's own (no shard written by hfmed in them) are not configs of the card.
    """
    out_dir = Path(out_dir)
    found = []
    for folder in sorted(
        p for p in out_dir.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    ):
        shards = sorted(folder.glob("*.parquet"))
        if not any(outdir.shard_collection(s) is not None for s in shards):
            continue
        features, meta = None, None
        splits: dict[str, SplitSummary] = {}
        for shard in shards:
            try:
                md = pq.read_metadata(shard)
            except Exception as e:  # pyarrow raises several types for damaged files
                raise UserError(
                    f"{shard}: not a readable Parquet file ({e}); rebuild this config with --overwrite"
                ) from None
            if features is None:
                features, meta = read_metadata(md.schema.to_arrow_schema())
            s = splits.setdefault(_split_of(shard), SplitSummary(_split_of(shard), 0, 0, 0))
            s.num_examples += md.num_rows
            s.num_bytes += sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
            s.download_size += shard.stat().st_size
            s.files.append(shard)
        order = {name: i for i, name in enumerate(SPLITS)}
        found.append(
            ConfigSummary(folder.name, features, meta, sorted(splits.values(), key=lambda s: order.get(s.name, 99)))
        )
    return found


# --- measured facts -------------------------------------------------------------------------


@dataclass
class LabelCounts:
    """Rows per class and split of one label column (multi-label: rows having the label)."""

    column: str
    names: list[str]
    multi_label: bool
    splits: list[str]
    counts: list[list[int]]  # [class id][split]
    empty: list[int] | None  # multi-label only: rows with no label, per split

    def rows(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": n, "counts": self.counts[i]} for i, n in enumerate(self.names)]


def label_columns(features: Features) -> list[tuple[str, ClassLabel, bool]]:
    """(column, ClassLabel, multi-label) of every label column, in feature order."""
    out = []
    for name, f in features.items():
        if isinstance(f, ClassLabel):
            out.append((name, f, False))
        elif isinstance(f, List) and isinstance(f.feature, ClassLabel):
            out.append((name, f.feature, True))
    return out


def label_counts(config: ConfigSummary) -> dict[str, LabelCounts]:
    """Count every label column of every split from the shards (only those columns are read)."""
    result = {}
    split_names = [s.name for s in config.splits]
    for column, label, multi in label_columns(config.features):
        k = label.num_classes
        per_split, empty = [], []
        for s in config.splits:
            counts = np.zeros(k, dtype=np.int64)
            none = 0
            for path in s.files:
                values = pq.read_table(path, columns=[column]).column(column)
                if multi:
                    none += int(pc.sum(pc.equal(pc.list_value_length(values), 0)).as_py() or 0)
                    values = pc.list_flatten(values)
                ids = values.to_numpy(zero_copy_only=False)
                ids = ids[(ids >= 0) & (ids < k)]
                counts += np.bincount(ids.astype(np.int64), minlength=k)
            per_split.append(counts)
            empty.append(none)
        table = [[int(per_split[j][i]) for j in range(len(split_names))] for i in range(k)]
        result[column] = LabelCounts(column, list(label.names), multi, split_names, table, empty if multi else None)
    return result


def size_category(rows: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "n>1T"


def has_source(collection: str, *parts: str) -> bool:
    """Whether ``dataset_cards/<collection>/`` holds this hand-written source."""
    from hfmed import registry

    return registry.card_folder(collection).joinpath(*parts).is_file()


def source_text(collection: str, *parts: str) -> str:
    """A hand-written card source from ``dataset_cards/<collection>/``."""
    from hfmed import registry

    try:
        return registry.card_folder(collection).joinpath(*parts).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"card source dataset_cards/{collection}/{'/'.join(parts)} is missing; reinstall hfmed"
        ) from None


# --- collections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CardContext:
    """What a collection's template variables are computed from."""

    configs: list[ConfigSummary]
    default: str | None
    repo_id: str
    montages: dict[str, str]  # config name -> repository path of its montage PNG


@dataclass(frozen=True)
class CollectionCard:
    """What the card of one collection needs beyond the measured facts."""

    pretty_name: str
    tags: tuple[str, ...]
    license_of: Callable[[ConfigSummary], str]  # Hub license id of one config
    variables: Callable[[CardContext], dict[str, Any]]
    montage_configs: Callable[[list[ConfigSummary]], list[ConfigSummary]]  # the configs whose montage the card shows


def split_sizes(c: ConfigSummary) -> dict[str, int]:
    """Rows per split of a config, in card order."""
    return {s.name: s.num_examples for s in c.splits}


def _spec(collection: str) -> CollectionCard:
    from hfmed import registry

    return registry.get(collection).card


# --- assembly -------------------------------------------------------------------------------


def hub_metadata(spec: CollectionCard, configs: list[ConfigSummary]) -> dict[str, Any]:
    """The Hub's metadata fields, computed from the built configs.

    One license for the whole repository when all configs share it; otherwise the Hub's
    ``other`` with a ``license_name`` and a ``license_link`` to the LICENSE file that lists each
    config's license (the Hub has no per-config license field, and its card template calls
    ``license_details`` legacy).
    """
    licenses = _licenses(spec, configs)
    meta: dict[str, Any] = {}
    if len(licenses) == 1:
        meta["license"] = next(iter(licenses))
    elif licenses:
        meta["license"] = "other"
        meta["license_name"] = "-and-".join(sorted(licenses))
        meta["license_link"] = LICENSE_FILE
    meta["task_categories"] = ["image-classification"]
    meta["size_categories"] = [size_category(sum(c.num_examples for c in configs))]
    meta["pretty_name"] = spec.pretty_name
    volumetric = any(montage.is_volumetric(c.features) for c in configs)
    meta["tags"] = [t for t in spec.tags if t != "3d" or volumetric]
    return meta


LICENSE_FILE = "LICENSE"
_LICENSE_HEADER = "Licenses of this dataset repository, one per configuration (written by hfmed)."


def _licenses(spec: CollectionCard, configs: list[ConfigSummary]) -> dict[str, list[str]]:
    licenses: dict[str, list[str]] = {}
    for c in configs:
        licenses.setdefault(spec.license_of(c), []).append(c.name)
    return licenses


def _license_url(license_id: str) -> str:
    """The deed of a Creative Commons license id ("cc-by-nc-4.0" -> .../licenses/by-nc/4.0/)."""
    if license_id.startswith("cc-by"):
        kind, _, version = license_id[3:].rpartition("-")
        return f" (https://creativecommons.org/licenses/{kind}/{version}/)"
    return ""


def license_text(collection: str, configs: list[ConfigSummary]) -> str | None:
    """The LICENSE file where configs' licenses differ, listing every config under its license; else None."""
    licenses = _licenses(_spec(collection), configs)
    if len(licenses) < 2:
        return None
    lines = [_LICENSE_HEADER, ""]
    for lic, names in sorted(licenses.items()):
        lines += [f"{lic}{_license_url(lic)}:", *(f"  {name}" for name in sorted(names)), ""]
    return "\n".join(lines)


def _write_license(out_dir: Path, text: str | None) -> None:
    """Write, replace or remove LICENSE, unless it is the user's own (it does not start with our header)."""
    path = out_dir / LICENSE_FILE
    ours = not path.exists() or (
        path.is_file() and path.read_text(encoding="utf-8", errors="replace").startswith(_LICENSE_HEADER)
    )
    if not ours:
        return
    if text is not None:
        _write_if_changed(path, text.encode("utf-8"))
    elif path.exists():
        path.unlink()


def card_data(configs: list[ConfigSummary], default: str | None, **metadata: Any) -> DatasetCardData:
    """The YAML header: Hub metadata, then one entry per config under `configs` and `dataset_info`."""
    default = _default_of(configs, default)
    cfgs, infos = [], []
    for c in configs:
        entry = {
            "config_name": c.name,
            "data_files": [{"split": s.name, "path": f"{c.name}/{s.name}-*.parquet"} for s in c.splits],
        }
        if c.name == default:
            entry["default"] = True
        cfgs.append(entry)
        infos.append(
            {
                "config_name": c.name,
                "features": c.features._to_yaml_list(),
                "splits": [
                    {"name": s.name, "num_bytes": s.num_bytes, "num_examples": s.num_examples} for s in c.splits
                ],
                "download_size": sum(s.download_size for s in c.splits),
                "dataset_size": sum(s.num_bytes for s in c.splits),
            }
        )
    return DatasetCardData(**metadata, configs=cfgs, dataset_info=infos)


def _default_of(configs: list[ConfigSummary], default: str | None) -> str | None:
    """The collection's default when built; else the first config the viewer draws in full.

    The Hub's viewer opens on the default config, and shows a 3D volume only through its preview
    (the volume itself is cut to a short string, see hfmed.viewer_rules), so a 2D config first.
    """
    names = [c.name for c in configs]
    if default in names:
        return default
    drawn = [c.name for c in configs if not montage.is_volumetric(c.features)]
    return (drawn or names or [None])[0]


def _folder_of(configs: list[ConfigSummary]) -> Path | None:
    return configs[0].splits[0].files[0].parent.parent if configs and configs[0].splits else None


def existing_montages(collection: str, configs: list[ConfigSummary]) -> dict[str, str]:
    """Montages the card can link: those of the collection's montage configs present on disk."""
    folder = _folder_of(configs)
    out = {}
    for c in _spec(collection).montage_configs(configs):
        rel = montage.relative_path(c.name)
        if folder is not None and (folder / rel).is_file():
            out[c.name] = rel
    return out


def render_card(
    collection: str,
    configs: list[ConfigSummary],
    default: str | None,
    repo_id: str | None = None,
    montages: dict[str, str] | None = None,
) -> DatasetCard:
    """The whole card of a collection's built configs, from its template and measured facts.

    ``montages`` maps config names to montage paths; by default the montages already on disk.
    """
    spec = _spec(collection)
    default = _default_of(configs, default)
    # the mark by which a rebuild knows the card is its own to replace (no time, pid or path in it)
    data = card_data(
        configs, default, **hub_metadata(spec, configs), **{outdir.CARD_MARK_KEY: {"collection": collection}}
    )
    if montages is None:
        montages = existing_montages(collection, configs)
    ctx = CardContext(configs, default, repo_id or f"<org>/{collection}", montages)
    return DatasetCard.from_template(data, template_str=source_text(collection, "template.md"), **spec.variables(ctx))


def _collection_of(out_dir: str | Path, configs: list[ConfigSummary]) -> str | None:
    collections = {c.meta.get("collection") for c in configs}
    if len(collections) > 1:
        raise UserError(
            f"{out_dir} mixes configs of several collections "
            f"({', '.join(sorted(map(str, collections)))}); build each collection into its "
            "own folder"
        )
    return collections.pop() if collections else None


def _render(out_dir: Path, configs: list[ConfigSummary], repo_id: str | None, montages: dict[str, str] | None) -> str:
    from hfmed import registry

    collection = _collection_of(out_dir, configs)
    if collection is None:
        mark = DatasetCardData(**{outdir.CARD_MARK_KEY: {"collection": None}})
        return f"---\n{mark.to_yaml()}\n---\n\n# Empty build\n\nNo config has been built into this folder yet.\n"
    return str(render_card(collection, configs, registry.get(collection).default_config, repo_id, montages))


def render(out_dir: str | Path, repo_id: str | None = None) -> str:
    """The card of a built folder as it stands on disk (montages linked where present)."""
    out_dir = Path(out_dir)
    return _render(out_dir, scan(out_dir), repo_id, None)


def _write_if_changed(path: Path, data: bytes, touch: bool = False) -> None:
    if path.is_file() and path.read_bytes() == data:
        if touch:  # marks a redrawn montage as current for its new shards
            os.utime(path)
        return
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_montage(out_dir: Path, config: ConfigSummary) -> bytes | None:
    """The montage of a config, reusing the file on disk when it is newer than every shard.

    The card is rewritten after every config of a ``--all`` build; redrawing every montage each
    time would read image row groups of all earlier configs again. A rebuilt config has new
    shards, hence newer ones than its montage, which is then drawn afresh.
    """
    path = out_dir / montage.relative_path(config.name)
    newest = max((f.stat().st_mtime_ns for s in config.splits for f in s.files), default=0)
    if outdir.is_our_png(path) and path.stat().st_mtime_ns > newest:
        return path.read_bytes()
    return montage.montage(config)


def write_card(out_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write the montages and ``README.md``, each atomically (a reader never sees half a file).

    The card is rendered before anything is written, so a card that cannot be rendered leaves
    the folder as it was; a README.md or montage that hfmed did not write is never replaced, and
    only montages of its own are removed. ``repo_id`` goes into the card's loading examples; a
    plain build does not know it and shows ``<org>/<collection>``, which ``hfmed push`` replaces.
    """
    out_dir = Path(out_dir)
    path = out_dir / "README.md"
    folder = out_dir / montage.MONTAGE_DIR
    if (path.exists() or path.is_symlink()) and not outdir.is_our_card(path):
        outdir.refuse_foreign(path, "a README.md")
    if (folder.exists() or folder.is_symlink()) and (folder.is_symlink() or not folder.is_dir()):
        outdir.refuse_foreign(folder, "an images file")
    outdir.remove_dead_tmp_files(out_dir)
    outdir.remove_dead_tmp_files(folder)
    configs = scan(out_dir)
    collection = _collection_of(out_dir, configs)
    pictures: dict[str, bytes] = {}
    if collection is not None:
        for c in _spec(collection).montage_configs(configs):
            data = _current_montage(out_dir, c)
            if data is not None:
                pictures[montage.relative_path(c.name)] = data
    for rel in pictures:
        if (out_dir / rel).exists() and not outdir.is_our_png(out_dir / rel):
            outdir.refuse_foreign(out_dir / rel, "an images/ file")
    links = {Path(rel).stem: rel for rel in pictures}
    text = _render(out_dir, configs, repo_id, links)
    for rel, data in pictures.items():
        _write_if_changed(out_dir / rel, data, touch=True)
    if folder.is_dir():
        for stale in folder.glob("*.png"):
            if f"{montage.MONTAGE_DIR}/{stale.name}" not in pictures and outdir.is_our_png(stale):
                stale.unlink()
    _write_license(out_dir, license_text(collection, configs) if collection is not None else None)
    _write_if_changed(path, text.encode("utf-8"))
    return path


def load(out_dir: str | Path) -> DatasetCard:
    return DatasetCard.load(Path(out_dir) / "README.md")
