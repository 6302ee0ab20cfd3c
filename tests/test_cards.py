"""Dataset cards: written from the checked-in sources plus facts measured on the shards.

The sources (``dataset_cards/``) and a regenerated card must agree, the Hub metadata must be
filled from what was built, and every config shows a deterministic montage and its label counts.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import MEDIMETA_INFO, make_medmnist_npz, medmnist_arrays, write_npz
from datasets import Features
from hfmed.loading_scripts.medmnist import MedMNIST, preview
from huggingface_hub import DatasetCard
from PIL import Image

from hfmed import cards, facts, hub, montage, registry
from hfmed.errors import UserError
from hfmed.features import read_metadata
from hfmed.writer import build_config

SOURCES = registry.card_folder("medmnist").parent


def prose(collection: str, folder: str, name: str) -> str:
    return SOURCES.joinpath(collection, folder, f"{name}.md").read_text(encoding="utf-8").strip()


def build_small(out: Path, npz: Path, name: str) -> None:
    build_config(MedMNIST(name, npz, unofficial=True), out, progress=False)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def card_of(folder: Path) -> DatasetCard:
    return DatasetCard.load(folder / "README.md")


# --- the sources and the rendered card agree ---------------------------------------------------


def test_every_medmnist_subset_has_a_prose_source_and_every_source_a_subset():
    files = {p.name[: -len(".md")] for p in SOURCES.joinpath("medmnist", "subsets").iterdir() if p.name.endswith(".md")}
    assert files == set(facts.load("medmnist")["subsets"])
    assert all(prose("medmnist", "subsets", flag) for flag in files)


def test_every_medimeta_dataset_has_a_prose_source_and_every_source_a_dataset():
    files = {
        p.name[: -len(".md")] for p in SOURCES.joinpath("medimeta", "datasets").iterdir() if p.name.endswith(".md")
    }
    assert files == set(facts.load("medimeta")["datasets"]) == {p.stem for p in MEDIMETA_INFO.glob("*.yaml")}
    assert all(prose("medimeta", "datasets", ds) for ds in files)


def test_a_build_writes_exactly_the_card_its_sources_render(built_medmnist):
    assert (built_medmnist / "README.md").read_text(encoding="utf-8") == cards.render(built_medmnist)


def test_the_card_carries_each_built_subsets_prose_and_citations_verbatim(built_medmnist):
    text = (built_medmnist / "README.md").read_text(encoding="utf-8")
    registry = facts.load("medmnist")
    for flag in ("breastmnist", "adrenalmnist3d"):
        assert prose("medmnist", "subsets", flag) in text
        for line in registry["subsets"][flag]["citation"].splitlines():
            assert line.strip() in text
    for line in registry["citation"].splitlines():
        assert line.strip() in text
    assert "Not for clinical use" in text
    assert prose("medmnist", "subsets", "pathmnist") not in text  # only what was built


# --- Hub metadata ------------------------------------------------------------------------------


def test_the_hub_metadata_is_filled_from_the_build(built_medmnist):
    data = card_of(built_medmnist).data
    assert data.license == "cc-by-4.0"
    assert data.task_categories == ["image-classification"]
    assert data.size_categories == ["1K<n<10K"]  # 780 breastmnist + 1,584 adrenalmnist3d rows
    assert data.pretty_name == "MedMNIST v2 and MedMNIST+"
    assert {"medical", "medmnist", "3d"} <= set(data.tags)
    defaults = [c["config_name"] for c in data.configs if c.get("default")]
    assert defaults == ["breastmnist"]  # pneumoniamnist, the collection's default, is not built: the first 2D config is
    declared = {i["config_name"]: Features._from_yaml_list(i["features"]) for i in data.dataset_info}
    for config in ("breastmnist", "adrenalmnist3d"):
        shard = next((built_medmnist / config).glob("*.parquet"))
        assert declared[config] == read_metadata(pq.read_schema(shard))[0]


def test_a_users_own_license_file_is_left_alone(tmp_path, small_npz):
    out = tmp_path / "medmnist"
    out.mkdir()
    (out / "LICENSE").write_text("my terms\n", encoding="utf-8")
    build_small(out, small_npz("dermamnist"), "dermamnist")
    build_small(out, small_npz("breastmnist"), "breastmnist")
    assert (out / "LICENSE").read_text(encoding="utf-8") == "my terms\n"


def test_a_license_file_hfmed_wrote_goes_when_the_licenses_agree_again(tmp_path, small_npz):
    out = tmp_path / "medmnist"
    build_small(out, small_npz("dermamnist"), "dermamnist")
    build_small(out, small_npz("breastmnist"), "breastmnist")
    assert (out / "LICENSE").is_file()
    shutil.rmtree(out / "dermamnist")
    cards.write_card(out)
    assert not (out / "LICENSE").exists() and card_of(out).data.license == "cc-by-4.0"


def test_the_card_links_the_papers_the_hub_turns_into_paper_pages(built_medmnist):
    text = (built_medmnist / "README.md").read_text(encoding="utf-8")
    for arxiv in ("2010.14925", "2110.14795", "2404.15786"):
        assert f"(https://arxiv.org/abs/{arxiv})" in text
    assert "MedMNIST} Classification Decathlon" in text  # the v1 citation


def test_a_collection_that_mixes_licenses_is_other_with_each_license_named(tmp_path, small_npz):
    out = tmp_path / "medmnist"
    build_small(out, small_npz("dermamnist"), "dermamnist")
    build_small(out, small_npz("breastmnist"), "breastmnist")
    data = card_of(out).data
    assert data.license == "other"
    assert data.license_name == "cc-by-4.0-and-cc-by-nc-4.0"
    assert data.license_link == "LICENSE" and "license_details" not in data.to_dict()
    license = (out / "LICENSE").read_text(encoding="utf-8")
    assert "cc-by-nc-4.0 (https://creativecommons.org/licenses/by-nc/4.0/):\n  dermamnist\n" in license
    assert "cc-by-4.0 (https://creativecommons.org/licenses/by/4.0/):\n  breastmnist\n" in license
    assert "[LICENSE](LICENSE)" in (out / "README.md").read_text(encoding="utf-8")
    assert Path("LICENSE") in hub.check(out).files  # pushed with the card
    assert hub.check(out).problems == []


def test_a_size_category_per_total_row_count():
    assert [cards.size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 1_700_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
    ]


# --- label counts ------------------------------------------------------------------------------


def test_label_counts_per_split_are_those_of_the_source(built_medmnist, real_breastmnist):
    text = (built_medmnist / "README.md").read_text(encoding="utf-8")
    arrays = np.load(real_breastmnist)
    names = facts.load("medmnist")["subsets"]["breastmnist"]["labels"]
    for k, name in enumerate(names):
        counts = [int((arrays[f"{s}_labels"] == k).sum()) for s in ("train", "val", "test")]
        assert f"| {k} | {name} | {counts[0]:,} | {counts[1]:,} | {counts[2]:,} |" in text


def test_multi_label_counts_count_each_finding_and_the_rows_without_any(tmp_path):
    arrays = medmnist_arrays("chestmnist", n={"train": 30, "val": 10, "test": 10}, seed=3)
    arrays["train_labels"][:4] = 0  # four images with no finding
    npz = write_npz(tmp_path / "chestmnist.npz", arrays)
    out = tmp_path / "medmnist"
    build_small(out, npz, "chestmnist")
    counts = cards.label_counts(cards.scan(out)[0])["labels"]
    splits = ("train", "val", "test")
    assert counts.splits == ["train", "validation", "test"]
    for k in range(14):
        assert counts.counts[k] == [int(arrays[f"{s}_labels"][:, k].sum()) for s in splits]
    assert counts.empty == [int((arrays[f"{s}_labels"].sum(axis=1) == 0).sum()) for s in splits]
    assert counts.empty[0] >= 4
    text = (out / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"\| – \| \*no finding\* \| {counts.empty[0]} \| {counts.empty[1]} \| {counts.empty[2]} \|", text)


# --- montages ----------------------------------------------------------------------------------


def tile(picture: np.ndarray, row: int, col: int, height: int, width: int) -> np.ndarray:
    g = montage.GAP
    y, x = g + row * (height + g), g + col * (width + g)
    return picture[y : y + height, x : x + width]


def test_a_2d_montage_shows_the_first_training_images_of_each_class_by_row(built_medmnist, real_breastmnist):
    assert "![samples of breastmnist](images/breastmnist.png)" in (built_medmnist / "README.md").read_text(
        encoding="utf-8"
    )
    picture = np.asarray(Image.open(built_medmnist / "images" / "breastmnist.png"))
    arrays = np.load(real_breastmnist)
    images, labels = arrays["train_images"], arrays["train_labels"].reshape(-1)
    scale = montage.TILE // 28
    for k in range(2):
        first = np.flatnonzero(labels == k)[: montage.PER_ROW_2D]
        for j, i in enumerate(first):
            shown = tile(picture, k, j, 28 * scale, 28 * scale)
            assert np.array_equal(shown[::scale, ::scale], images[i])


def test_a_3d_montage_shows_the_preview_slices_of_the_first_volumes(built_medmnist, real_adrenalmnist3d):
    picture = np.asarray(Image.open(built_medmnist / "images" / "adrenalmnist3d.png"))
    arrays = np.load(real_adrenalmnist3d)
    volumes, labels = arrays["train_images"], arrays["train_labels"].reshape(-1)
    scale = montage.TILE // 28
    for k in range(2):
        first = np.flatnonzero(labels == k)[: montage.PER_ROW_3D]
        shown = tile(picture, k, 0, 28 * scale, 84 * scale)
        assert np.array_equal(shown[::scale, ::scale], preview(volumes[first[:1]])[0])
    assert picture.shape[1] == montage.PER_ROW_3D * (84 * scale + montage.GAP) + montage.GAP


def test_two_builds_of_the_same_sources_give_byte_identical_cards_and_montages(tmp_path, small_npz):
    sources = {name: small_npz(name, seed=i) for i, name in enumerate(("pneumoniamnist", "organmnist3d", "chestmnist"))}
    first, second = tmp_path / "a" / "medmnist", tmp_path / "b" / "medmnist"
    for out in (first, second):
        for name, npz in sources.items():
            build_small(out, npz, name)
    assert tree_bytes(first) == tree_bytes(second)
    assert sorted(p.name for p in (first / "images").iterdir()) == [
        "chestmnist.png",
        "organmnist3d.png",
        "pneumoniamnist.png",
    ]


def test_removing_a_config_removes_its_montage_and_its_card_section(tmp_path, built_medmnist):
    out = tmp_path / "medmnist"
    shutil.copytree(built_medmnist, out)
    shutil.rmtree(out / "breastmnist")
    cards.write_card(out)
    assert not (out / "images" / "breastmnist.png").exists()
    assert "breastmnist" not in (out / "README.md").read_text(encoding="utf-8")
    assert hub.check(out).problems == []


def test_a_card_that_cannot_be_rendered_leaves_the_folder_as_it_was(tmp_path, built_medmnist, monkeypatch):
    out = tmp_path / "medmnist"
    shutil.copytree(built_medmnist, out)
    (out / "images" / "breastmnist.png").unlink()
    before = tree_bytes(out)

    def missing(collection, *parts):
        raise UserError(f"card source dataset_cards/{collection}/{'/'.join(parts)} is missing; reinstall hfmed")

    monkeypatch.setattr(cards, "source_text", missing)
    with pytest.raises(UserError, match="is missing"):
        cards.write_card(out)
    assert tree_bytes(out) == before


def test_a_montage_png_decodes_and_carries_no_varying_chunks(built_medmnist):
    data = (built_medmnist / "images" / "breastmnist.png").read_bytes()
    Image.open(io.BytesIO(data)).load()
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append(
            (
                data[pos + 4 : pos + 8].decode("ascii"),
                data[pos + 8 : pos + 8 + length] if data[pos + 4 : pos + 8] == b"tEXt" else None,
            )
        )
        pos += 12 + length
    assert {name for name, _ in chunks} <= {"IHDR", "IDAT", "IEND", "tEXt"}
    assert [text for name, text in chunks if name == "tEXt"] == [b"Software\x00hfmed"]  # the ownership mark, constant


# --- MedIMeta ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_medimeta(tmp_path_factory) -> Path:
    """A synthetic MedIMeta build: bus (two tasks), dr_regular (keys with gaps), organs_axial (non-commercial)."""
    from medimeta_fixtures import make_medimeta_folder

    from hfmed.cli import main

    root = tmp_path_factory.mktemp("medimeta")
    for ds in ("bus", "dr_regular", "organs_axial"):
        make_medimeta_folder(root / "src", MEDIMETA_INFO / f"{ds}.yaml", {"train": 8, "val": 3, "test": 3})
    assert (
        main(["build", "medimeta", "--all", "--source", str(root / "src"), "--out", str(root / "medimeta"), "--quiet"])
        == 0
    )
    return root / "medimeta"


def test_a_medimeta_card_carries_each_datasets_prose_facts_and_citations(built_medimeta):
    text = (built_medimeta / "README.md").read_text(encoding="utf-8")
    for ds in ("bus", "dr_regular", "organs_axial"):
        assert prose("medimeta", "datasets", ds) in text
        assert f"### {ds}\n" in text
    assert SOURCES.joinpath("medimeta", "citation.bib").read_text(encoding="utf-8").strip() in text
    assert "Not for clinical use" in text
    assert (
        "Dataset of breast ultrasound images, Data in Brief, Volume 28" in text
    )  # bus's original data, from info.yaml


def test_a_medimeta_card_maps_class_ids_to_the_source_label_keys(built_medimeta):
    text = (built_medimeta / "README.md").read_text(encoding="utf-8")
    assert "#### dr_regular: Artifact" in text
    artifact = text.split("#### dr_regular: Artifact", 1)[1].split("####", 1)[0]
    assert "The source keys have gaps" in artifact
    keys = [int(m) for m in re.findall(r"^\| \d+ \| (\d+) \|", artifact, flags=re.M)]
    ids = [int(m) for m in re.findall(r"^\| (\d+) \| \d+ \|", artifact, flags=re.M)]
    assert keys == [0, 1, 4, 6, 8, 10] and ids == list(range(6))
    clarity = text.split("#### dr_regular: Clarity", 1)[1].split("####", 1)[0]
    assert [int(m) for m in re.findall(r"^\| \d+ \| (\d+) \|", clarity, flags=re.M)] == [1, 4, 6, 8, 10]


def test_a_medimeta_card_counts_each_task_per_split(built_medimeta):
    config = next(c for c in cards.scan(built_medimeta) if c.name == "bus")
    counts = cards.label_counts(config)
    assert set(counts) == {"case_category", "malignancy"}
    for table in counts.values():
        per_split = [sum(row[j] for row in table.counts) for j in range(3)]
        assert per_split == [s.num_examples for s in config.splits]


def test_a_medimeta_build_mixing_licenses_names_both_and_passes_check(built_medimeta):
    data = card_of(built_medimeta).data
    assert data.license == "other"
    assert data.license_name == "cc-by-nc-sa-4.0-and-cc-by-sa-4.0"
    assert data.license_link == "LICENSE"
    assert "cc-by-nc-sa-4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/):\n  organs_axial" in (
        built_medimeta / "LICENSE"
    ).read_text(encoding="utf-8")
    montages = sorted(p.name for p in (built_medimeta / "images").iterdir())
    assert montages == ["bus.png", "dr_regular.png", "organs_axial.png"]  # one per dataset, not per split variant
    assert hub.check(built_medimeta).problems == []


def test_a_rebuilt_config_gets_a_montage_of_its_new_images(tmp_path, small_npz):
    out, fresh = tmp_path / "medmnist", tmp_path / "fresh" / "medmnist"
    build_small(out, small_npz("pneumoniamnist", seed=0), "pneumoniamnist")
    old = (out / "images" / "pneumoniamnist.png").read_bytes()
    (tmp_path / "newer").mkdir()
    newer = make_medmnist_npz(tmp_path / "newer", "pneumoniamnist", n={"train": 12, "val": 5, "test": 6}, seed=1)
    build_config(MedMNIST("pneumoniamnist", newer, unofficial=True), out, overwrite=True, progress=False)
    build_small(fresh, newer, "pneumoniamnist")
    assert (
        (out / "images" / "pneumoniamnist.png").read_bytes()
        == (fresh / "images" / "pneumoniamnist.png").read_bytes()
        != old
    )


def test_each_template_uses_only_variables_the_renderer_provides(built_medmnist, built_medimeta):
    """An unknown name renders as an empty string in a plain jinja2 template: catch renames here."""
    import jinja2
    from jinja2 import meta

    for collection, folder in (("medmnist", built_medmnist), ("medimeta", built_medimeta)):
        configs = cards.scan(folder)
        spec = registry.get(collection).card
        provided = spec.variables(cards.CardContext(configs, configs[0].name, "org/x", {}))
        provided |= cards.hub_metadata(spec, configs) | {
            "card_data": None,
            "license_link": None,
        }  # license_link: only where licenses differ
        used = meta.find_undeclared_variables(jinja2.Environment().parse(cards.source_text(collection, "template.md")))
        assert used <= set(provided), used - set(provided)
