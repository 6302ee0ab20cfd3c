"""A collection's facts: the YAML table beside its builder (``loading_scripts/<collection>.yaml``).

Facts live in data so that no subset needs code of its own; :mod:`hfmed.registry` says where
each collection's table is.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from hfmed import registry


@cache
def load(collection: str) -> dict:
    """The parsed facts of a collection (read once; callers must not mutate it)."""
    return yaml.safe_load(registry.facts_file(collection).read_text(encoding="utf-8"))


def baselines() -> dict[str, dict[str, Any]]:
    """Every registered collection's published tables, by table key; each table names its collection."""
    tables: dict[str, dict[str, Any]] = {}
    for collection in registry.names():
        for key, table in (load(collection).get("baselines") or {}).items():
            tables[key] = {"collection": collection, **table}
    return tables
