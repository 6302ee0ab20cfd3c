"""One registry of collections: a third collection is a builder file, a YAML of facts and a card
folder, and nothing else; the command line, the cards, the loaders, verify and training find it.

The toy collection lives outside the checkout and registers through ``HFMED_COLLECTIONS``, the
same package search path (``hfmed.loading_scripts``) the shipped collections are found on.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hfmed import cards, facts, loaders, registry
from hfmed.cli import main
from hfmed.errors import UserError

BUILDER = '''
"""Toy: two configs of small grayscale squares, labelled by brightness."""

from typing import Any, Iterator

import numpy as np
from datasets import ClassLabel, Features, Image

from hfmed import facts
from hfmed.builder import Builder, SplitGenerator
from hfmed.cards import CollectionCard, source_text, split_sizes
from hfmed.errors import UserError


def _facts() -> dict:
    return facts.load("toy")


def _variables(ctx) -> dict[str, Any]:
    return {
        "intro": source_text("toy", "intro.md"),
        "rows": [{"name": c.name, "splits": split_sizes(c), "montage": ctx.montages.get(c.name)} for c in ctx.configs],
    }


class Toy(Builder):
    collection = "toy"
    default_config = "dim"
    build_options = ("seed",)
    card = CollectionCard(
        pretty_name="Toy",
        tags=("toy",),
        license_of=lambda config: _facts()["license"],
        variables=_variables,
        montage_configs=list,
    )

    def __init__(self, config_name, source=None, *, seed: int = 0):
        super().__init__(config_name, source, **({"seed": seed} if seed else {}))
        if config_name not in _facts()["configs"]:
            raise UserError(f"toy has no config {config_name!r}")
        self.seed = seed

    def _info(self) -> Features:
        return Features({"image": Image(), "label": ClassLabel(names=_facts()["labels"])})

    def _split_generators(self) -> list[SplitGenerator]:
        sizes = _facts()["configs"][self.config_name]
        return [SplitGenerator(split, n, {"split": split, "n": n}) for split, n in sizes.items()]

    def _generate_batches(self, split: str, n: int) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, len(split), n])
        labels = rng.integers(0, 2, n)
        images = (labels[:, None, None] * 128 + rng.integers(0, 100, (n, 8, 8))).astype(np.uint8)
        yield {"image": images, "label": labels}

    @classmethod
    def config_names(cls, names, *, all_configs, size, source):
        return list(_facts()["configs"]) if all_configs else list(names)

    @classmethod
    def listing(cls):
        return [{"config": name, "rows": sum(n.values())} for name, n in _facts()["configs"].items()]
'''

FACTS = """
license: cc-by-4.0
labels: [dark, bright]
configs:
  dim: {train: 12, validation: 4, test: 5}
  dimmer: {train: 6, validation: 3, test: 3}
baselines:
  toy_paper:
    title: Toy paper
    source: nowhere
    rows:
    - method: guess
      results:
        dim: {auc: 0.5, acc: 0.5}
"""

TEMPLATE = """---
{{ card_data }}
---

# Toy

{{ intro }}

{% for r in rows %}- {{ r.name }}: {{ r.splits.train }} train rows
{%- if r.montage %} ![{{ r.name }}]({{ r.montage }}){% endif %}
{% endfor %}
"""


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "toy_home"
    (root / "loading_scripts").mkdir(parents=True)
    (root / "dataset_cards" / "toy").mkdir(parents=True)
    (root / "loading_scripts" / "toy.py").write_text(textwrap.dedent(BUILDER), encoding="utf-8")
    (root / "loading_scripts" / "toy.yaml").write_text(FACTS, encoding="utf-8")
    (root / "dataset_cards" / "toy" / "template.md").write_text(TEMPLATE, encoding="utf-8")
    (root / "dataset_cards" / "toy" / "intro.md").write_text("Squares, dark or bright.", encoding="utf-8")
    monkeypatch.setenv(registry.ENV, str(root))
    facts.load.cache_clear()
    yield root
    facts.load.cache_clear()


def test_the_shipped_collections_are_found_by_the_registry():
    assert {"medmnist", "medimeta"} <= set(registry.names())
    for name in ("medmnist", "medimeta"):
        assert registry.get(name).collection == name
        assert registry.facts_file(name).name == f"{name}.yaml"
        assert (registry.card_folder(name) / "template.md").is_file()


def test_an_unknown_collection_is_one_user_error_that_lists_the_known_ones():
    with pytest.raises(UserError, match="medimeta, medmnist"):
        registry.get("nosuch")


def test_a_third_collection_builds_lists_checks_verifies_and_loads(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["list", "toy"]) == 0
    assert "dimmer" in capsys.readouterr().out
    assert main(["build", "toy", "--all", "--out", str(out), "--quiet"]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Squares, dark or bright." in card and "- dim: 12 train rows" in card and "license: cc-by-4.0" in card
    assert card == cards.render(out)
    assert main(["check", str(out)]) == 0
    assert main(["verify", str(out), "--config", "dimmer"]) == 0

    from datasets import load_dataset

    rows = list(load_dataset(str(out), "dim", streaming=True)["test"])
    assert len(rows) == 5 and {r["label"] for r in rows} <= {0, 1}
    info = loaders.task_info(out, "dim")
    assert info.label_names == ("dark", "bright") and info.task == "binary"
    batch = next(iter(loaders.dataloader(out, "dim", split="train", batch_size=4)))
    assert tuple(batch["pixel_values"].shape) == (4, 1, 8, 8)


def test_a_third_collections_declared_options_are_accepted_and_others_refused(toy, tmp_path, capsys):
    builder = registry.get("toy").create("dim", None, seed=3)
    assert builder.seed == 3
    with pytest.raises(UserError, match="toy takes no build option unofficial"):
        registry.get("toy").create("dim", None, unofficial=True)
    assert main(["build", "toy", "dim", "--unofficial", "--out", str(tmp_path / "x")]) == 2
    assert "toy takes no build option unofficial" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_training_and_reports_read_a_third_collection_through_the_registry(toy):
    from hfmed.training.report import published_for

    assert registry.get("toy").config_for("dim", 28) == "dim"
    rows = published_for({"collection": "toy", "config": "dim"})
    assert [(r["method"], r["auc"]) for r in rows] == [("guess", 0.5)]


def test_medmnist_configs_parse_once_for_training_and_the_published_tables():
    medmnist = registry.get("medmnist")
    assert medmnist.config_for("breastmnist", 64) == "breastmnist_64"
    assert medmnist.subset_of("breastmnist_64") == "breastmnist"
    assert medmnist.is_volumetric("adrenalmnist3d") and not medmnist.is_volumetric("breastmnist")
    with pytest.raises(UserError, match="comes in sizes 28, 64"):
        medmnist.config_for("adrenalmnist3d", 128)
    assert medmnist.task_types({"collection": "medmnist", "config": "retinamnist_224"}) == {"*": "ordinal"}
    assert medmnist.subset_of("retinamnist") == "retinamnist"
