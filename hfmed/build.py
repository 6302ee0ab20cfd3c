"""``build``: a collection's configs into a dataset folder (shards, card, montages), as one call.

``hfmed build`` is this function behind a command line; Python callers pass plain values::

    from hfmed.build import build
    build("medmnist", ["breastmnist"], source="~/data/breastmnist.npz", out="medmnist")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfmed import outdir, registry


@dataclass
class BuildResult:
    """The folder built into, the configs written (name -> folder) and those already complete."""

    out: Path
    built: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def build(
    collection: str,
    names: Sequence[str] = (),
    *,
    all_configs: bool = False,
    size: int | None = None,
    source: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    options: Mapping[str, Any] | None = None,
    threads: int | None = None,
    progress: bool = True,
    on_built: Callable[[str, Path], None] | None = None,
) -> BuildResult:
    """Build ``names`` (or every config, ``all_configs``) of ``collection`` into ``out`` (default ``./<collection>``).

    ``options`` are the builder's declared switches (MedMNIST: ``{"unofficial": True}``); one the
    collection does not declare is refused before anything is written. With ``all_configs``,
    complete configs are kept (the build resumes) unless ``overwrite``. ``on_built`` is called
    after each config is placed. The card is rewritten after every config.
    """
    from hfmed.writer import build_config, write_card

    cls = registry.get(collection)
    cls.check_options(options or {})
    src = Path(source).expanduser() if source is not None else None
    folder = Path(out if out is not None else collection)
    outdir.check_apart(folder, [src] if src is not None else [])
    configs = cls.config_names(list(names), all_configs=all_configs, size=size, source=src)
    result = BuildResult(folder)
    for name in configs:
        if all_configs and not overwrite and outdir.config_collection(folder / name) == collection:
            result.skipped.append(name)  # complete: configs are placed whole
            continue
        builder = cls.create(name, src, **(options or {}))
        result.built[name] = build_config(builder, folder, overwrite=overwrite, threads=threads, progress=progress)
        if on_built is not None:
            on_built(name, result.built[name])
    if all_configs and folder.is_dir():
        write_card(folder)
    return result
