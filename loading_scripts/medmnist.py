"""MedMNIST: the builder and everything hfmed knows of the collection, driven by ``medmnist.yaml`` beside it.

Config names follow the official file names: ``pneumoniamnist`` (28 px), ``pneumoniamnist_64``,
..., ``adrenalmnist3d_64``; :func:`parse_config` is the one parser of them. The source is an
official ``.npz`` file, given or downloaded; it is validated against the facts (members, shapes,
dtypes, split sizes, label ranges) before a single row is written. The card takes its facts from
the same table and its prose from ``dataset_cards/medmnist/subsets/<flag>.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Array3D, ClassLabel, Features, Image, List

from hfmed import __version__, facts, montage
from hfmed.builder import Builder, SplitGenerator
from hfmed.cards import CardContext, CollectionCard, ConfigSummary, label_counts, source_text, split_sizes
from hfmed.errors import UserError
from hfmed.sources import download
from hfmed.sources.npz import NpzArchive

CHUNK_BYTES = 16 << 20  # rows read per step: bounded memory, large enough for fast inflating
SOURCE_SPLITS = {"train": "train", "validation": "val", "test": "test"}  # ours -> npz member prefix

logger = logging.getLogger(__name__)


def _facts() -> dict:
    return facts.load("medmnist")


def subsets() -> dict[str, dict]:
    return _facts()["subsets"]


def sizes(flag: str) -> list[int]:
    return sorted(subsets()[flag]["md5"])


def config_name(flag: str, size: int) -> str:
    return flag if size == 28 else f"{flag}_{size}"


def file_name(flag: str, size: int) -> str:
    return config_name(flag, size) + ".npz"


def parse_config(name: str) -> tuple[str, int]:
    flag, _, size = name.partition("_")
    if flag not in subsets() or (size and not size.isdigit()):
        raise UserError(f"unknown MedMNIST config {name!r}; `hfmed list medmnist` shows the valid names")
    size_i = int(size) if size else 28
    if size_i not in sizes(flag) or size == "28":
        valid = ", ".join(config_name(flag, s) for s in sizes(flag))
        raise UserError(f"MedMNIST has no config {name!r}; {flag} comes as: {valid}")
    return flag, size_i


def preview(volumes: np.ndarray) -> np.ndarray:
    """The three orthogonal middle slices side by side, so the viewer can show a volume."""
    n, d, h, w = volumes.shape
    return np.concatenate([volumes[:, d // 2, :, :], volumes[:, :, h // 2, :], volumes[:, :, :, w // 2]], axis=2)


# --- the card: facts from medmnist.yaml, prose from dataset_cards/medmnist/subsets/<flag>.md ------


def _license(config: ConfigSummary) -> str:
    return subsets()[parse_config(config.name)[0]]["license"]


def _shape(entry: dict, size: int) -> str:
    if entry["volumetric"]:
        return "×".join([str(size)] * 3)
    return f"{size}×{size}" + ("×3" if entry["channels"] == 3 else "")


def _subset_variables(
    flag: str, entry: dict, members: list[tuple[int, ConfigSummary]], ctx: CardContext
) -> dict[str, Any]:
    # every size of a subset holds the same samples and labels: one count table serves all
    counts = next(iter(label_counts(members[0][1]).values()))
    configs = [
        {
            "name": c.name,
            "shape": _shape(entry, size),
            "splits": split_sizes(c),
            "default": c.name == ctx.default,
            "montage": ctx.montages.get(c.name),
        }
        for size, c in members
    ]
    return {
        "flag": flag,
        "title": entry.get("title") or flag,
        "volumetric": entry["volumetric"],
        "task": entry["task"],
        "license": entry["license"],
        "source": entry["source"],
        "citation": entry["citation"],
        "description": source_text("medmnist", "subsets", f"{flag}.md"),
        "configs": configs,
        "count_columns": counts.splits,
        "label_rows": counts.rows(),
        "empty_counts": counts.empty,
    }


def _card_variables(ctx: CardContext) -> dict[str, Any]:
    table = _facts()
    by_flag: dict[str, list[tuple[int, ConfigSummary]]] = {}
    for c in ctx.configs:
        flag, size = parse_config(c.name)
        by_flag.setdefault(flag, []).append((size, c))
    subsets_built = [  # in the facts' order
        _subset_variables(flag, entry, sorted(by_flag[flag], key=lambda pair: pair[0]), ctx)
        for flag, entry in table["subsets"].items()
        if flag in by_flag
    ]

    def example(volumetric: bool) -> str | None:
        names = [c["name"] for s in subsets_built if s["volumetric"] == volumetric for c in s["configs"]]
        return ctx.default if ctx.default in names else (names[0] if names else None)

    return {
        "repo_id": ctx.repo_id,
        "default_config": ctx.default,
        "default_is_collections": ctx.default == MedMNIST.default_config,
        "default_is_3d": ctx.default in [c["name"] for s in subsets_built if s["volumetric"] for c in s["configs"]],
        "example_2d": example(False),
        "example_3d": example(True),
        "medmnist_citation": table["citation"],
        "medmnist_plus_citation": table["medmnist_plus_citation"],
        "medmnist_v1_citation": table["medmnist_v1_citation"],
        "verified": False,  # building does not verify; `hfmed verify` proves a build separately
        "hfmed_version": __version__,
        "montage_note": montage.note(any(s["volumetric"] for s in subsets_built)) if ctx.montages else None,
        "subsets": subsets_built,
    }


class MedMNIST(Builder):
    collection = "medmnist"
    default_config = "pneumoniamnist"
    build_options = ("unofficial",)
    card = CollectionCard(
        pretty_name="MedMNIST v2 and MedMNIST+",
        tags=("medical", "medical-imaging", "biology", "medmnist", "3d"),
        license_of=_license,
        variables=_card_variables,
        montage_configs=list,
    )

    def __init__(self, config_name: str, source: str | Path | None = None, *, unofficial: bool = False) -> None:
        super().__init__(config_name, source, unofficial=unofficial)
        self.flag, self.size = parse_config(config_name)
        self.facts = subsets()[self.flag]
        self.unofficial = unofficial
        self._md5: str | None = None

    # --- features -------------------------------------------------------------------------
    def _info(self) -> Features:
        labels = ClassLabel(names=self.facts["labels"])
        s = self.size
        if self.facts["volumetric"]:
            # label and preview first: the viewer shows columns in order, and draws only the preview
            return Features({"label": labels, "preview": Image(), "volume": Array3D((s, s, s), "uint8")})
        if self.facts["task"] == "multi-label":
            return Features({"image": Image(), "labels": List(labels)})
        return Features({"image": Image(), "label": labels})

    # --- source -----------------------------------------------------------------------------
    @property
    def file_name(self) -> str:
        return file_name(self.flag, self.size)

    @property
    def official_md5s(self) -> set[str]:
        return {self.facts["md5"][self.size], *self.facts.get("superseded_md5", {}).get(self.size, [])}

    def url(self) -> str:
        template = os.environ.get("HFMED_MEDMNIST_URL", _facts()["download_url"])
        return template.format(file=self.file_name)

    def source_path(self) -> Path:
        """The file to read: the one given, the one in a given folder, or the cached download."""
        if self.source is not None:
            return self.source / self.file_name if self.source.is_dir() else self.source
        dest = download.cache_dir() / "medmnist" / self.file_name
        return download.fetch(self.url(), dest, self.official_md5s)

    # --- validation and reading -------------------------------------------------------------
    def _expected_image_shape(self) -> tuple[int, ...]:
        s = self.size
        if self.facts["volumetric"]:
            return (s, s, s)
        return (s, s, 3) if self.facts["channels"] == 3 else (s, s)

    def _check_members(self, archive: NpzArchive, split: str, prefix: str) -> int:
        path = archive.path
        for kind in ("images", "labels"):
            if f"{prefix}_{kind}" not in archive.members:
                raise UserError(
                    f"{path}: member '{prefix}_{kind}' is missing; this is not a complete MedMNIST {self.flag} file"
                )
        images, labels = archive.members[f"{prefix}_images"], archive.members[f"{prefix}_labels"]
        want = self._expected_image_shape()
        if images.dtype != np.uint8:
            raise UserError(
                f"{path}: '{prefix}_images' is {images.dtype}, expected uint8 pixels; re-save the images as uint8"
            )
        if images.shape[1:] != want:
            got = images.shape[1:]
            hint = ""
            if len(got) == len(want) and got[0] in sizes(self.flag) and got[0] != self.size:
                hint = f"; this looks like the {got[0]} px file: pass --size {got[0]}"
            elif len(got) != len(want):
                hint = f"; {self.flag} has {self.facts['channels']} channel(s)"
            raise UserError(f"{path}: '{prefix}_images' rows are {got}, config {self.config_name} expects {want}{hint}")
        if labels.dtype.kind not in "iu":
            raise UserError(f"{path}: '{prefix}_labels' is {labels.dtype}, expected integer labels")
        k = len(self.facts["labels"])
        want_l = (k,) if self.facts["task"] == "multi-label" else (1,)
        if labels.shape[1:] != want_l and not (want_l == (1,) and labels.shape[1:] == ()):
            raise UserError(
                f"{path}: '{prefix}_labels' rows are {labels.shape[1:]}, expected {want_l} for "
                f"a {self.facts['task']} subset"
            )
        n = images.shape[0]
        if labels.shape[0] != n:
            raise UserError(
                f"{path}: '{prefix}_images' has {n} rows but '{prefix}_labels' has "
                f"{labels.shape[0]}; the file is inconsistent"
            )
        official = self.facts["splits"][split]
        if n != official and not self.unofficial:
            raise UserError(
                f"{path}: {split} has {n} rows, the official {self.flag} has {official}; "
                "pass --unofficial to build a re-sized file anyway"
            )
        return n

    def _check_label_range(self, archive: NpzArchive, prefix: str) -> None:
        k = len(self.facts["labels"])
        multi = self.facts["task"] == "multi-label"
        for chunk in archive.iter_rows(f"{prefix}_labels"):
            if chunk.size == 0:
                continue
            lo, hi = int(chunk.min()), int(chunk.max())
            if lo < 0 or hi > (1 if multi else k - 1):
                allowed = "0 or 1" if multi else f"0..{k - 1}"
                raise UserError(
                    f"{archive.path}: '{prefix}_labels' holds {lo if lo < 0 else hi}, outside "
                    f"{allowed} for {self.flag}; the labels are not MedMNIST's"
                )

    def _split_generators(self) -> list[SplitGenerator]:
        path = self.source_path()
        archive = NpzArchive(path)
        plan = []
        for split, prefix in SOURCE_SPLITS.items():
            n = self._check_members(archive, split, prefix)
            plan.append(SplitGenerator(split, n, {"archive": archive, "prefix": prefix}))
        for s in plan:
            self._check_label_range(archive, s.gen_kwargs["prefix"])
        self._md5 = download.md5sum(path)
        if self._md5 not in self.official_md5s and not self.unofficial:
            logger.warning(
                f"{path}: md5 {self._md5} is not an official {self.file_name}; the structure is "
                "valid, building it anyway"
            )
        return plan

    def _generate_batches(self, archive: NpzArchive, prefix: str) -> Iterator[dict[str, Any]]:
        images = archive.members[f"{prefix}_images"]
        labels = archive.members[f"{prefix}_labels"]
        rows = max(1, CHUNK_BYTES // images.row_nbytes)
        label_rows = archive.iter_rows(f"{prefix}_labels", chunk_bytes=rows * labels.row_nbytes)
        for img, lab in zip(archive.iter_rows(f"{prefix}_images", chunk_bytes=rows * images.row_nbytes), label_rows):
            if self.facts["volumetric"]:
                yield {"volume": img, "label": lab.reshape(-1), "preview": preview(img)}
            elif self.facts["task"] == "multi-label":
                yield {"image": img, "labels": lab}
            else:
                yield {"image": img, "label": lab.reshape(-1)}

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "source_file": self.file_name, "source_md5": self._md5}

    # --- collection-level --------------------------------------------------------------------
    @classmethod
    def config_names(cls, names: list[str], *, all_configs: bool, size: int | None, source: Path | None) -> list[str]:
        if all_configs:
            if names:
                raise UserError("give subset names or --all, not both")
            flags = list(subsets())
            return [config_name(f, s) for f in flags for s in sizes(f) if size is None or s == size]
        if not names:
            raise UserError("name a subset (e.g. pneumoniamnist) or pass --all; `hfmed list medmnist` shows them")
        out = []
        for name in names:
            if size is not None and "_" not in name:
                name = config_name(name, size) if name in subsets() else name
            parse_config(name)
            out.append(name)
        return out

    @classmethod
    def listing(cls) -> list[dict[str, Any]]:
        rows = []
        for flag, f in subsets().items():
            for s in sizes(flag):
                sp = f["splits"]
                rows.append(
                    {
                        "config": config_name(flag, s),
                        "task": f["task"],
                        "classes": len(f["labels"]),
                        "channels": f["channels"],
                        "shape": "x".join([str(s)] * (3 if f["volumetric"] else 2)),
                        "train/val/test": f"{sp['train']}/{sp['validation']}/{sp['test']}",
                        "license": f["license"],
                    }
                )
        return rows

    @classmethod
    def config_for(cls, subset: str | None, size: int) -> str:
        flag = subset or cls.default_config
        if flag not in subsets():
            raise UserError(f"unknown MedMNIST subset {flag!r}; `hfmed list medmnist` shows the valid names")
        if size not in sizes(flag):
            valid = ", ".join(map(str, sizes(flag)))
            raise UserError(f"{flag} comes in sizes {valid}, not {size}; pass --size with one of them")
        return config_name(flag, size)

    @classmethod
    def subset_of(cls, config: str) -> str:
        """The published tables name subsets without the size suffix."""
        return parse_config(config)[0]

    @classmethod
    def is_volumetric(cls, subset: str) -> bool:
        return bool(subsets().get(subset, {}).get("volumetric", False))

    @classmethod
    def task_types(cls, meta: dict[str, Any]) -> dict[str, str]:
        """Every label column of a subset has the task its facts declare."""
        try:
            flag, _ = parse_config(str(meta.get("config", "")))
        except UserError:
            return {}  # a config renamed by hand: the loaders infer the task from the labels
        return {"*": subsets()[flag]["task"]}
