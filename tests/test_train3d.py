"""train_hf.py on MedMNIST3D: every 3D subset trains through the same loaders, Trainer and report.

Runs use the ``small`` 3D networks for a step or two on small generated volumes (the real
AdrenalMNIST3D once), with one torch thread, as tests/test_models3d.py does: two OpenMP threads on
a shared CPU wait for each other. Figures are only checked for range and consistency.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import torchrun_train
from hfmed.loading_scripts.medmnist import MedMNIST

from hfmed import facts, loaders, metrics, models3d, training
from hfmed.writer import build_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import train_hf  # noqa: E402

N = {"train": 8, "val": 5, "test": 6}
QUICK = [
    "--arch_size",
    "small",
    "--num_train_epochs",
    "1",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "8",
    "--disable_tqdm",
    "true",
    "--seed",
    "0",
]
SUBSETS_3D = sorted(name for name, entry in facts.load("medmnist")["subsets"].items() if entry["volumetric"])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "hfmed-cache"))
    monkeypatch.chdir(tmp_path)


def build_small(small_npz, tmp_path: Path, flag: str, size: int = 28, n=N) -> Path:
    out = tmp_path / "medmnist"
    build_config(
        MedMNIST(flag if size == 28 else f"{flag}_{size}", small_npz(flag, size, n=n), unofficial=True),
        out,
        progress=False,
    )
    return out


def train(argv: list[str]) -> dict:
    assert train_hf.main(argv) == 0
    return json.loads((Path(argv[argv.index("--output_dir") + 1]) / "results.json").read_text())


def test_there_are_six_3d_subsets():
    assert SUBSETS_3D == [
        "adrenalmnist3d",
        "fracturemnist3d",
        "nodulemnist3d",
        "organmnist3d",
        "synapsemnist3d",
        "vesselmnist3d",
    ]


# Each family once; flip_crop on volumes; a 28^3 build fed at 32^3 through the loaders' image_size.
EXTRA = {
    "organmnist3d": ["--arch", "acs"],
    "fracturemnist3d": ["--arch", "resnet2_5d", "--augment", "flip_crop"],
    "synapsemnist3d": ["--image_size", "32"],
}


@pytest.mark.parametrize("flag", SUBSETS_3D)
def test_every_3d_subset_trains_on_volumes_and_reports_like_2d(small_npz, tmp_path, flag):
    entry = facts.load("medmnist")["subsets"][flag]
    data = build_small(small_npz, tmp_path, flag)
    batch = next(iter(loaders.dataloader(data, flag, split="train", batch_size=4, progress=False)))
    assert tuple(batch["pixel_values"].shape) == (4, 1, 28, 28, 28)

    out = tmp_path / "run"
    results = train(["--dataset", str(data), "--subset", flag, "--output_dir", str(out), *QUICK, *EXTRA.get(flag, [])])
    arch = EXTRA.get(flag, ["--arch", "resnet3d"])
    arch = arch[1] if arch[0] == "--arch" else "resnet3d"  # resnet3d: the default on a 3D subset
    side = 32 if flag == "synapsemnist3d" else 28
    assert results["task_type"] == entry["task"] and results["num_labels"] == len(entry["labels"])
    assert results["model"] == f"scratch:{arch}-small" and results["image_size"] == side
    assert results["channels_last"] is False
    assert results["num_samples"] == {"train": 8, "validation": 5, "test": 6}
    for name in (
        "results.json",
        "results.md",
        "roc_curve.png",
        "confusion_matrix.png",
        "predictions.npz",
        "README.md",
        "model.safetensors",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == models3d.FAMILIES[arch][0].model_type and config["image_size"] == side
    with np.load(out / "predictions.npz") as saved:
        assert saved["test_scores"].shape == (6, len(entry["labels"]))
        assert metrics.compute(entry["task"], saved["test_labels"], saved["test_scores"])["acc"] == pytest.approx(
            results["test"]["acc"]
        )
    md = (out / "results.md").read_text()
    published = facts.baselines()["medmnist_v2_3d"]["rows"][0]["results"][flag]
    assert (
        f"| ResNet-18 + 2.5D [1] | {published['auc']:.3f}" in md and "Google AutoML" not in md
    )  # the 3D rows, no 2D table's
    assert f"{side}³ input" in md and " px input" not in md  # a volume's side, not an image's


def test_a_64_build_resized_to_28_through_the_loaders(small_npz, tmp_path):
    data = build_small(small_npz, tmp_path, "nodulemnist3d", size=64, n={"train": 4, "val": 3, "test": 3})
    out = tmp_path / "run"
    results = train(
        [
            "--dataset",
            str(data),
            "--subset",
            "nodulemnist3d",
            "--size",
            "64",
            "--image_size",
            "28",
            "--output_dir",
            str(out),
            *QUICK,
        ]
    )
    assert results["config"] == "nodulemnist3d_64" and results["image_size"] == 28
    assert (
        "| ResNet-18 + 3D [1] | 0.863" in (out / "results.md").read_text()
    )  # published at 28^3, the size-less subset's rows


def test_the_medmnist_preset_on_a_3d_subset_is_the_published_3d_protocol():
    _, model, recipe, args = training.parse_args(["--subset", "adrenalmnist3d"])
    assert (model.arch, model.arch_size) == ("resnet3d", "small")
    assert args.per_device_train_batch_size == 32 and args.num_train_epochs == 100 and args.learning_rate == 1e-3
    assert args.weight_decay == 0.0 and args.lr_scheduler_type == "constant" and args.metric_for_best_model == "auc"
    assert recipe.lr_decay_epochs == [50, 75] and recipe.lr_decay_gamma == 0.1
    assert str(args.output_dir).endswith("adrenalmnist3d-resnet3d-small")
    # The 3D script decays at half and three quarters of its epochs, however many it is given.
    _, _, recipe, _ = training.parse_args(["--subset", "adrenalmnist3d", "--num_train_epochs", "20", "--arch", "acs"])
    assert recipe.lr_decay_epochs == [10, 15]
    _, _, recipe, args = training.parse_args(["--subset", "breastmnist"])  # 2D untouched
    assert args.per_device_train_batch_size == 128 and recipe.lr_decay_epochs == [50, 75]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--subset", "adrenalmnist3d", "--arch", "vit"],
            "adrenalmnist3d is a 3D subset (volumes) and --arch vit is a 2D architecture; "
            "use --arch resnet3d or acs or resnet2_5d",
        ),
        (
            ["--subset", "breastmnist", "--arch", "acs"],
            "breastmnist holds 2D images and --arch acs is a 3D architecture; "
            "use --arch resnet or regnet or convnext or vit",
        ),
        (
            ["--subset", "adrenalmnist3d", "--arch_size", "nano"],
            "--arch resnet3d comes in sizes small, base, large, not nano",
        ),
        (
            ["--subset", "breastmnist", "--arch_size", "large"],
            "--arch resnet comes in sizes nano, small, base, not large",
        ),
        (
            ["--subset", "adrenalmnist3d", "--preset", "finetune"],
            "3D subsets train from scratch: use --preset medmnist",
        ),
        (["--subset", "adrenalmnist3d", "--channels_last", "true"], "--channels_last is a 2D memory format"),
        (
            ["--subset", "adrenalmnist3d", "--model", "{tmp}/vit"],
            "vit is a 2D image classifier (vit); pass a 3D run's folder",
        ),
    ],
)
def test_a_3d_2d_mismatch_is_one_line_and_exit_2_before_anything_is_built(capsys, monkeypatch, tmp_path, argv, message):
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(
        '{"model_type": "vit"}'
    )  # a 2D checkpoint folder, as far as its type goes

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built for a command that cannot work")

    monkeypatch.setattr(training.models, "build_model", no_model)
    assert train_hf.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_real_adrenalmnist3d_trains_reevaluates_to_the_same_figures_and_reloads(built_medmnist, tmp_path, capsys):
    from transformers import AutoModelForImageClassification

    run, again = tmp_path / "run", tmp_path / "again"
    common = [
        "--dataset",
        str(built_medmnist),
        "--subset",
        "adrenalmnist3d",
        "--disable_tqdm",
        "true",
        "--per_device_eval_batch_size",
        "64",
    ]
    first = train(
        [
            *common,
            "--output_dir",
            str(run),
            "--arch_size",
            "small",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--augment",
            "flip_crop",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ]
    )
    assert first["num_samples"] == {"train": 1188, "validation": 98, "test": 298}
    assert first["task_type"] == "binary" and first["arguments"]["RecipeArguments"]["lr_decay_epochs"] == [50, 75]
    second = train([*common, "--model", str(run), "--do_train", "false", "--output_dir", str(again)])
    assert second["model"] == str(run) and second["image_size"] == 28
    for split in ("validation", "test"):
        for metric in ("auc", "acc"):
            assert second[split][metric] == pytest.approx(first[split][metric], abs=1e-9), (split, metric)
    # A 2D checkpoint on volumes, or this 3D one on images, is refused in one line.
    assert (
        train_hf.main(
            [
                "--dataset",
                str(built_medmnist),
                "--subset",
                "breastmnist",
                "--model",
                str(run),
                "--output_dir",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "is a 3D network (hfmed_resnet3d)" in capsys.readouterr().err and not (tmp_path / "x").exists()

    model = AutoModelForImageClassification.from_pretrained(run)
    assert type(model).__name__ == "ResNet3dForImageClassification" and model.config.image_size == 28
    assert model.config.id2label == {0: "normal", 1: "hyperplasia"}
    batch = next(
        iter(
            loaders.dataloader(
                built_medmnist, "adrenalmnist3d", split="test", batch_size=5, mean=(0.5,), std=(0.5,), progress=False
            )
        )
    )
    with torch.no_grad():
        logits = model.eval()(pixel_values=batch["pixel_values"]).logits
    with np.load(again / "predictions.npz") as saved:
        assert np.allclose(torch.softmax(logits, -1).numpy(), saved["test_scores"][:5], atol=1e-5)


def test_a_3d_ensemble_and_a_3d_cross_validation_fold(small_npz, tmp_path, capsys):
    from hfmed import cli

    data = build_small(small_npz, tmp_path, "adrenalmnist3d")
    runs = []
    for seed in ("0", "1"):
        runs.append(tmp_path / f"run{seed}")
        train(["--dataset", str(data), "--subset", "adrenalmnist3d", "--output_dir", str(runs[-1]), *QUICK[:-1], seed])
    assert cli.main(["ensemble", *map(str, runs), "--out", str(tmp_path / "ens")]) == 0
    ensemble = json.loads((tmp_path / "ens" / "results.json").read_text())
    with (
        np.load(tmp_path / "ens" / "predictions.npz") as e,
        np.load(runs[0] / "predictions.npz") as a,
        np.load(runs[1] / "predictions.npz") as b,
    ):
        assert np.allclose(e["test_scores"], (a["test_scores"] + b["test_scores"]) / 2)
    ens_md = (tmp_path / "ens" / "results.md").read_text()
    assert ensemble["model"] == "ensemble of 2 runs" and "ResNet-18 + ACS" in ens_md and "28³ input" in ens_md

    fold = tmp_path / "fold"
    results = train(
        [
            "--dataset",
            str(data),
            "--subset",
            "adrenalmnist3d",
            "--cv_folds",
            "2",
            "--cv_fold",
            "1",
            "--output_dir",
            str(fold),
            "--arch",
            "acs",
            "--augment",
            "flip_crop",
            *QUICK,
        ]
    )
    assert results["cross_validation"]["folds"] == 2 and results["test"] is None
    assert results["num_samples"]["train"] + results["num_samples"]["validation"] == 8 + 5
    with np.load(fold / "predictions.npz") as saved:
        assert saved.files == ["validation_labels", "validation_scores"]
    assert "28³ input" in (fold / "results.md").read_text()


@pytest.mark.parametrize(
    ("collection", "config", "side", "said"),
    [
        ("medmnist", "adrenalmnist3d", 28, "28³ input"),
        ("medmnist", "vesselmnist3d_64", 64, "64³ input"),  # the 64^3 build: a size suffix on the config
        ("medmnist", "breastmnist_64", 64, "64 px input"),
        ("medimeta", "bus", 224, "224 px input"),
    ],
)
def test_results_md_names_a_volume_by_its_cube_and_an_image_by_its_side(collection, config, side, said):
    results = {
        "collection": collection,
        "config": config,
        "subset": config,
        "model": "scratch:resnet3d-small",
        "task_type": "binary",
        "num_labels": 2,
        "image_size": side,
        "selection_metric": "auc",
        "test": {"auc": 0.8, "acc": 0.7},
        "validation": {"auc": 0.9, "acc": 0.8},
        "wall_time_seconds": 1.0,
        "device": "CPU",
        "num_processes": 1,
        "train_images_per_second": 10.0,
        "eval_images_per_second": 30.0,
        "command": "python train_hf.py",
    }
    assert f"binary (2 classes), {said}, " in training.results_markdown(results, [])
    fold = {
        **results,
        "test": None,
        "cross_validation": {"folds": 5, "fold": 0, "seed": 0},
        "num_samples": {"train": 8, "validation": 2},
    }
    assert f"binary (2 classes), {said}. " in training.results_markdown(fold, [])


def test_two_gloo_processes_train_a_3d_model_and_report_the_saved_one(small_npz, tmp_path):
    data = build_small(small_npz, tmp_path, "nodulemnist3d")
    env = {
        **os.environ,
        "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets-cache"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    ddp = tmp_path / "ddp"
    common = [
        "--dataset",
        str(data),
        "--subset",
        "nodulemnist3d",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        "--per_device_eval_batch_size",
        "4",
    ]
    done = torchrun_train(
        [
            *common,
            "--ddp_backend",
            "gloo",
            "--arch_size",
            "small",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--output_dir",
            str(ddp),
        ],
        env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    distributed = json.loads((ddp / "results.json").read_text())
    assert distributed["num_processes"] == 2 and distributed["train_batches_per_rank"] == [
        2,
        2,
    ]  # 8 rows: 4 per rank, batches of 2
    train([*common, "--model", str(ddp), "--do_train", "false", "--output_dir", str(tmp_path / "single")])
    with np.load(ddp / "predictions.npz") as a, np.load(tmp_path / "single" / "predictions.npz") as b:
        for split in ("validation", "test"):
            assert np.array_equal(a[f"{split}_labels"], b[f"{split}_labels"])
            assert np.allclose(a[f"{split}_scores"], b[f"{split}_scores"], atol=1e-6)
