"""hfmed benchmark on every task type and both dimensions, on small generated builds: multi-label
(ChestMNIST-like and a MedIMeta multi-label task, its folds grouped by patient), ordinal,
multi-class, and a 3D subset with the 3D space. The train_hf.py runs are the real ones, run in this
process instead of as subprocesses (the start-up of a process would be most of these tests)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hfmed.loading_scripts.medmnist import MedMNIST
from medimeta_fixtures import make_medimeta_folder
from PIL import Image

from hfmed import benchmark, cli, loaders
from hfmed.benchmark import protocol, space
from hfmed.training.folds import Fold, cv_assignment
from hfmed.writer import build_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import train_hf  # noqa: E402

MEDIMETA_INFO = ROOT.parent / "shared" / "data" / "medimeta_info"
QUICK = ("--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16")
QUICK_2D = (*QUICK, "--image_size", "28")  # the ResNet would be fed 112 px otherwise
TINY_2D = (
    space.Candidate("plain", ("--arch", "resnet", "--arch_size", "small")),
    space.Candidate("wd", ("--arch", "resnet", "--arch_size", "small", "--weight_decay", "0.5")),
)
OPTIONS = dict(epoch_tiers=(1,), fold_tiers=(2,), seed_tiers=(1,), final_seeds=(100,), search_min_epochs=1, parallel=1)


def in_process(jobs, pool, deadline=None, poll=0.5, watch=None):
    """scheduler.run_jobs, each train_hf.py run called in this process, one after another; the
    budget's ``watch`` is asked after each, as the scheduler asks it while runs go."""
    status = {}
    for job in jobs:
        if job.done:
            status[job.out] = "kept"
            continue
        code = train_hf.main([*job.args, "--output_dir", str(job.out)])
        status[job.out] = "done" if code == 0 and job.done else "failed"
        if watch is not None and watch():
            status.update({j.out: "cancelled" for j in jobs if j.out not in status})
            break
    return status


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "hfmed-cache"))
    monkeypatch.setattr(protocol, "run_jobs", in_process)
    return tmp_path


def medmnist_build(small_npz, tmp_path: Path, flag: str, n: dict[str, int]) -> Path:
    data = tmp_path / "medmnist"
    build_config(MedMNIST(flag, small_npz(flag, n=n), unofficial=True), data, progress=False)
    return data


def medimeta_build(tmp_path: Path, sizes: dict[str, int]) -> Path:
    """cxr (multi-label 'disease labels', patient_id P<i//2>: two images per patient) built small."""
    make_medimeta_folder(tmp_path / "src", MEDIMETA_INFO / "cxr.yaml", sizes, seed=1, tiff=False)
    out = tmp_path / "medimeta"
    assert cli.main(["build", "medimeta", "cxr", "--source", str(tmp_path / "src"), "--out", str(out), "--quiet"]) == 0
    return out


def check_protocol(done, out: Path, task_type: str, candidates: list[str], labels: int) -> dict:
    """What every benchmark must give, whatever the task: a report in the run schema, search runs
    that never opened test, test opened only by the evaluation runs."""
    results, record = done.results, done.record
    assert results["task_type"] == task_type == record["task_type"] and results["num_labels"] == labels
    assert record["plan"]["candidates"] == candidates and record["plan"]["folds"] == 2
    assert 0 <= results["test"]["acc"] <= 1 and np.isfinite(results["test"]["auc"])
    assert len(results["clinical"]["per_class"]["sensitivity"]) == labels
    for name in candidates:
        for fold in (0, 1):
            r = json.loads((out / "search" / name / f"fold{fold}" / "results.json").read_text())
            assert r["test"] is None and r["cross_validation"]["fold"] == fold
    opened = [json.loads(line) for line in (out / "splits.jsonl").read_text().splitlines()]
    test_runs = sorted(
        Path(line["run"]).relative_to(out.resolve()).as_posix() for line in opened if line.get("split") == "test"
    )
    assert test_runs == ["evaluation/seed100"] and record["test_openings"][0]["run"].endswith("evaluation/seed100")
    assert record["calibration"]["measured"][0]["run"] == f"search/{candidates[0]}/fold0"  # progress.json of a real run
    with np.load(out / "predictions.npz") as npz:
        scores = npz["test_scores"]
        assert scores.shape == (results["num_samples"]["test"], labels)
    return results


@pytest.mark.parametrize(
    "flag,task_type,labels",
    [
        ("chestmnist", "multi-label", 14),
        ("retinamnist", "ordinal", 5),
        ("pathmnist", "multi-class", 9),
    ],
)
def test_medmnist_2d_task_types_end_to_end(isolated, small_npz, flag, task_type, labels):
    data = medmnist_build(small_npz, isolated, flag, {"train": 24, "val": 12, "test": 10})
    out = isolated / "bench"
    done = benchmark.run_subset(
        benchmark.Target(flag, dataset=str(data)), 1e6, out, space=TINY_2D, extra_flags=QUICK_2D, **OPTIONS
    )
    check_protocol(done, out, task_type, ["plain", "wd"], labels)
    assert done.record["cv_groups"] is None  # MedMNIST names no patient


def test_a_medimeta_multi_label_task_groups_its_folds_by_patient(isolated):
    data = medimeta_build(isolated, {"train": 24, "val": 8, "test": 8})
    out = isolated / "bench"
    target = benchmark.Target("cxr", collection="medimeta", dataset=str(data), task="disease_labels")
    done = benchmark.run_subset(target, 1e6, out, space=TINY_2D, extra_flags=QUICK_2D, **OPTIONS)
    check_protocol(done, out, "multi-label", ["plain", "wd"], 14)
    assert done.record["cv_groups"] == "patient_id"
    for name in ("plain", "wd"):
        r = json.loads((out / "search" / name / "fold0" / "results.json").read_text())
        assert r["cross_validation"]["groups"] == "patient_id" and "--cv_groups patient_id" in r["command"]
    assert "no patient_id in two folds" in (out / "search/plain/fold0/results.md").read_text()


def test_a_3d_subset_searches_the_3d_space(isolated, small_npz):
    data = medmnist_build(small_npz, isolated, "organmnist3d", {"train": 16, "val": 8, "test": 6})
    out = isolated / "bench"
    two = space.SPACE_3D[:2]
    done = benchmark.run_subset(
        benchmark.Target("organmnist3d", dataset=str(data)), 1e6, out, space=two, extra_flags=QUICK, **OPTIONS
    )
    results = check_protocol(done, out, "multi-class", [c.name for c in two], 11)
    member = json.loads((out / "final/seed100/results.json").read_text())
    assert member["model"] == "scratch:resnet3d-small" and results["image_size"] == 28
    # Without a space given, a 3D config gets the 3D one (and a 2D config the 2D one).
    assert space.for_data(True) == space.SPACE_3D and space.for_data(False) == space.SPACE
    assert all(c.flags[1] in ("resnet3d", "acs", "resnet2_5d") for c in space.SPACE_3D)
    planned = benchmark.run_subset(
        benchmark.Target("organmnist3d", dataset=str(data)),
        1,
        isolated / "default",
        epoch_tiers=(1,),
        fold_tiers=(2,),
        seed_tiers=(1,),
        parallel=1,
        extra_flags=QUICK,
    )
    assert planned.record["plan"]["candidates"] == [
        space.SPACE_3D[0].name
    ]  # the budget leaves one: the first 3D candidate


def _image_patients(data: Path) -> dict[bytes, str]:
    """Each pooled image's pixels -> its patient, read straight from the Parquet files."""
    patients = {}
    for split in ("train", "validation"):
        for path in sorted((data / "cxr").glob(f"{split}-*.parquet")):
            table = pq.read_table(path, columns=["image", "patient_id"]).to_pylist()
            for row in table:
                pixels = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))
                patients[pixels.tobytes()] = row["patient_id"]
    return patients


def test_grouped_folds_never_put_a_patient_in_two_folds(tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "hfmed-cache"))
    data = medimeta_build(tmp_path, {"train": 30, "val": 10, "test": 4})
    info = loaders.task_info(str(data), "cxr", "disease_labels")
    patient_of = _image_patients(data)
    folds = 3
    held = [Fold.read(str(data), "cxr", info, folds, f, groups="patient_id") for f in range(folds)]
    patients = []
    for fold in held:
        rows = fold.pixels[fold.held_out].numpy()  # (n, 1, H, W)
        patients.append({patient_of[r[0].tobytes()] for r in rows})
    assert sum(len(p) for p in patients) == len(set().union(*patients)) == len(set(patient_of.values()))
    assert sum(int(f.held_out.sum()) for f in held) == len(patient_of) == 40
    # The plain stratified folds do split patients here: the grouping is what keeps them together.
    plain = cv_assignment(held[0].labels.numpy(), folds)
    by_patient: dict[str, set[int]] = {}
    for row, fold in zip(held[0].pixels.numpy(), plain):
        by_patient.setdefault(patient_of[row[0].tobytes()], set()).add(int(fold))
    assert any(len(f) > 1 for f in by_patient.values())
    with pytest.raises(Exception, match="no 'subject' column"):
        Fold.read(str(data), "cxr", info, folds, 0, groups="subject")
