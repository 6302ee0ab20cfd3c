"""The small declarative base class every collection builder fills in.

Modelled on the shape of ``datasets`` builders: a config, ``_info`` (the features),
``_split_generators`` (what splits exist, how many rows, and how to read them) and
``_generate_batches`` (plain numpy columns, in source order). Sharding, PNG encoding, Parquet
writing, atomic placement, cards and verification stay in the library, so a builder holds only
what is specific to its source format.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from datasets import Features

from hfmed.errors import UserError

SPLITS = ("train", "validation", "test")

COLLECTIONS = {
    "medmnist": "loading_scripts.medmnist:MedMNIST",
    "medimeta": "loading_scripts.medimeta:MedIMeta",
}


@dataclass(frozen=True)
class SplitGenerator:
    """One split: its row count (checked before anything is written) and the reader's arguments."""

    name: str
    num_rows: int
    gen_kwargs: Mapping[str, Any] = field(default_factory=dict)


class Builder:
    """Base of a collection builder; one instance builds one config from one source."""

    collection: ClassVar[str]
    default_config: ClassVar[str | None] = None  # marked `default` in the card when built

    def __init__(self, config_name: str, source: str | Path | None = None, **options: Any):
        self.config_name = config_name
        self.source = Path(source).expanduser() if source is not None else None
        self.options = options  # builder-specific switches, recorded so verify can rebuild the reader

    # What a builder implements -------------------------------------------------------------
    def _info(self) -> Features:
        raise NotImplementedError

    def _split_generators(self) -> list[SplitGenerator]:
        raise NotImplementedError

    def _generate_batches(self, **gen_kwargs) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """Facts stored in every shard's schema (collection, config, what the source was)."""
        return {"collection": self.collection, "config": self.config_name, "options": self.options}

    def source_paths(self) -> list[Path]:
        """What the build reads from, so that an output folder never overlaps it."""
        return [self.source] if self.source is not None else []

    # Collection-level facts for the CLI -----------------------------------------------------
    @classmethod
    def config_names(cls, names: list[str], *, all_configs: bool, size: int | None, source: Path | None) -> list[str]:
        raise NotImplementedError

    @classmethod
    def listing(cls) -> list[dict[str, Any]]:
        raise NotImplementedError

    # Used by the library --------------------------------------------------------------------
    @property
    def features(self) -> Features:
        return self._info()

    def splits(self) -> list[SplitGenerator]:
        """Validated split plan; empty splits are left out (the Hub has no use for them)."""
        return [s for s in self._split_generators() if s.num_rows > 0]

    def batches(self, split: SplitGenerator) -> Iterator[dict[str, Any]]:
        return self._generate_batches(**split.gen_kwargs)


def builder_class(collection: str) -> type[Builder]:
    """The builder of a collection, by name, from the table above (no if/else over names)."""
    try:
        module, _, cls = COLLECTIONS[collection].partition(":")
    except KeyError:
        raise UserError(f"unknown collection {collection!r}; choose one of: {', '.join(COLLECTIONS)}") from None
    return getattr(importlib.import_module(module), cls)
