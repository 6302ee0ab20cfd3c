"""train_hf.py: every task type trains, evaluates and reports; presets, models and errors behave.

Runs use tiny from-scratch models (``--arch_size nano``) on small generated subsets, so each takes
a few seconds on a CPU. Figures are only checked for range and consistency, never for quality.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import torchrun_train
from hfmed.loading_scripts.medmnist import MedMNIST
from PIL import Image

from hfmed import metrics, training
from hfmed.errors import UserError
from hfmed.training import mixup
from hfmed.writer import build_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import train_hf  # noqa: E402

SIZES = {"train": 24, "val": 11, "test": 13}  # odd evaluation sizes: no split divides into even batches
QUICK = [
    "--arch",
    "vit",
    "--arch_size",
    "nano",
    "--num_train_epochs",
    "2",
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "4",
    "--disable_tqdm",
    "true",
    "--seed",
    "0",
]
OUTPUTS = (
    "results.json",
    "results.md",
    "roc_curve.png",
    "confusion_matrix.png",
    "README.md",
    "config.json",
    "model.safetensors",
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Runs write into tmp only: their own datasets cache, relative paths under tmp."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "hfmed-cache"))
    monkeypatch.chdir(tmp_path)


def build_small(small_npz, tmp_path: Path, flag: str, n=SIZES) -> Path:
    out = tmp_path / "medmnist"
    build_config(MedMNIST(flag, small_npz(flag, n=n), unofficial=True), out, progress=False)
    return out


def train(argv: list[str]) -> dict:
    """Run the script in this process; the returned dict is what it wrote to results.json."""
    assert train_hf.main(argv) == 0
    out = Path(argv[argv.index("--output_dir") + 1])
    return json.loads((out / "results.json").read_text())


def task_info(task: str, names: tuple[str, ...], channels: int, side: int) -> training.TaskInfo:
    return training.TaskInfo("x", "image", "label", task, names, channels, (side, side), False)


def in_unit_range(value) -> bool:
    return value is not None and 0.0 <= value <= 1.0


@pytest.mark.parametrize(
    "flag, task, extra",
    [
        ("pneumoniamnist", "binary", ["--augment", "flip_crop"]),
        (
            "dermamnist",
            "multi-class",
            ["--dataloader_num_workers", "2", "--dataloader_persistent_workers", "true", "--streaming", "true"],
        ),  # workers split the rows
        ("retinamnist", "ordinal", []),
        ("retinamnist", "ordinal", ["--ordinal_loss", "emd", "--mixup_alpha", "0.4"]),
        ("chestmnist", "multi-label", ["--arch", "convnext", "--augment", "affine", "--mixup_alpha", "0.4"]),
        ("breastmnist", "binary", ["--arch", "resnet", "--ema_decay", "0.9", "--tta", "flip"]),
        ("breastmnist", "binary", ["--arch", "regnet", "--augment", "flip_crop", "--mixup_alpha", "0.2"]),
        ("breastmnist", "binary", ["--arch", "resnet", "--mixup_alpha", "0.4", "--label_smoothing_factor", "0.1"]),
    ],
)
def test_each_task_type_trains_evaluates_and_writes_every_output(small_npz, tmp_path, flag, task, extra):
    data = build_small(small_npz, tmp_path, flag)
    out = tmp_path / "run"
    results = train(["--dataset", str(data), "--subset", flag, "--output_dir", str(out), *QUICK, *extra])

    for name in OUTPUTS:
        assert (out / name).is_file(), name
    for figure in ("roc_curve.png", "confusion_matrix.png"):
        with Image.open(out / figure) as image:
            assert image.format == "PNG" and min(image.size) > 100
    assert results["task_type"] == task
    assert results["num_samples"] == {"train": 24, "validation": 11, "test": 13}  # every row once, none padded in
    for split in ("validation", "test"):
        assert in_unit_range(results[split]["acc"])
        assert results[split]["auc"] is None or in_unit_range(results[split]["auc"])  # None: no class had both outcomes
    assert results["train_images_per_second"] > 0 and results["eval_images_per_second"] > 0
    assert results["wall_time_seconds"] > 0 and results["device"]
    assert results["arguments"]["TrainingArguments"]["num_train_epochs"] == 2
    # The reported validation figures are those of the checkpoint chosen on validation AUC.
    assert results["validation"]["auc"] == pytest.approx(results["best_validation_auc"])
    card = (out / "README.md").read_text()
    assert "trained from scratch" in card and "| **this run**" in card
    # predictions.npz holds the probabilities the reported figures were computed from.
    with np.load(out / "predictions.npz") as saved:
        for split, rows in (("validation", 11), ("test", 13)):
            assert saved[f"{split}_scores"].shape[0] == rows
            recomputed = metrics.compute(task, saved[f"{split}_labels"], saved[f"{split}_scores"])
            assert recomputed["acc"] == pytest.approx(results[split]["acc"])
            assert (recomputed["auc"] if not math.isnan(recomputed["auc"]) else None) == pytest.approx(
                results[split]["auc"]
            )
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == (
        "multi_label_classification" if task == "multi-label" else "single_label_classification"
    )
    assert list(config["id2label"].values()) == results["label_names"]


def test_multi_label_targets_are_float_multi_hot_rows(small_npz, tmp_path):
    data = build_small(small_npz, tmp_path, "chestmnist")
    loaded = training.open_data(
        training.DataArguments(dataset=str(data), subset="chestmnist"), training.parse_args([])[3]
    )
    feed = training.Feed(image_size=28, channels=1, mean=(0.5,), std=(0.5,))
    first = next(iter(loaded.loader("train", feed, training.parse_args(["--per_device_train_batch_size", "8"])[3])))
    assert loaded.info.num_labels == 14 and loaded.info.label_names[0] == "atelectasis"
    assert (
        first["labels"].dtype == torch.float32
        and first["labels"].shape == (8, 14)
        and set(first["labels"].flatten().tolist()) <= {0.0, 1.0}
    )
    assert first["pixel_values"].dtype == torch.float32 and first["pixel_values"].shape == (8, 1, 28, 28)


def test_training_workers_live_for_the_whole_run_unless_asked_otherwise(small_npz, tmp_path):
    """Workers asked for on the CPU are kept across epochs (re-forking the Trainer's process each
    epoch was the input pipeline's largest cost); evaluation loaders never keep theirs."""
    data = build_small(small_npz, tmp_path, "pneumoniamnist")
    loaded = training.open_data(
        training.DataArguments(dataset=str(data), subset="pneumoniamnist"), training.parse_args([])[3]
    )
    feed = training.Feed(image_size=28, channels=1, mean=(0.5,), std=(0.5,))
    args = training.parse_args(
        ["--dataloader_num_workers", "2", "--per_device_train_batch_size", "4", "--use_cpu", "true"]
    )[3]
    assert args.dataloader_persistent_workers
    assert (
        loaded.loader("train", feed, args).persistent_workers
        and not loaded.loader("validation", feed, args).persistent_workers
    )
    args = training.parse_args(
        ["--dataloader_num_workers", "2", "--dataloader_persistent_workers", "false", "--use_cpu", "true"]
    )[3]
    assert not loaded.loader("train", feed, args).persistent_workers


def test_the_trainer_receives_whole_batches_resized_repeated_to_rgb_and_normalised(small_npz, tmp_path):
    """The loaders give the model its input directly: 28 px grayscale fed to a 56 px RGB model."""
    data = build_small(small_npz, tmp_path, "pneumoniamnist")
    loaded = training.open_data(
        training.DataArguments(dataset=str(data), subset="pneumoniamnist"), training.parse_args([])[3]
    )
    args = training.parse_args(["--per_device_eval_batch_size", "5"])[3]
    feed = training.Feed(image_size=56, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    batches = list(loaded.loader("test", feed, args))
    assert [len(b["labels"]) for b in batches] == [5, 5, 3]  # 13 test rows: every row once, no padding
    pixels = torch.cat([b["pixel_values"] for b in batches])
    assert pixels.shape == (13, 3, 56, 56) and pixels.dtype == torch.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert torch.equal(pixels[:, 0], pixels[:, 1]) and torch.equal(pixels[:, 1], pixels[:, 2])  # grayscale repeated
    with np.load(small_npz("pneumoniamnist", n=SIZES)) as npz:
        first = torch.from_numpy(npz["test_images"][:1]).unsqueeze(1).float()
    expected = F.interpolate(first, size=(56, 56), mode="bilinear", align_corners=False).round() / 255 * 2 - 1
    assert torch.allclose(pixels[:1, :1], expected, atol=1 / 127.5 + 1e-6)  # bilinear on uint8, rounded once
    assert batches[0]["labels"].dtype == torch.int64


def test_results_md_sets_the_run_beside_the_published_rows():
    rows = training.published_rows("medmnist", "pneumoniamnist")
    results = {
        "subset": "pneumoniamnist",
        "model": "scratch:vit-nano",
        "task_type": "binary",
        "num_labels": 2,
        "image_size": 28,
        "selection_metric": "auc",
        "test": {"auc": 0.9512, "acc": 0.875},
        "validation": {"auc": 0.97, "acc": None},
        "wall_time_seconds": 12.0,
        "device": "CPU",
        "num_processes": 1,
        "train_images_per_second": 100.0,
        "eval_images_per_second": 500.0,
        "command": "python train_hf.py --subset pneumoniamnist",
    }
    md = training.results_markdown(results, rows)
    assert "| **this run** (scratch:vit-nano) | **0.951** | **0.875** | 0.970 | – |" in md
    assert "| ResNet-18 (28) [1] | 0.944 | 0.854 |" in md  # MedMNIST v2 table, PneumoniaMNIST column
    assert "| Google AutoML Vision [1] | 0.991 | 0.946 |" in md
    assert "| ViT-B/16 @224 [2] | 0.963 | 0.861 |" in md  # MedMNIST+, published as 86.11/96.33 (ACC/AUC %)
    assert "Yang et al." in md and "Doerrich et al." in md and "python train_hf.py --subset pneumoniamnist" in md
    assert training.published_rows("medmnist", "adrenalmnist3d")[0]["method"] == "ResNet-18 + 2.5D"
    assert [(r["method"], r["auc"]) for r in training.published_rows("medimeta", "bus")] == [
        ("ResNet-18", 0.96),
        ("ResNet-50", 0.966),
    ]


def test_real_breastmnist_through_the_medmnist_preset_built_from_source(real_breastmnist, tmp_path):
    """--source builds the missing subset first; the preset's protocol lands in results.json."""
    out = tmp_path / "run"
    results = train(
        [
            "--dataset",
            str(tmp_path / "medmnist"),
            "--subset",
            "breastmnist",
            "--source",
            str(real_breastmnist),
            "--preset",
            "medmnist",
            "--arch",
            "convnext",
            "--arch_size",
            "nano",
            "--num_train_epochs",
            "1",
            "--max_steps",
            "2",
            "--output_dir",
            str(out),
            "--disable_tqdm",
            "true",
        ]
    )
    assert (tmp_path / "medmnist" / "breastmnist").is_dir()
    args = results["arguments"]
    assert args["TrainingArguments"]["learning_rate"] == 1e-3
    assert args["TrainingArguments"]["per_device_train_batch_size"] == 128
    assert args["TrainingArguments"]["lr_scheduler_type"] == "constant"
    assert args["TrainingArguments"]["metric_for_best_model"] == "auc"
    assert args["RecipeArguments"]["lr_decay_epochs"] == [50, 75]
    assert results["num_samples"] == {"train": 546, "validation": 78, "test": 156}
    assert results["channels_last"] is True and results["image_size"] == 28
    assert in_unit_range(results["test"]["auc"]) and in_unit_range(results["test"]["acc"])
    assert "Google AutoML Vision [1] | 0.919 | 0.861" in (out / "results.md").read_text()


def test_step_decay_multiplies_the_learning_rate_at_the_given_epochs(small_npz, tmp_path):
    data = build_small(small_npz, tmp_path, "pneumoniamnist")
    out = tmp_path / "run"
    # 24 rows / batch 8 = 3 steps per epoch; x0.1 from epoch 1 (step 3) and again from epoch 2 (step 6).
    train(
        [
            "--dataset",
            str(data),
            "--subset",
            "pneumoniamnist",
            "--output_dir",
            str(out),
            *QUICK,
            "--num_train_epochs",
            "3",
            "--learning_rate",
            "0.01",
            "--lr_decay_epochs",
            "1",
            "2",
            "--logging_strategy",
            "steps",
            "--logging_steps",
            "1",
        ]
    )
    state = json.loads((out / "trainer_state.json").read_text())
    lrs = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert lrs == pytest.approx([1e-2] * 3 + [1e-3] * 3 + [1e-4] * 3, rel=1e-6)  # the rate each step trained with


def test_presets_fill_in_what_the_flags_do_not_say():
    data, model, recipe, args = training.parse_args(["--subset", "breastmnist"])
    assert recipe.preset == "medmnist" and model.model is None and model.arch == "resnet"
    assert (args.num_train_epochs, args.learning_rate, args.per_device_train_batch_size) == (100, 1e-3, 128)
    assert args.weight_decay == 0.0 and recipe.lr_decay_epochs == [50, 75] and recipe.lr_decay_gamma == 0.1
    assert args.load_best_model_at_end and args.metric_for_best_model == "auc" and args.greater_is_better
    assert args.output_dir == str(Path("runs") / "breastmnist-resnet-small")

    _, _, recipe, args = training.parse_args(
        ["--subset", "breastmnist", "--learning_rate", "0.01", "--num_train_epochs", "5"]
    )
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == (0.01, 5, 128)

    _, model, recipe, args = training.parse_args(["--preset", "finetune", "--subset", "retinamnist"])
    assert model.model == "facebook/convnext-tiny-224" and recipe.augment == "affine" and recipe.normalize == "model"
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 0.05 and recipe.lr_decay_epochs == []

    _, model, _, _ = training.parse_args(["--preset", "finetune", "--arch", "vit"])
    assert model.model is None  # --arch asks for from-scratch training

    _, _, recipe, args = training.parse_args(["--lr_scheduler_type", "cosine"])
    assert (
        recipe.lr_decay_epochs == [] and args.lr_scheduler_type.value == "cosine"
    )  # a chosen scheduler replaces the step decay


def test_gpu_runs_default_to_mixed_precision_tf32_and_loader_workers(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))  # H100
    hopper = training.hardware_defaults(use_cpu=False)
    assert hopper["bf16"] and hopper["tf32"] and "fp16" not in hopper and hopper["dataloader_num_workers"] >= 1
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 0))  # V100: no bf16, no TF32
    volta = training.hardware_defaults(use_cpu=False)
    assert volta["fp16"] and "bf16" not in volta and "tf32" not in volta
    assert training.hardware_defaults(use_cpu=True) == {"dataloader_num_workers": 0, "dataloader_pin_memory": False}


@pytest.mark.parametrize(
    "arch, side, patch",
    [
        ("vit", 28, 4),
        ("vit", 64, 8),
        ("vit", 128, 16),
        ("vit", 224, 16),
        ("convnext", 28, 1),
        ("convnext", 64, 2),
        ("convnext", 224, 4),
    ],
)
def test_scratch_models_are_sized_to_the_image(arch, side, patch):
    info = task_info("multi-class", ("a", "b", "c"), channels=1, side=side)
    config = training.scratch_config(arch, "nano", side, 1, info)
    assert config.patch_size == patch and config.num_channels == 1 and config.id2label == {0: "a", 1: "b", 2: "c"}
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_config(config).eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.zeros(2, 1, side, side)).logits
    assert logits.shape == (2, 3)


@pytest.mark.parametrize(
    "arch, side, fed, first_stage",
    [
        ("resnet", 28, 112, 28),
        ("resnet", 64, 128, 32),
        ("resnet", 128, 128, 32),
        ("resnet", 224, 224, 56),
        ("regnet", 28, 56, 28),
        ("regnet", 64, 64, 32),
        ("regnet", 128, 128, 32),
        ("regnet", 224, 224, 56),
    ],
)
def test_small_images_are_enlarged_so_the_first_stage_sees_the_published_grid(arch, side, fed, first_stage):
    """The 28 px ResNets of the MedMNIST experiments run their first stage at 28x28 (3x3 stride-1
    stem); transformers' ResNet stem divides by 4 and its RegNet's by 2, so small images are fed
    enlarged, and both families' stages see the same grids at every size."""
    info = task_info("binary", ("benign", "malignant"), channels=1, side=side)
    bundle = training.build_model(
        training.ModelArguments(arch=arch, arch_size="nano"),
        training.RecipeArguments(),
        info,
        training.DataArguments(),
    )
    assert bundle.image_size == fed and bundle.model.config.model_type == arch
    assert bundle.model.config.id2label == {0: "benign", 1: "malignant"}
    with torch.no_grad():
        stages = bundle.model(pixel_values=torch.zeros(1, 1, fed, fed), output_hidden_states=True).hidden_states
    # hidden_states: the stem's output, then each stage's; the last stage is 1/8 of the first
    assert stages[1].shape[-1] == first_stage and stages[-1].shape[-1] == -(-first_stage // 8)
    explicit = training.build_model(
        training.ModelArguments(arch=arch, arch_size="nano"),
        training.RecipeArguments(),
        info,
        training.DataArguments(image_size=side),
    )
    assert explicit.image_size == side  # --image_size is taken as given


def test_weight_average_follows_the_weights_and_gives_the_model_back():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    start = model[0].weight.detach().clone()
    average = training.WeightAverage(model, decay=0.75)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].running_mean.fill_(3.0)
    average.update(model)
    expected = 0.75 * start + 0.25
    assert torch.allclose(average.shadow["0.weight"], expected)
    assert average.shadow["1.running_mean"].item() == 3.0  # statistics are copied, not averaged
    with average.applied(model):
        assert torch.allclose(model[0].weight, expected)
    assert torch.equal(model[0].weight.detach(), torch.ones(1, 2))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(UserError, match="--ema_decay"):
            training.WeightAverage(model, bad)


def test_flip_tta_averages_the_logits_of_an_image_and_its_mirror(tmp_path):
    from transformers import TrainingArguments
    from transformers.modeling_outputs import ImageClassifierOutput

    class LeftRight(torch.nn.Module):
        """Logits: the sums of the left and the right half of the image."""

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, pixel_values, labels=None):
            half = pixel_values.shape[-1] // 2
            logits = self.scale * torch.stack(
                [pixel_values[..., :half].sum((1, 2, 3)), pixel_values[..., half:].sum((1, 2, 3))], 1
            )
            return ImageClassifierOutput(
                loss=F.cross_entropy(logits, labels) if labels is not None else None, logits=logits
            )

    x = torch.zeros(1, 1, 4, 4)
    x[..., :2] = 1.0
    inputs = {"pixel_values": x, "labels": torch.tensor([0])}
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    for tta, expected in (("none", [[8.0, 0.0]]), ("flip", [[4.0, 4.0]])):
        trainer = training.MedTrainer(model=LeftRight(), args=args, tta=tta)
        _, logits, _ = trainer.prediction_step(trainer.model, inputs, prediction_loss_only=False)
        assert torch.allclose(logits, torch.tensor(expected))


def test_mixup_mixes_a_batch_with_a_shuffle_of_itself():
    x = torch.arange(6.0).reshape(6, 1, 1, 1)
    torch.manual_seed(3)
    mixed, partner, weight = mixup.mix(x, alpha=0.4)
    assert 0.0 < weight < 1.0 and sorted(partner.tolist()) == list(range(6))
    assert torch.allclose(mixed, weight * x + (1 - weight) * x[partner])
    torch.manual_seed(3)
    assert torch.equal(mixup.mix(x, alpha=0.4)[0], mixed)  # --seed fixes the draws
    for bad in (0.0, -0.2, float("inf"), float("nan")):
        with pytest.raises(UserError, match="--mixup_alpha"):
            mixup.mix(x, alpha=bad)


@pytest.mark.parametrize(
    "problem, smoothing",
    [("single_label_classification", 0.0), ("single_label_classification", 0.1), ("multi_label_classification", 0.0)],
)
def test_mixup_trains_against_the_targets_mixed_as_the_images_were(tmp_path, problem, smoothing):
    from types import SimpleNamespace

    from transformers import TrainingArguments
    from transformers.modeling_outputs import ImageClassifierOutput

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(problem_type=problem)
            self.head = torch.nn.Linear(4, 3)

        def forward(self, pixel_values, labels=None):
            logits = self.head(pixel_values.flatten(1))
            loss = None
            if labels is not None:
                loss = (
                    F.binary_cross_entropy_with_logits(logits, labels)
                    if problem == "multi_label_classification"
                    else F.cross_entropy(logits, labels)
                )
            return ImageClassifierOutput(loss=loss, logits=logits)

    torch.manual_seed(0)
    x = torch.randn(8, 1, 2, 2)
    if problem == "multi_label_classification":
        labels = torch.randint(0, 2, (8, 3)).float()
        targets = labels
    else:
        labels = torch.randint(0, 3, (8,))
        targets = F.one_hot(labels, 3).float() * (1 - smoothing) + smoothing / 3
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none", label_smoothing_factor=smoothing)
    trainer = training.MedTrainer(model=Linear(), args=args, mixup_alpha=0.4)
    model = trainer.model.train()

    torch.manual_seed(7)
    loss = trainer.compute_loss(model, {"pixel_values": x, "labels": labels})
    torch.manual_seed(7)
    mixed, partner, weight = mixup.mix(x, 0.4)
    logits = model(mixed).logits
    soft = weight * targets + (1 - weight) * targets[partner]
    if problem == "multi_label_classification":
        expected = F.binary_cross_entropy_with_logits(logits, soft)
    else:
        expected = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    model.eval()  # evaluation sees the images as they are
    plain = trainer.compute_loss(model, {"pixel_values": x, "labels": labels})
    logits = model(x).logits
    if problem == "multi_label_classification":
        unmixed = F.binary_cross_entropy_with_logits(logits, targets)
    else:
        unmixed = -(targets * logits.log_softmax(-1)).sum(-1).mean()
    assert plain.item() == pytest.approx(unmixed.item(), rel=1e-5)


def test_config_overrides_reach_the_model_and_unknown_keys_are_refused():
    info = task_info("binary", ("benign", "malignant"), channels=1, side=28)
    args = training.ModelArguments(
        arch="convnext", arch_size="nano", config_overrides="drop_path_rate=0.1,layer_norm_eps=1e-6"
    )
    bundle = training.build_model(args, training.RecipeArguments(), info, training.DataArguments())
    assert bundle.model.config.drop_path_rate == 0.1 and bundle.model.config.layer_norm_eps == 1e-6
    assert (bundle.image_size, bundle.channels, bundle.mean, bundle.std) == (28, 1, (0.5,), (0.5,))
    with pytest.raises(UserError, match="--config_overrides"):
        training.build_model(
            training.ModelArguments(config_overrides="no_such_key=1"),
            training.RecipeArguments(),
            info,
            training.DataArguments(),
        )


def test_a_token_on_the_command_line_never_reaches_the_report():
    argv = ["--subset", "breastmnist", "--hub_token", "hf_secret", "--push_to_hub", "--hub-token=hf_other"]
    assert training.redacted_command(argv) == [
        "--subset",
        "breastmnist",
        "--hub_token",
        "<HUB_TOKEN>",
        "--push_to_hub",
        "--hub-token=<HUB_TOKEN>",
    ]


def test_augmentations_are_uint8_batch_transforms_and_the_identity_at_zero_strength():
    from hfmed.loaders.augment import Affine, FlipCrop

    x = torch.randint(1, 256, (4, 3, 28, 28), dtype=torch.uint8)
    still = Affine(degrees=0, translate=0, scale=(1.0, 1.0), flip=False)
    assert torch.equal(still(x), x)
    moved = Affine()(x, torch.Generator().manual_seed(0))
    assert moved.dtype == torch.uint8 and moved.shape == x.shape and not torch.equal(moved, x)
    assert torch.equal(FlipCrop(pad=0, flip_axes=())(x), x)

    shifted = FlipCrop()(x, torch.Generator().manual_seed(0))
    assert shifted.dtype == torch.uint8 and shifted.shape == x.shape and not torch.equal(shifted, x)
    # Whole-pixel shifts and flips only: every value of a shifted image is an original pixel or the zero fill.
    assert set(shifted[0].unique().tolist()) <= set(x[0].unique().tolist()) | {0}


def test_flip_crop_shifts_and_flips_volumes_along_the_axes_asked_for():
    from hfmed.loaders.augment import FlipCrop, by_name

    volume = torch.arange(4 * 4 * 4, dtype=torch.uint8).view(1, 1, 4, 4, 4).repeat(64, 1, 1, 1, 1)
    flipped = FlipCrop(pad=0, flip_axes=(-3,))(volume, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(v, volume[0].flip(-3)) for v in flipped]
    assert all(m or torch.equal(v, volume[0]) for m, v in zip(mirrored, flipped)) and 10 < sum(mirrored) < 54
    shifted = FlipCrop(pad=0.25, flip_axes=())(volume, torch.Generator().manual_seed(1))
    v, s = volume[0, 0].long(), shifted[:, 0].long()
    # One image shifted by (dz, dy, dx) holds the original's values at the shifted places, zeros elsewhere.
    assert any(
        torch.equal(s[i, 1:, :, :], v[:-1, :, :]) or torch.equal(s[i, :, 1:, :], v[:, :-1, :]) for i in range(64)
    )
    assert by_name("flip_crop", spatial_dims=3).flip_axes == (-1, -2, -3) and by_name("none") is None
    with pytest.raises(UserError, match="volumes take flip_crop"):
        by_name("affine", spatial_dims=3)


def test_ordinal_emd_loss_charges_distant_grades_more():
    logits_near = torch.tensor([[0.0, 4.0, 0.0, 0.0, 0.0]])  # predicts grade 1
    logits_far = torch.tensor([[0.0, 0.0, 0.0, 0.0, 4.0]])  # predicts grade 4
    target = torch.tensor([0])
    near = training.ordinal_emd_loss({"logits": logits_near}, target)
    far = training.ordinal_emd_loss({"logits": logits_far}, target)
    assert torch.nn.functional.cross_entropy(logits_near, target) == pytest.approx(
        torch.nn.functional.cross_entropy(logits_far, target).item()
    )
    assert far > near


def test_a_medimeta_task_is_chosen_by_name_with_its_declared_type(tmp_path):
    """--collection medimeta --subset dr_regular --task dr_level: the ordinal task of a MedIMeta build."""
    from conftest import MEDIMETA_INFO
    from hfmed.loading_scripts.medimeta import MedIMeta
    from medimeta_fixtures import make_medimeta_folder

    source = make_medimeta_folder(
        tmp_path / "src", MEDIMETA_INFO / "dr_regular.yaml", {"train": 10, "val": 5, "test": 5}, tiff=False
    )
    build_config(MedIMeta("dr_regular", source), tmp_path / "medimeta", progress=False)
    out = tmp_path / "run"
    results = train(
        [
            "--collection",
            "medimeta",
            "--dataset",
            str(tmp_path / "medimeta"),
            "--subset",
            "dr_regular",
            "--task",
            "dr_level",
            "--image_size",
            "56",
            "--output_dir",
            str(out),
            *QUICK,
            "--num_train_epochs",
            "1",
        ]
    )
    assert results["task"] == "dr_level" and results["task_type"] == "ordinal" and results["num_labels"] == 5
    assert results["image_size"] == 56 and results["num_samples"] == {"train": 10, "validation": 5, "test": 5}
    assert (
        "| ResNet-18 [1] | 0.849 | – |" in (out / "results.md").read_text()
    )  # MedIMeta's published AUROC for dr_regular


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--subset", "adrenalmnist3d", "--arch", "convnext"], "3D subset"),
        (["--subset", "breastmnist", "--arch", "resnet3d"], "is a 3D architecture"),
        (["--subset", "nosuchmnist"], "hfmed list medmnist"),
        (["--subset", "breastmnist", "--size", "100"], "--size"),
        (["--subset", "breastmnist"], "no --dataset given and no ./medmnist build here"),
        (["--subset", "breastmnist", "--dataset", "./not-here"], "no such folder"),
        (["--collection", "medimeta"], "--subset"),
        (["--subset", "breastmnist", "--cv_fold", "1"], "needs --cv_folds"),
        (["--subset", "breastmnist", "--cv_groups", "patient_id"], "give it with --cv_folds K --cv_fold i"),
        (["--subset", "breastmnist", "--cv_folds", "1", "--cv_fold", "0"], "at least 2"),
        (["--subset", "breastmnist", "--cv_folds", "5"], "0 to 4"),
        (["--subset", "breastmnist", "--cv_folds", "5", "--cv_fold", "5"], "0 to 4"),
        (
            ["--subset", "breastmnist", "--accelerator_config", '{"dispatch_batches": true}'],
            "dispatch_batches=true would hand out",
        ),
        (["--subset", "breastmnist", "--accelerator_config", '{"split_batches": true}'], "split_batches=true would"),
        (["--subset", "breastmnist", "--cv_folds", "5", "--cv_fold", "0", "--streaming", "true"], "drop --streaming"),
        (
            ["--subset", "breastmnist", "--cv_folds", "5", "--cv_fold", "0", "--dataset", "my-org/medmnist"],
            "needs a local build",
        ),
        (["--subset", "adrenalmnist3d", "--arch", "vit"], "--arch vit is a 2D architecture"),
        (["--subset", "breastmnist", "--ema_decay", "1.5"], "--ema_decay must be between 0 and 1"),
        (["--subset", "breastmnist", "--mixup_alpha", "0"], "--mixup_alpha must be a positive number"),
        (["--subset", "breastmnist", "--fsdp", "full_shard"], "train with plain DDP"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_model_is_built(capsys, monkeypatch, tmp_path, argv, message):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built for a command that cannot work")

    monkeypatch.setattr(training.models, "build_model", no_model)
    assert train_hf.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_3d_build_with_a_2d_architecture_is_refused_before_any_model_is_built(built_medmnist, capsys):
    assert train_hf.main(["--dataset", str(built_medmnist), "--subset", "adrenalmnist3d", "--arch", "resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "adrenalmnist3d is a 3D subset" in err and len(err.splitlines()) == 1


def test_the_accelerator_never_dispatches_or_splits_batches():
    _, _, _, args = training.parse_args(["--subset", "breastmnist"])
    assert args.accelerator_config.dispatch_batches is False and args.accelerator_config.split_batches is False


def test_ensemble_and_the_report_import_neither_torch_nor_transformers():
    code = (
        "import sys; import hfmed.cli, hfmed.ensemble, hfmed.training.report, hfmed.training.plots, hfmed.metrics; "
        "print(sorted(m for m in ('torch', 'transformers', 'evaluate') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_missing_config_in_a_build_names_the_build_command(small_npz, tmp_path, capsys):
    data = build_small(small_npz, tmp_path, "pneumoniamnist")
    assert train_hf.main(["--dataset", str(data), "--subset", "breastmnist", *QUICK]) == 2
    assert "hfmed build medmnist breastmnist" in capsys.readouterr().err


def test_checkpoint_id_offline_names_the_offline_alternatives(small_npz, tmp_path, capsys):
    data = build_small(small_npz, tmp_path, "pneumoniamnist")
    code = train_hf.main(
        [
            "--dataset",
            str(data),
            "--subset",
            "pneumoniamnist",
            "--model",
            "some-org/some-vit",
            *QUICK[4:],
            "--output_dir",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "some-org/some-vit" in err and "--arch" in err and "local checkpoint folder" in err
    assert not (tmp_path / "r").exists()


def test_ordinal_loss_on_a_binary_task_is_refused(small_npz, tmp_path, capsys):
    data = build_small(small_npz, tmp_path, "pneumoniamnist")
    assert train_hf.main(["--dataset", str(data), "--subset", "pneumoniamnist", "--ordinal_loss", "emd", *QUICK]) == 2
    assert "ordinal" in capsys.readouterr().err


def test_a_local_checkpoint_is_fine_tuned_with_a_new_head(small_npz, tmp_path):
    """--model PATH: AutoModelForImageClassification with this task's labels, the old head replaced."""
    from transformers import AutoModelForImageClassification

    seven = task_info("multi-class", tuple("abcdefg"), channels=3, side=28)
    checkpoint = tmp_path / "checkpoint"
    AutoModelForImageClassification.from_config(training.scratch_config("vit", "nano", 28, 3, seven)).save_pretrained(
        checkpoint
    )
    data = build_small(small_npz, tmp_path, "pneumoniamnist")
    out = tmp_path / "run"
    results = train(
        [
            "--dataset",
            str(data),
            "--subset",
            "pneumoniamnist",
            "--model",
            str(checkpoint),
            "--output_dir",
            str(out),
            *QUICK[4:],
            "--num_train_epochs",
            "1",
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert results["model"] == str(checkpoint) and config["id2label"] == {"0": "normal", "1": "pneumonia"}
    assert config["num_channels"] == 3  # the RGB checkpoint was fed grayscale repeated to 3 channels


@pytest.mark.parametrize(
    "arch, schedule",
    [
        ("vit", []),  # evaluated every epoch, best checkpoint reloaded
        # BatchNorm: each rank updates its own running statistics; with no evaluation inside training
        # and no checkpoint reloaded, only their synchronisation makes the saved model the one scored.
        ("resnet", ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]),
    ],
)
def test_two_gloo_processes_train_their_own_shares_and_report_the_saved_model(small_npz, tmp_path, arch, schedule):
    """torchrun with two CPU processes: equal steps, every row scored once, the saved model's metrics."""
    data = build_small(small_npz, tmp_path, "dermamnist")
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
        "dermamnist",
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
            "--arch",
            arch,
            "--arch_size",
            "nano",
            "--num_train_epochs",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "0.01",
            *schedule,
            "--output_dir",
            str(ddp),
        ],
        env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    distributed = json.loads((ddp / "results.json").read_text())
    assert distributed["num_processes"] == 2
    assert distributed["train_batches_per_rank"] == [6, 6]  # 24 rows: 12 per rank, 3 batches of 4, 2 epochs
    assert distributed["num_samples"] == {"train": 24, "validation": 11, "test": 13}  # odd sizes: nothing padded in

    single = train([*common, "--model", str(ddp), "--do_train", "false", "--output_dir", str(tmp_path / "single")])
    assert single["num_processes"] == 1
    with np.load(ddp / "predictions.npz") as a, np.load(tmp_path / "single" / "predictions.npz") as b:
        for split in ("validation", "test"):
            assert np.array_equal(
                a[f"{split}_labels"], b[f"{split}_labels"]
            )  # the same rows, once each, in the same order
            assert np.allclose(a[f"{split}_scores"], b[f"{split}_scores"], atol=1e-6)
    for split in ("validation", "test"):
        for metric in ("auc", "acc"):
            x, y = distributed[split][metric], single[split][metric]
            assert (x is None and y is None) or abs(x - y) <= 1e-6, (split, metric, x, y)


def test_an_ensemble_averages_the_probabilities_of_its_runs(small_npz, tmp_path, capsys):
    """hfmed ensemble: mean of the members' validation and test probabilities, scored the same way."""
    from hfmed import cli

    data = build_small(small_npz, tmp_path, "breastmnist")
    runs = []
    for seed in ("0", "1"):
        out = tmp_path / f"run{seed}"
        quick = [*QUICK[:-1], seed]
        train(
            [
                "--dataset",
                str(data),
                "--subset",
                "breastmnist",
                "--output_dir",
                str(out),
                "--arch",
                "resnet",
                *quick[2:],
            ]
        )
        runs.append(out)
    assert cli.main(["ensemble", *map(str, runs), "--out", str(tmp_path / "ens")]) == 0
    assert "test: AUC" in capsys.readouterr().out

    ens = tmp_path / "ens"
    results = json.loads((ens / "results.json").read_text())
    member = json.loads((runs[0] / "results.json").read_text())
    assert list(results) == list(member) == list(training.SCHEMA)  # one schema for runs and ensembles
    assert (
        results["members"]
        and member["members"] is None
        and member["train_batches_per_rank"] == [6]
        and results["train_batches_per_rank"] is None
    )
    with (
        np.load(ens / "predictions.npz") as saved,
        np.load(runs[0] / "predictions.npz") as a,
        np.load(runs[1] / "predictions.npz") as b,
    ):
        for split in ("validation", "test"):
            assert not np.array_equal(a[f"{split}_scores"], b[f"{split}_scores"])  # two different models
            assert np.allclose(saved[f"{split}_scores"], (a[f"{split}_scores"] + b[f"{split}_scores"]) / 2)
            expected = metrics.compute("binary", a[f"{split}_labels"], saved[f"{split}_scores"])
            assert results[split]["acc"] == pytest.approx(expected["acc"]) and results[split]["auc"] == pytest.approx(
                expected["auc"]
            )
    assert [m["folder"] for m in results["members"]] == [str(r) for r in runs]
    md = (ens / "results.md").read_text()
    assert (
        "| **this run** (ensemble of 2 runs)" in md
        and f"| member 2: {runs[1]} |" in md
        and "Google AutoML Vision" in md
    )
    assert "each member's checkpoint selected on validation AUC" in md
    for figure in ("roc_curve.png", "confusion_matrix.png"):
        assert (ens / figure).is_file()

    # Runs of another task, or without predictions, are refused in one line; nothing is written.
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(
        (runs[1] / "results.json").read_text().replace('"config": "breastmnist"', '"config": "pneumoniamnist"')
    )
    (other / "predictions.npz").write_bytes((runs[1] / "predictions.npz").read_bytes())
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.json").write_text((runs[1] / "results.json").read_text())
    for members, message in (
        ([runs[0], other], "an ensemble combines runs of one task"),
        ([runs[0], bare], "predictions.npz not found"),
        ([runs[0], runs[0]], "given twice"),
    ):
        before = sorted(p.name for p in tmp_path.iterdir())
        assert cli.main(["ensemble", *map(str, members), "--out", str(tmp_path / "ens2")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    (tmp_path / "a-file").write_text("x")
    assert cli.main(["ensemble", *map(str, runs), "--out", str(tmp_path / "a-file")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "a-file").read_text() == "x"
    assert cli.main(["ensemble", *map(str, runs), "--out", str(ens)]) == 2  # exists: not replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((ens / "results.json").read_text()) == results
    assert (
        cli.main(["ensemble", *map(str, runs), "--out", str(runs[0] / "ens"), "--overwrite"]) == 2
    )  # a member is never written into
    assert "inside the member run" in capsys.readouterr().err and not (runs[0] / "ens").exists()
    (ens / "stale.txt").write_text("old")
    assert cli.main(["ensemble", *map(str, reversed(runs)), "--out", str(ens), "--overwrite"]) == 0
    assert not (ens / "stale.txt").exists() and json.loads((ens / "results.json").read_text())["test"] == pytest.approx(
        results["test"]
    )


def test_a_trained_run_is_evaluated_again_from_its_folder(small_npz, tmp_path):
    """--model <run folder> --do_train false gives the same figures: same weights, same input size."""
    data = build_small(small_npz, tmp_path, "breastmnist")
    first = train(
        [
            "--dataset",
            str(data),
            "--subset",
            "breastmnist",
            "--output_dir",
            str(tmp_path / "run"),
            "--arch",
            "resnet",
            *QUICK[2:],
        ]
    )
    again = train(
        [
            "--dataset",
            str(data),
            "--subset",
            "breastmnist",
            "--model",
            str(tmp_path / "run"),
            "--do_train",
            "false",
            "--output_dir",
            str(tmp_path / "again"),
            "--disable_tqdm",
            "true",
        ]
    )
    assert first["image_size"] == again["image_size"] == 112  # a ResNet is fed 28 px images at 112
    for split in ("validation", "test"):
        assert again[split]["acc"] == pytest.approx(first[split]["acc"])
        assert again[split]["auc"] == pytest.approx(first[split]["auc"])
    assert (tmp_path / "again" / "predictions.npz").is_file()


def test_cv_folds_partition_the_rows_and_spread_each_class_evenly():
    labels = np.array([0] * 23 + [1] * 9 + [2] * 4)
    fold_of = training.cv_assignment(labels, 5)
    assert fold_of.shape == labels.shape and set(fold_of.tolist()) == set(range(5))
    sizes = np.bincount(fold_of, minlength=5)
    assert sizes.max() - sizes.min() <= 1  # 36 rows: 8, 7, 7, 7, 7
    for value in (0, 1, 2):
        per_fold = np.bincount(fold_of[labels == value], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, value
    assert np.array_equal(training.cv_assignment(labels, 5), fold_of)  # the same folds every time
    assert not np.array_equal(training.cv_assignment(labels, 5, seed=1), fold_of)
    multi_hot = np.array([[1, 0], [0, 1]] * 10 + [[1, 1]] * 5)  # multi-label rows: stratified by whole pattern
    fold_of = training.cv_assignment(multi_hot, 5)
    for pattern in ([1, 0], [0, 1], [1, 1]):
        rows = (multi_hot == pattern).all(axis=1)
        assert np.bincount(fold_of[rows], minlength=5).max() - np.bincount(fold_of[rows], minlength=5).min() <= 1


def test_cross_validation_holds_out_each_train_or_validation_row_once_and_never_reads_test(small_npz, tmp_path):
    data = build_small(small_npz, tmp_path, "breastmnist")
    args = training.parse_args(["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4"])[3]
    raw = training.Feed(image_size=28, channels=1, mean=(0.0,), std=(1 / 255,))  # x * 255: the stored bytes back

    def rows(loader) -> list[bytes]:
        return [
            p.round().to(torch.uint8).numpy().tobytes() + bytes([int(label)])
            for b in loader
            for p, label in zip(b["pixel_values"], b["labels"])
        ]

    plain = training.open_data(training.DataArguments(dataset=str(data), subset="breastmnist"), args)
    pooled = sorted(rows(plain.loader("train", raw, args)) + rows(plain.loader("validation", raw, args)))
    test = set(rows(plain.loader("test", raw, args)))
    held_out = []
    for fold in range(5):
        loaded = training.open_data(
            training.DataArguments(dataset=str(data), subset="breastmnist", cv_folds=5, cv_fold=fold), args
        )
        assert loaded.splits == ("train", "validation")
        train_rows, validation_rows = (
            rows(loaded.loader("train", raw, args)),
            rows(loaded.loader("validation", raw, args)),
        )
        assert sorted(train_rows + validation_rows) == pooled and not set(train_rows) & set(validation_rows)
        assert loaded.sizes == {"train": len(train_rows), "validation": len(validation_rows)}
        # what the Trainer logs as examples and divides its speed by: rows, not batches
        assert loaded.loader("train", raw, args).dataset.rows_per_rank() == len(train_rows)
        assert not test & set(train_rows + validation_rows)
        held_out += validation_rows
    assert sorted(held_out) == pooled  # every pooled row validates exactly once over the folds


def test_a_cross_validation_run_reports_its_fold_and_no_test_figures(small_npz, tmp_path, capsys):
    from hfmed import cli

    data = build_small(small_npz, tmp_path, "breastmnist")
    out = tmp_path / "fold1"
    results = train(
        [
            "--dataset",
            str(data),
            "--subset",
            "breastmnist",
            "--cv_folds",
            "5",
            "--cv_fold",
            "1",
            "--output_dir",
            str(out),
            "--arch",
            "resnet",
            *QUICK[2:],
        ]
    )
    assert results["cross_validation"] == {
        "folds": 5,
        "fold": 1,
        "seed": 0,
        "pooled": ["train", "validation"],
        "groups": None,
    }
    assert results["test"] is None and results["num_samples"]["test"] is None
    assert results["num_samples"]["train"] + results["num_samples"]["validation"] == 24 + 11
    with np.load(out / "predictions.npz") as saved:
        assert saved.files == ["validation_labels", "validation_scores"]
        assert saved["validation_scores"].shape[0] == results["num_samples"]["validation"]
        recomputed = metrics.compute("binary", saved["validation_labels"], saved["validation_scores"])
        assert recomputed["acc"] == pytest.approx(results["validation"]["acc"])
    md = (out / "results.md").read_text()
    assert "cross-validation fold 1 of 5" in md and "The test split was not used" in md and "Google AutoML" not in md
    for name in ("roc_curve.png", "confusion_matrix.png", "README.md"):
        assert (out / name).is_file()
    # An ensemble needs test predictions: a fold is refused in one line.
    other = tmp_path / "plain"
    train(
        ["--dataset", str(data), "--subset", "breastmnist", "--output_dir", str(other), "--arch", "resnet", *QUICK[2:]]
    )
    capsys.readouterr()  # the training runs' progress bars
    assert cli.main(["ensemble", str(other), str(out), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cross-validation fold 1 of 5" in err and len(err.splitlines()) == 1 and not (tmp_path / "ens").exists()


def test_too_few_rows_for_the_folds_is_refused_before_training(small_npz, tmp_path):
    data = build_small(small_npz, tmp_path, "breastmnist", n={"train": 4, "val": 3, "test": 2})
    loaded = training.open_data(
        training.DataArguments(dataset=str(data), subset="breastmnist", cv_folds=5, cv_fold=0),
        training.parse_args([])[3],
    )
    with pytest.raises(UserError, match="has 7 train and validation rows, too few for --cv_folds 5; use fewer folds"):
        loaded.fold()


def test_a_run_leaves_no_worker_process_or_decoding_thread_behind(small_npz, tmp_path):
    """Stopped mid-epoch (--max_steps) with persistent workers: nothing of the loaders outlives the run."""
    import multiprocessing
    import threading

    data = build_small(small_npz, tmp_path, "pneumoniamnist")
    train(
        [
            "--dataset",
            str(data),
            "--subset",
            "pneumoniamnist",
            "--output_dir",
            str(tmp_path / "run"),
            *QUICK,
            "--max_steps",
            "1",
            "--dataloader_num_workers",
            "1",
            "--dataloader_persistent_workers",
            "true",
            "--streaming",
            "true",
        ]
    )
    assert multiprocessing.active_children() == []
    for thread in [t for t in threading.enumerate() if t.name.startswith("hfmed-decode")]:
        thread.join(timeout=10)  # told to stop; an idle pool thread exits at its next wake-up
    assert not [t.name for t in threading.enumerate() if t.name.startswith("hfmed-decode") and t.is_alive()]
