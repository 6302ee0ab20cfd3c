"""Would the Hub load and show a built folder? ``check`` answers offline, before anything is uploaded.

It runs offline and finds what would otherwise show up only after an upload: a card the
Hub cannot parse, globs that miss shards or catch strays, a Parquet schema that disagrees with the
card, image paths instead of bytes, row groups the viewer refuses, code files, and configs that do
not stream. The Hub's own YAML validation service (``DatasetCard.validate``) needs the network, so
check does the parts of it that can be done locally with ``huggingface_hub`` and ``datasets``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from hfmed import viewer_rules
from hfmed.errors import UserError, first_line

if TYPE_CHECKING:
    from datasets import Features
    from huggingface_hub import DatasetCard, DatasetCardData

CARD = "README.md"
KEPT_FILES = {CARD, ".gitattributes"}  # repository files that belong to no config
MAX_CONFIGS = viewer_rules.CONFIG_NAMES_MAX_NUMBER  # more configs than the Hub's viewer lists for one repository
SHARD_NAME = re.compile(r"(?P<split>[A-Za-z0-9_.]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet")

# License ids of the Hub (https://huggingface.co/docs/hub/repositories-licenses) that a medical
# image collection can plausibly carry; an id outside this list is reported so it gets a look.
HUB_LICENSES = frozenset(
    """
    apache-2.0 mit cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0
    cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0
    cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
    cdla-permissive-2.0 odc-by odbl pddl c-uda bsd-3-clause gpl-3.0 unknown other
    """.split()
)
SIZE_CATEGORIES = frozenset(
    "n<1K 1K<n<10K 10K<n<100K 100K<n<1M 1M<n<10M 10M<n<100M 100M<n<1B 1B<n<10B "
    "10B<n<100B 100B<n<1T n>1T other unknown".split()
)


def row_group_limit() -> int:
    """The uncompressed row-group size ``datasets`` writes at most (its ``MAX_ROW_GROUP_SIZE``)."""
    from datasets import config
    from datasets.utils.py_utils import convert_file_size_to_int

    return convert_file_size_to_int(config.MAX_ROW_GROUP_SIZE)


@dataclass
class CheckReport:
    """What ``check`` found: the problems, and the files that make up the dataset."""

    folder: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the viewer shows only partly; push goes ahead
    files: list[Path] = field(default_factory=list)  # relative paths, sorted: what push uploads
    configs: list[str] = field(default_factory=list)

    def add(self, where: str | Path, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def warn(self, where: str | Path, what: str) -> None:
        self.warnings.append(f"{where}: {what}")

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total_bytes(self) -> int:
        """Bytes of the files a push would upload."""
        return sum((self.folder / f).stat().st_size for f in self.files)


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _links(folder: Path) -> list[Path]:
    """Symbolic links in the folder, relative: push would upload whatever they point to."""
    out = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            rel = (Path(root) / name).relative_to(folder)
            if (Path(root) / name).is_symlink() and not _is_hidden(rel):
                out.append(rel)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(out)


def _visible_files(folder: Path) -> list[Path]:
    """Files a Hub repository made from this folder would hold, relative; hidden ones are ours or git's."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(folder)
            if not _is_hidden(rel) or rel.as_posix() == ".gitattributes":
                out.append(rel)
    return sorted(out)


def _load_card(folder: Path, report: CheckReport) -> DatasetCard | None:
    from huggingface_hub import DatasetCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    path = folder / CARD
    if not path.is_file():
        report.add(CARD, "missing; the Hub needs the card's YAML to find the configs (`hfmed build` writes it)")
        return None
    text = path.read_text(encoding="utf-8")
    if not REGEX_YAML_BLOCK.search(text):
        report.add(CARD, "has no YAML header between '---' lines; rebuild it with `hfmed build`")
        return None
    try:
        return DatasetCard(text)
    except Exception as e:  # yaml.YAMLError, ValueError: the Hub would reject the same text
        report.add(CARD, f"the YAML header does not parse with huggingface_hub: {first_line(e, with_type=True)}")
        return None


def _check_card_data(card: DatasetCard, report: CheckReport) -> tuple[dict, dict]:
    """Validate the metadata as the Hub and ``datasets`` read it; returns (configs, features) by name."""
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs, known_task_ids

    data = card.data
    configs: dict = {}
    try:
        configs = MetadataConfigs.from_dataset_card_data(data)
        configs.get_default_config_name()
    except Exception as e:
        report.add(CARD, f"`configs` is not valid for datasets: {first_line(e, with_type=True)}")
        configs = {}
    if not configs:
        report.add(CARD, "declares no `configs`; every config needs a config_name and data_files")
    infos: dict = {}
    try:
        infos = DatasetInfosDict.from_dataset_card_data(data)
    except Exception as e:
        report.add(CARD, f"`dataset_info` is not valid for datasets: {first_line(e, with_type=True)}")
    raw_cfgs = data.get("configs") or []
    names = [c.get("config_name") for c in raw_cfgs if isinstance(c, dict)]
    for name in sorted({n for n in names if names.count(n) > 1}):
        report.add(CARD, f"config {name!r} is declared more than once")
    if len(configs) > MAX_CONFIGS:
        report.add(CARD, f"declares {len(configs)} configs; the Hub shows at most {MAX_CONFIGS} per repository")
    for name in configs:
        if name not in infos:
            report.add(CARD, f"config {name!r} has no `dataset_info` entry (its features and split sizes)")
        elif infos[name].features is None:
            report.add(CARD, f"config {name!r} has no features in `dataset_info`")
    for name in infos:
        if name not in configs:
            report.add(CARD, f"`dataset_info` describes {name!r}, which `configs` does not declare")
    _check_hub_fields(data, report, known_task_ids)
    features = {n: i.features for n, i in infos.items() if i.features is not None}
    return dict(configs), features


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else ([] if value is None else [value])


def _check_hub_fields(data: DatasetCardData, report: CheckReport, known_tasks: dict) -> None:
    """The value lists the Hub checks; values it does not know are dropped or rejected there."""
    licenses = _as_list(data.get("license"))
    if not licenses:
        report.add(CARD, "has no `license`; the Hub shows the dataset as unlicensed")
    for lic in licenses:
        if lic not in HUB_LICENSES:
            report.add(
                CARD,
                f"license {lic!r} is not a Hub license id; use one from "
                "https://huggingface.co/docs/hub/repositories-licenses or `other` with "
                "license_name",
            )
    if "other" in licenses and not (data.get("license_name") or data.get("license_details")):
        report.add(CARD, "license is `other` but neither license_name nor license_details says what it is")
    for task in _as_list(data.get("task_categories")):
        if task not in known_tasks:
            report.add(CARD, f"task_categories value {task!r} is not a Hub task")
    for size in _as_list(data.get("size_categories")):
        if size not in SIZE_CATEGORIES:
            report.add(
                CARD, f"size_categories value {size!r} is not one of the Hub's ({', '.join(sorted(SIZE_CATEGORIES))})"
            )


def _resolve(folder: Path, pattern: str) -> list[Path]:
    """Files a data_files pattern matches, resolved as ``load_dataset`` resolves them."""
    from datasets.data_files import resolve_pattern

    try:
        found = resolve_pattern(pattern, str(folder))
    except FileNotFoundError:
        return []
    root = Path(os.path.abspath(folder))  # links are not followed: a linked shard is reported, not resolved away
    out = []
    for p in found:
        rel = Path(os.path.relpath(os.path.abspath(p), root))
        if not rel.parts or rel.parts[0] != "..":
            out.append(rel)
    return sorted(out)


def _check_data_files(folder: Path, configs: dict, report: CheckReport) -> dict[str, dict[str, list[Path]]]:
    """Every glob matches shards, only shards, and every shard of a split: returns config -> split -> files."""
    owner: dict[Path, str] = {}
    matched: dict[str, dict[str, list[Path]]] = {}
    for name, cfg in configs.items():
        entries = cfg.get("data_files")
        if entries is None:
            report.add(CARD, f"config {name!r} has no data_files")
            continue
        if isinstance(entries, (str, list)) and not (
            isinstance(entries, list) and entries and isinstance(entries[0], dict)
        ):
            entries = [{"split": "train", "path": entries}]
        for entry in entries:
            split = entry["split"]
            files: list[Path] = []
            for pattern in _as_list(entry["path"]):
                found = _resolve(folder, pattern)
                if not found:
                    report.add(CARD, f"config {name!r} split {split!r}: data_files pattern {pattern!r} matches no file")
                files.extend(found)
            for f in files:
                where = f"{name}/{split}"
                if f in owner and owner[f] != where:
                    report.add(
                        f, f"matched by the data_files of both {owner[f]} and {where}: its rows would load twice"
                    )
                owner.setdefault(f, where)
            matched.setdefault(name, {})[split] = sorted(set(files))
            _check_shard_set(name, split, sorted(set(files)), report)
    return matched


def _check_shard_set(config: str, split: str, files: list[Path], report: CheckReport) -> None:
    """The glob's matches are exactly shards 0..M-1 of M of this split: nothing extra, nothing missing."""
    counts: set[int] = set()
    indices: set[int] = set()
    for f in files:
        m = SHARD_NAME.fullmatch(f.name)
        if m is None or m["split"] != split:
            report.add(
                f,
                f"matched by the data_files of {config}/{split} but not named "
                f"{split}-NNNNN-of-MMMMM.parquet: a stray file would load as data",
            )
            continue
        counts.add(int(m["count"]))
        indices.add(int(m["index"]))
    if len(counts) > 1:
        report.add(
            f"{config}/",
            f"split {split!r} mixes shards of {sorted(counts)} totals: leftovers of another "
            "build; rebuild it with --overwrite",
        )
    elif counts:
        total = counts.pop()
        missing = sorted(set(range(total)) - indices)
        if missing:
            report.add(
                f"{config}/",
                f"split {split!r} lacks shard(s) {', '.join(f'{i:05d}' for i in missing[:5])} of {total:05d}",
            )


def _linked_files(card: DatasetCard) -> set[Path]:
    """Local files the card's Markdown links to (montages), relative to the repository root."""
    out = set()
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)", card.text):
        if "://" in target or target.startswith("#"):
            continue
        out.add(Path(target.split("#", 1)[0]))
    return out


def _diff_features(declared: Features, stored: Features) -> str:
    parts = []
    for col in declared:
        if col not in stored:
            parts.append(f"{col!r} is in the card only")
        elif declared[col] != stored[col]:
            parts.append(f"{col!r} is {stored[col]!r} in the shards but {declared[col]!r} in the card")
    parts += [f"{col!r} is in the shards only" for col in stored if col not in declared]
    if not parts and list(declared) != list(stored):
        parts.append(f"column order differs: {list(stored)} in the shards, {list(declared)} in the card")
    return "; ".join(parts)


def _check_shards(
    folder: Path,
    config: str,
    splits: dict[str, list[Path]],
    declared: Features | None,
    infos_splits: dict,
    report: CheckReport,
) -> None:
    from datasets import Image

    from hfmed.features import read_metadata

    first: tuple[Path, Any] | None = None  # the config's first shard and its features
    for split, files in splits.items():
        rows = 0
        for rel in files:
            try:
                pf = pq.ParquetFile(folder / rel)
            except Exception as e:
                report.add(
                    rel,
                    f"not a readable Parquet file ({first_line(e, with_type=True)}); rebuild the "
                    "config with --overwrite",
                )
                continue
            md = pf.metadata
            rows += md.num_rows
            stored, _ = read_metadata(pf.schema_arrow)
            if first is None:
                first = (rel, stored)
                if declared is not None and stored != declared:
                    report.add(
                        f"{config}/",
                        "the shards' schema disagrees with the card's dataset_info: "
                        f"{_diff_features(declared, stored)}",
                    )
            elif stored != first[1]:
                report.add(
                    rel, f"schema differs from {first[0].name} of the same config: {_diff_features(first[1], stored)}"
                )
            for col, feature in stored.items():
                if isinstance(feature, Image):
                    _check_embedded(rel, pf, col, report)
        expected = infos_splits.get(split)
        if expected is not None and expected != rows:
            report.add(CARD, f"dataset_info says {config}/{split} has {expected} rows, its shards hold {rows}")


def _check_embedded(rel: Path, pf: pq.ParquetFile, column: str, report: CheckReport) -> None:
    """Every image carries its bytes: a path alone points at a file the Hub does not have."""
    names = {f.name for f in pf.schema_arrow.field(column).type}
    if "bytes" not in names:
        report.add(rel, f"column {column!r} stores no image bytes, only paths; embed the images (hfmed build does)")
        return
    for g in range(pf.metadata.num_row_groups):
        struct = pf.read_row_group(g, columns=[f"{column}.bytes"]).column(column).combine_chunks()
        values = struct.flatten()[0]  # a null struct counts as null bytes
        missing = values.null_count + int(pc.sum(pc.equal(pc.binary_length(values), 0)).as_py() or 0)
        if missing:
            report.add(
                rel,
                f"column {column!r} has {missing} row(s) without image bytes in row group {g}; "
                "the viewer cannot show them",
            )
            return


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """datasets' progress bars and info logs would bury the one-line problems."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        datasets.logging.set_verbosity(level)
        if was_enabled:
            datasets.enable_progress_bars()


def _decode(value: Any) -> None:
    """Force the lazy parts of a decoded row (PIL opens images lazily)."""
    if hasattr(value, "load") and callable(value.load):
        value.load()
    elif isinstance(value, dict):
        for v in value.values():
            _decode(v)


def _check_streaming(folder: Path, config: str, splits: list[str], report: CheckReport) -> None:
    """The first row of every split streams and decodes, exactly as a user's load_dataset call would."""
    import pyarrow.dataset as pds
    from datasets import load_dataset

    # An Arrow I/O task still reading through Python when the interpreter exits aborts the
    # process after the verdict (exit 134, arrow#45214): no pre-buffering, and each reader is
    # closed, and check() frees them all before it answers.
    scan = pds.ParquetFragmentScanOptions(pre_buffer=False)
    try:
        with _quiet():
            ds = load_dataset(str(folder), config, streaming=True, fragment_scan_options=scan)
            for split in splits:
                with contextlib.closing(iter(ds[split])) as rows:
                    row = next(rows)
                for value in row.values():
                    _decode(value)
    except Exception as e:
        report.add(
            f"{config}", f"load_dataset(folder, {config!r}, streaming=True) fails: {first_line(e, with_type=True)}"
        )


def check(folder: str | Path, *, stream: bool = True) -> CheckReport:
    """Everything the Hub and its viewer need, checked offline; problems are collected, not raised."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; pass the folder `hfmed build` wrote (e.g. medmnist)")
    report = CheckReport(folder)
    present = _visible_files(folder)
    links = _links(folder)
    for rel in links:
        report.add(
            rel,
            f"is a symbolic link to {os.path.realpath(folder / rel)}; a dataset holds the "
            "files themselves (push would upload what the link points to), replace it with "
            "the file",
        )
    for rel in present:
        if rel.suffix == ".py":
            report.add(
                rel,
                "a Python file in a dataset repository makes the Hub look for a loading "
                "script, which datasets no longer runs; remove it",
            )
    card = _load_card(folder, report)
    if card is None:
        return report
    configs, declared = _check_card_data(card, report)
    matched = _check_data_files(folder, configs, report)
    info_splits = {}
    for entry in _as_list(card.data.get("dataset_info")):
        if isinstance(entry, dict):
            info_splits[entry.get("config_name", "default")] = {
                s.get("name"): s.get("num_examples") for s in entry.get("splits") or [] if isinstance(s, dict)
            }
    for name, splits in matched.items():
        _check_shards(folder, name, splits, declared.get(name), info_splits.get(name, {}), report)
    linked = _linked_files(card)
    for rel in sorted(linked):
        if not (folder / rel).is_file():
            report.add(
                CARD, f"links to {rel.as_posix()}, which is not in the folder; rebuild the card with `hfmed build`"
            )
    data_files = {f for splits in matched.values() for files in splits.values() for f in files}
    keep = (
        data_files
        | {f for f in linked if (folder / f).is_file()}
        | {Path(n) for n in KEPT_FILES if (folder / n).is_file()}
    )
    for rel in present:
        if rel not in keep and rel.suffix != ".py":
            report.add(rel, "belongs to no config and is not linked from the card; remove it (push leaves it out)")
    report.files = sorted(f for f in keep if not any(f == link or link in f.parents for link in links))
    report.configs = list(matched)
    _check_viewer(folder, card, matched, declared, report)
    if stream and not any(rel.suffix == ".py" for rel in present):  # datasets refuses every config then
        for name, splits in matched.items():
            _check_streaming(folder, name, list(splits), report)
        gc.collect()  # the closed readers go now, not while the interpreter is exiting
    return report


def _check_viewer(folder: Path, card: DatasetCard, matched: dict, declared: dict, report: CheckReport) -> None:
    """The viewer's own rules (hfmed.viewer_rules): errors are problems, partial rendering a warning."""
    names = {}  # as the card writes them, even where datasets refused the configs
    for entry in _as_list(card.data.get("configs")):
        if isinstance(entry, dict):
            files = entry.get("data_files")
            names[str(entry.get("config_name", "default"))] = [
                str(f["split"]) for f in _as_list(files) if isinstance(f, dict) and "split" in f
            ] or ["train"]
    findings = viewer_rules.name_findings(names)
    default = next(
        (
            str(e.get("config_name"))
            for e in _as_list(card.data.get("configs"))
            if isinstance(e, dict) and e.get("default")
        ),
        None,
    )
    findings += viewer_rules.opening_findings(
        default, {n: f for n, f in declared.items() if n in matched and f is not None}
    )
    for name, splits in matched.items():
        if declared.get(name) is not None and all(files for files in splits.values()):
            findings += viewer_rules.check_config(
                folder, name, splits, declared[name], f"<org>/{folder.name}", row_group_limit()
            )
    for f in findings:
        (report.add if f.error else report.warn)(f.where, f.what)
