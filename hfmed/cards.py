"""The dataset card (``README.md``) of a built folder.

The card is derived from what is on disk: every complete config folder, its shards' schemas and
row counts. Nothing else is remembered between builds, so adding a config, rebuilding one, or
recovering from a killed build always yields the same card for the same shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Features
from huggingface_hub import DatasetCard, DatasetCardData

from hfmed.builder import SPLITS
from hfmed.errors import UserError
from hfmed.features import read_metadata


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


def _split_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


def scan(out_dir: str | Path) -> list[ConfigSummary]:
    """Every complete config under ``out_dir``, in name order, read from the shards' footers."""
    out_dir = Path(out_dir)
    found = []
    for folder in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        shards = sorted(folder.glob("*.parquet"))
        if not shards:
            continue
        features, meta = None, None
        splits: dict[str, SplitSummary] = {}
        for shard in shards:
            try:
                md = pq.read_metadata(shard)
            except Exception as e:  # pyarrow raises several types for damaged files
                raise UserError(f"{shard}: not a readable Parquet file ({e}); rebuild this config with --overwrite") from None
            if features is None:
                features, meta = read_metadata(md.schema.to_arrow_schema())
            s = splits.setdefault(_split_of(shard), SplitSummary(_split_of(shard), 0, 0, 0))
            s.num_examples += md.num_rows
            s.num_bytes += sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
            s.download_size += shard.stat().st_size
            s.files.append(shard)
        order = {name: i for i, name in enumerate(SPLITS)}
        found.append(ConfigSummary(folder.name, features, meta, sorted(splits.values(), key=lambda s: order.get(s.name, 99))))
    return found


def card_data(configs: list[ConfigSummary], default: str | None) -> DatasetCardData:
    """The YAML header: one entry per config under `configs` and `dataset_info`."""
    names = [c.name for c in configs]
    default = default if default in names else (names[0] if names else None)
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
                "splits": [{"name": s.name, "num_bytes": s.num_bytes, "num_examples": s.num_examples} for s in c.splits],
                "download_size": sum(s.download_size for s in c.splits),
                "dataset_size": sum(s.num_bytes for s in c.splits),
            }
        )
    return DatasetCardData(configs=cfgs, dataset_info=infos)


def render_body(collection: str, configs: list[ConfigSummary]) -> str:
    """Card text below the YAML header."""
    lines = [f"# {collection}", "", "Not for clinical use: these are research benchmarks.", "", "| config | split | rows |", "|---|---|---|"]
    for c in configs:
        for s in c.splits:
            lines.append(f"| {c.name} | {s.name} | {s.num_examples} |")
    return "\n".join(lines) + "\n"


def render(out_dir: str | Path) -> str:
    from hfmed.builder import builder_class

    configs = scan(out_dir)
    collections = {c.meta.get("collection") for c in configs}
    if len(collections) > 1:
        raise UserError(f"{out_dir} mixes configs of several collections ({', '.join(sorted(map(str, collections)))}); build each collection into its own folder")
    collection = collections.pop() if collections else None
    builder = builder_class(collection) if collection else None
    data = card_data(configs, builder.default_config if builder else None)
    body = builder.card_body(configs) if builder else "# Empty build\n"
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def write_card(out_dir: str | Path) -> Path:
    """Write ``README.md`` atomically (a reader never sees half a card)."""
    out_dir = Path(out_dir)
    text = render(out_dir)
    path = out_dir / "README.md"
    tmp = out_dir / f".README.md.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def load(out_dir: str | Path) -> DatasetCard:
    return DatasetCard.load(Path(out_dir) / "README.md")
