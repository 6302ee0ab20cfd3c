"""The small declarative base class every collection builder fills in.

Modelled on the shape of ``datasets`` builders: a config, ``_info`` (the features),
``_split_generators`` (what splits exist, how many rows, and how to read them) and
``_generate_batches`` (plain numpy columns, in source order). Sharding, PNG encoding, Parquet
writing, atomic placement, cards and verification stay in the library, so a builder holds only
what is specific to its source format.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from datasets import Features

from hfmed.errors import UserError

if TYPE_CHECKING:
    from hfmed.cards import CollectionCard

SPLITS = ("train", "validation", "test")  # the splits of every build, in card order


@dataclass(frozen=True)
class SplitGenerator:
    """One split: its row count (checked before anything is written) and the reader's arguments."""

    name: str
    num_rows: int
    gen_kwargs: Mapping[str, Any] = field(default_factory=dict)


class Builder:
    """Base of a collection builder; one instance builds one config from one source.

    The subclass is also the collection's entry in :mod:`hfmed.registry`: its class attributes and
    class methods are everything the rest of hfmed knows about the collection.
    """

    collection: ClassVar[str]
    default_config: ClassVar[str | None] = None  # marked `default` in the card when built
    build_options: ClassVar[tuple[str, ...]] = ()  # keyword switches __init__ accepts, e.g. ("unofficial",)
    card: ClassVar[CollectionCard]  # what the collection's dataset card needs beyond measured facts

    def __init__(self, config_name: str, source: str | Path | None = None, **options: Any) -> None:
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

    # Collection-level facts ------------------------------------------------------------------
    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Options the collection does not declare in ``build_options`` are refused in one line."""
        unknown = sorted(set(options) - set(cls.build_options))
        if unknown:
            takes = ", ".join(cls.build_options) or "none"
            raise UserError(f"{cls.collection} takes no build option {', '.join(unknown)} (its options: {takes})")

    @classmethod
    def create(cls, config_name: str, source: str | Path | None = None, **options: Any) -> Builder:
        """A builder of one config, with declared options only."""
        cls.check_options(options)
        return cls(config_name, source, **options)

    @classmethod
    def config_names(cls, names: list[str], *, all_configs: bool, size: int | None, source: Path | None) -> list[str]:
        """The configs a build command names (``--all``, ``--size``), checked."""
        raise NotImplementedError

    @classmethod
    def listing(cls) -> list[dict[str, Any]]:
        """One row per config for ``hfmed list``."""
        raise NotImplementedError

    @classmethod
    def config_for(cls, subset: str | None, size: int) -> str:
        """The config train_hf.py opens for ``--subset`` and ``--size``."""
        if not subset:
            raise UserError(f"name a {cls.collection} config with --subset; `hfmed list {cls.collection}` shows them")
        return subset

    @classmethod
    def subset_of(cls, config: str) -> str:
        """The name published tables (the ``baselines`` facts) give a config."""
        return config

    @classmethod
    def is_volumetric(cls, subset: str) -> bool:
        """Whether a subset holds volumes (unknown names answer False; they are refused later)."""
        return False

    @classmethod
    def task_types(cls, meta: dict[str, Any]) -> dict[str, str]:
        """Task type by label column ("*": every column), from a shard's metadata."""
        tasks = meta.get("tasks") or []
        return {
            str(t["column"]): str(t["type"]) for t in tasks if isinstance(t, dict) and "column" in t and "type" in t
        }

    # Used by the library --------------------------------------------------------------------
    @property
    def features(self) -> Features:
        return self._info()

    def splits(self) -> list[SplitGenerator]:
        """Validated split plan; empty splits are left out (the Hub has no use for them)."""
        return [s for s in self._split_generators() if s.num_rows > 0]

    def batches(self, split: SplitGenerator) -> Iterator[dict[str, Any]]:
        return self._generate_batches(**split.gen_kwargs)
