"""MedIMeta: the builder and everything hfmed knows of the collection; a build is driven by each folder's ``info.yaml``.

Config names are the dataset ids (``bus``, ``cxr``, ...), plus ``<id>_original`` for the splits of
``original_splits/`` where they hold other images than ``splits/``. The source is the folder that
holds the dataset folders (``~/medimeta``, containing ``bus/``, ``cxr/``...) or one dataset folder.

Columns: ``image``, one column per task (snake_case of the task name; ``ClassLabel`` or
``List(ClassLabel)``), and ``patient_id`` where ``annotations.csv`` has it. Label keys become class
ids in key order; the mapping is written into every shard's metadata under ``tasks``:

    tasks: [{name: "Artifact", column: "artifact", type: "ordinal", keys: [0, 1, 4, 6, 8, 10], names: [...]}]

where class id ``i`` of ``column`` stands for label key ``keys[i]`` of task ``name``. Next to it:
``dataset`` (id, name, domain, summary, license, license_id, homepage, doi, and original_data:
[{name, url, license, citations}]), ``splits_from`` (``splits`` or ``original_splits``) and
``image_mode`` (``L`` or ``RGB``). The card reads these from the shards (``ConfigSummary.meta``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Features, Image, List, Value

from hfmed import __version__, facts, montage
from hfmed.builder import Builder, SplitGenerator
from hfmed.cards import (
    CardContext,
    CollectionCard,
    ConfigSummary,
    LabelCounts,
    has_source,
    label_counts,
    source_text,
    split_sizes,
)
from hfmed.errors import UserError
from hfmed.sources.medimeta import INFO_FILE, SPLIT_FILES, MedIMetaFolder, is_dataset_id, license_id

ORIGINAL_SUFFIX = "_original"
SPLIT_KIND = {False: "splits", True: "original_splits"}


def _facts() -> dict:
    return facts.load("medimeta")


def _check_name(name: str) -> None:
    if not is_dataset_id(name):
        raise UserError(f"{name!r} is not a MedIMeta config name; use a dataset id such as bus, or <id>_original")


def dataset_folders(source: Path) -> dict[str, Path]:
    """Dataset id -> folder for every dataset under ``source`` (or ``source`` itself)."""
    if not source.is_dir():
        raise UserError(
            f"{source}: no such folder; pass --source the folder holding the MedIMeta dataset folders (bus/, cxr/, ...)"
        )
    if (source / INFO_FILE).is_file():
        return {source.name: source}
    return {
        p.name: p
        for p in sorted(source.iterdir())
        if p.is_dir() and not p.name.startswith(".") and (p / INFO_FILE).is_file()
    }


def resolve(config_name: str, source: Path | None) -> tuple[Path, bool]:
    """The dataset folder of a config, and whether the config uses the original splits."""
    _check_name(config_name)
    if source is None:
        raise UserError(
            "MedIMeta is downloaded by hand (Zenodo record 7884735); pass --source the "
            "folder holding its dataset folders"
        )
    folders = dataset_folders(source)
    if not (source / INFO_FILE).is_file():  # a dataset folder without info.yaml is still that dataset's folder
        folders.update(
            {
                p.name: p
                for p in (source / config_name, source / config_name.removesuffix(ORIGINAL_SUFFIX))
                if p.is_dir()
            }
        )
    if config_name in folders:
        return folders[config_name], False
    if config_name.endswith(ORIGINAL_SUFFIX) and config_name[: -len(ORIGINAL_SUFFIX)] in folders:
        return folders[config_name[: -len(ORIGINAL_SUFFIX)]], True
    if (source / INFO_FILE).is_file():
        raise UserError(
            f"{source} is the dataset folder of {source.name}, not of {config_name!r}; pass "
            f"the folder that holds {config_name}/"
        )
    found = ", ".join(folders) or "none"
    raise UserError(f"{source}: no MedIMeta dataset folder {config_name!r} (a folder with info.yaml); found: {found}")


# --- the card: facts from the shards' metadata (copied from each info.yaml), prose from datasets/<id>.md


def _dataset_id(c: ConfigSummary) -> str:
    return c.meta["dataset"]["id"]


def _is_original(c: ConfigSummary) -> bool:
    return c.meta.get("splits_from") == "original_splits"


def _groups(configs: list[ConfigSummary]) -> dict[str, list[ConfigSummary]]:
    """Configs by dataset id (sorted), the MedIMeta-split config first."""
    groups: dict[str, list[ConfigSummary]] = {}
    for c in configs:
        groups.setdefault(_dataset_id(c), []).append(c)
    return {k: sorted(v, key=lambda c: (_is_original(c), c.name)) for k, v in sorted(groups.items())}


def _montage_configs(configs: list[ConfigSummary]) -> list[ConfigSummary]:
    return [members[0] for members in _groups(configs).values()]  # both splits show the same images


def _license(c: ConfigSummary) -> str:
    return c.meta["dataset"]["license_id"]


def _task(task: dict, counts: LabelCounts) -> dict[str, Any]:
    keys = list(task["keys"])
    return {
        "name": task["name"],
        "column": task["column"],
        "type": task["type"],
        "remapped": keys != list(range(len(keys))),
        "label_rows": [{**row, "key": keys[row["id"]]} for row in counts.rows()],
        "empty_counts": counts.empty,
    }


def _description(ds_id: str, facts: dict) -> str:
    """Prose from datasets/<id>.md; a dataset without one (a 20th folder, same layout) shows its info.yaml summary."""
    if has_source("medimeta", "datasets", f"{ds_id}.md"):
        return source_text("medimeta", "datasets", f"{ds_id}.md")
    return facts.get("summary") or ""


def _card_variables(ctx: CardContext) -> dict[str, Any]:
    datasets = []
    for ds_id, members in _groups(ctx.configs).items():
        base = members[0]
        facts = base.meta["dataset"]
        counts = label_counts(base)
        datasets.append(
            {
                "id": ds_id,
                "name": facts["name"],
                "domain": facts["domain"],
                "license": facts["license_id"],
                "channels": 1 if base.meta.get("image_mode") == "L" else 3,
                "description": _description(ds_id, facts),
                "has_patient_id": "patient_id" in base.features,
                "montage": ctx.montages.get(base.name),
                "configs": [
                    {
                        "name": c.name,
                        "original": _is_original(c),
                        "default": c.name == ctx.default,
                        "splits": split_sizes(c),
                    }
                    for c in members
                ],
                "count_columns": [s.name for s in base.splits],
                "tasks": [_task(t, counts[t["column"]]) for t in base.meta["tasks"]],
                "original_data": [
                    {**o, "citations": [" ".join(str(c).split()) for c in o.get("citations") or []]}
                    for o in facts.get("original_data") or []
                ],
            }
        )
    bases = [d["configs"][0]["name"] for d in datasets]
    originals = [c["name"] for d in datasets for c in d["configs"] if c["original"]]
    return {
        "repo_id": ctx.repo_id,
        "example_config": ctx.default if ctx.default in bases else (bases[0] if bases else None),
        "example_original": originals[0] if originals else None,
        "medimeta_citation": source_text("medimeta", "citation.bib"),
        "verified": False,
        "hfmed_version": __version__,
        "montage_note": montage.note(False) if ctx.montages else None,
        "medimeta_datasets": datasets,
    }


class MedIMeta(Builder):
    collection = "medimeta"
    default_config = None  # no dataset stands for the collection; the card marks the first
    card = CollectionCard(
        pretty_name="MedIMeta",
        tags=("medical", "medical-imaging", "biology", "medimeta", "multi-task", "meta-learning"),
        license_of=_license,
        variables=_card_variables,
        montage_configs=_montage_configs,
    )

    def __init__(self, config_name: str, source: str | Path | None = None) -> None:
        super().__init__(config_name, source)
        path, self.original = resolve(config_name, self.source)
        self.folder = MedIMetaFolder(path)
        self.info = self.folder.info
        if self.info.id != path.name:
            raise UserError(
                f"{path / INFO_FILE}: declares id {self.info.id!r} but its folder is "
                f"{path.name!r}; rename the folder to {self.info.id}"
            )
        self.kind = SPLIT_KIND[self.original]
        self._features: Features | None = None

    def source_paths(self) -> list[Path]:
        return [*super().source_paths(), self.folder.path]

    # --- features -------------------------------------------------------------------------
    def _info(self) -> Features:
        if self._features is None:
            cols: dict[str, Any] = {"image": Image()}
            for task in self.info.tasks:
                label = ClassLabel(names=list(task.names))
                cols[task.column] = List(label) if task.multi_label else label
            if self.folder.has_patient_id:
                cols["patient_id"] = Value("string")
            self._features = Features(cols)
        return self._features

    # --- splits and rows --------------------------------------------------------------------
    def _split_generators(self) -> list[SplitGenerator]:
        if self.original and not (self.folder.path / "original_splits").is_dir():
            raise UserError(
                f"{self.folder.path / 'original_splits'}: missing; download the complete "
                f"dataset folder to build {self.config_name}"
            )
        if self.original and not self.folder.original_differs():
            raise UserError(
                f"{self.folder.path / 'original_splits'}: the original splits hold the same images as splits/; "
                f"build {self.info.id} instead of {self.config_name}"
            )
        self.folder.validate(self.kind)
        plan = []
        for split in SPLIT_FILES:
            indices = self.folder.split_indices(self.kind, split)
            plan.append(SplitGenerator(split, len(indices), {"indices": indices}))
        return plan

    def _generate_batches(self, indices: np.ndarray) -> Iterator[dict[str, Any]]:
        yield from self.folder.iter_batches(indices)

    def metadata(self) -> dict[str, Any]:
        info = self.info
        return {
            **super().metadata(),
            "dataset": {
                "id": info.id,
                "name": info.name,
                "domain": info.domain,
                "summary": info.summary,
                "license": info.license,
                "license_id": license_id(info.license),
                "homepage": info.homepage,
                "doi": info.doi,
                "original_data": [dict(o) for o in info.original_data],
            },
            "splits_from": self.kind,
            "image_mode": "L" if info.channels == 1 else "RGB",
            "tasks": [t.summary() for t in info.tasks],
        }

    # --- collection-level --------------------------------------------------------------------
    @classmethod
    def config_names(cls, names: list[str], *, all_configs: bool, size: int | None, source: Path | None) -> list[str]:
        if size is not None:
            raise UserError(
                "--size applies to medmnist only; every MedIMeta image is as its info.yaml declares (224x224)"
            )
        if all_configs and names:
            raise UserError("give dataset ids or --all, not both")
        if not all_configs:
            if not names:
                raise UserError("name a dataset (e.g. bus) or pass --all; `hfmed list medimeta` shows them")
            for name in names:
                resolve(name, source)
            return list(names)
        if source is None:
            raise UserError("--all needs --source: the folder holding the MedIMeta dataset folders")
        out = []
        for name, path in dataset_folders(source).items():
            _check_name(name)
            out.append(name)
            if MedIMetaFolder(path).original_differs():
                out.append(name + ORIGINAL_SUFFIX)
        if not out:
            raise UserError(
                f"{source}: no MedIMeta dataset folders in it (folders holding info.yaml); unpack the downloads there"
            )
        return out

    @classmethod
    def listing(cls) -> list[dict[str, Any]]:
        rows = []
        for ds_id, d in _facts()["datasets"].items():
            sp, og = d["splits"], d["original_splits"]
            for i, task in enumerate(d["tasks"]):
                first = i == 0
                rows.append(
                    {
                        "dataset": ds_id if first else "",
                        "domain": d["domain"] if first else "",
                        "task (column)": task["column"],
                        "type": task["type"],
                        "classes": len(task["labels"]),
                        "train/val/test": f"{sp['train']}/{sp['validation']}/{sp['test']}" if first else "",
                        "original splits": (f"{og['train']}/{og['validation']}/{og['test']}" if og else "-")
                        if first
                        else "",
                        "license": d["license_id"] if first else "",
                    }
                )
        return rows

    @classmethod
    def config_for(cls, subset: str | None, size: int) -> str:
        if not subset:
            raise UserError(
                "name a MedIMeta dataset with --subset (e.g. --subset dr_regular --task "
                "dr_level); `hfmed list medimeta` shows them"
            )
        return subset
