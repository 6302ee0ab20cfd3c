"""The one registry of collections: the CLI, the builders, the cards, the loaders and training ask here.

A collection has one home: ``loading_scripts/<name>.py`` holds its builder, a
:class:`~hfmed.builder.Builder` subclass whose ``collection`` is ``<name>`` and which carries
everything the code knows of the collection (config names and how they parse, build options,
task types, card spec, which published baselines apply); ``loading_scripts/<name>.yaml`` holds
its facts; ``dataset_cards/<name>/`` its card template and prose. Installed, the two folders are
``hfmed.loading_scripts`` and ``hfmed.dataset_cards``. Nothing in ``hfmed`` names a collection.

A collection of one's own needs no change to hfmed: ``HFMED_COLLECTIONS`` lists folders
(separated by ``os.pathsep``) laid out the same way, and their collections register exactly as
the shipped ones do. The variable is read by every process, so spawned workers see them too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from hfmed.errors import UserError

if TYPE_CHECKING:
    from types import ModuleType

    from hfmed.builder import Builder

ENV = "HFMED_COLLECTIONS"
PACKAGE = "hfmed.loading_scripts"
CARDS_FOLDER = "dataset_cards"  # beside loading_scripts/, in the checkout and installed


def extra_builder_folders() -> list[str]:
    """The ``loading_scripts`` folders of the roots named in ``HFMED_COLLECTIONS``."""
    roots = [r for r in os.environ.get(ENV, "").split(os.pathsep) if r.strip()]
    return [str(Path(r).expanduser().resolve() / "loading_scripts") for r in roots]


def _package() -> ModuleType:
    package = importlib.import_module(PACKAGE)
    for folder in extra_builder_folders():
        if folder not in package.__path__:
            package.__path__.append(folder)
    return package


def names() -> list[str]:
    """Every registered collection, in name order."""
    found = {m.name for m in pkgutil.iter_modules(_package().__path__) if not m.ispkg and not m.name.startswith("_")}
    return sorted(found)


def _module_file(name: str) -> Path:
    if name not in names():
        raise UserError(f"unknown collection {name!r}; choose one of: {', '.join(names())}")
    spec = importlib.util.find_spec(f"{PACKAGE}.{name}")
    return Path(spec.origin)


def get(name: str) -> type[Builder]:
    """The builder class of a collection: the one Builder subclass its module defines for it."""
    from hfmed.builder import Builder

    path = _module_file(name)
    module = importlib.import_module(f"{PACKAGE}.{name}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Builder)
        and value.__module__ == module.__name__
        and getattr(value, "collection", None) == name
    ]
    if len(found) != 1:
        raise UserError(
            f"{path}: defines {len(found)} builders with collection = {name!r}; a collection file defines one"
        )
    return found[0]


def facts_file(name: str) -> Path:
    """``loading_scripts/<name>.yaml``: the collection's facts, beside its builder."""
    return _module_file(name).with_suffix(".yaml")


def card_folder(name: str) -> Path:
    """``dataset_cards/<name>/``: the collection's card template and prose."""
    return _module_file(name).parent.parent / CARDS_FOLDER / name
