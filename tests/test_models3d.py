"""The 3D networks (hfmed.models3d): shapes, the three kernel layouts, transformers round trips, Trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForImageClassification, Trainer, TrainingArguments

import hfmed.models3d as models3d
from hfmed.errors import UserError
from hfmed.models3d.layers import ACSConv3d, BasicBlock, BottleneckBlock

FAMILIES = list(models3d.FAMILIES)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread here: on a CPU busy with other jobs, OpenMP threads waiting for each other
    made these small models 30-100x slower; one thread keeps the file at seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LABELS = ["normal", "hyperplasia", "other"]


def small_model(arch: str, labels=LABELS, problem_type: str = "single_label_classification", seed: int = 0):
    config = models3d.scratch_config(
        arch, "small", image_size=28, channels=1, label_names=labels, problem_type=problem_type
    )
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(config)


def stage_sides(side: int) -> list[torch.Size]:
    """Stem and stage 1 at full resolution, then every side halved (rounding up) three times."""
    return [torch.Size([s] * 3) for s in (side, side, -(-side // 2), -(-side // 4), -(-side // 8))]


@pytest.mark.parametrize("side", [28, 32])  # 64^3 backward passes cost seconds each on a CPU
@pytest.mark.parametrize("arch", FAMILIES)
def test_forward_backward_reaches_every_weight(arch, side):
    model = small_model(arch)
    x = torch.randn(2, 1, side, side, side)
    out = model(pixel_values=x, labels=torch.tensor([0, 2]), output_hidden_states=True)
    assert out.logits.shape == (2, len(LABELS))
    assert [h.shape[2:] for h in out.hidden_states] == stage_sides(side)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", FAMILIES)
def test_64_voxel_volumes_classify(arch):
    model = small_model(arch).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 1, 64, 64, 64), output_hidden_states=True)
    assert out.logits.shape == (1, len(LABELS)) and torch.isfinite(out.logits).all()
    assert [h.shape[2:] for h in out.hidden_states] == stage_sides(64)


@pytest.mark.parametrize("arch", FAMILIES)
def test_save_and_reload_gives_identical_outputs(arch, tmp_path):
    model = small_model(arch)
    model.train()
    with torch.no_grad():  # move the batch norm statistics off their initial values
        model(pixel_values=torch.rand(4, 1, 28, 28, 28) * 3 + 1)
    model.eval()
    x = torch.rand(2, 1, 28, 28, 28)
    expected = model(pixel_values=x).logits
    model.save_pretrained(tmp_path)

    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    assert reloaded.config.id2label == dict(enumerate(LABELS))
    assert reloaded.config.problem_type == "single_label_classification"
    assert reloaded.config.image_size == 28
    torch.testing.assert_close(reloaded(pixel_values=x).logits, expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", FAMILIES)
def test_auto_classes_resolve(arch):
    config_class, model_class = models3d.FAMILIES[arch]
    config = AutoConfig.for_model(config_class.model_type, num_labels=2)
    assert type(config) is config_class
    assert type(AutoModelForImageClassification.from_config(config)) is model_class


def test_the_families_have_distinct_model_types():
    types = {config.model_type for config, _ in models3d.FAMILIES.values()}
    assert types == {"hfmed_resnet3d", "hfmed_acs_resnet", "hfmed_resnet2_5d"}


def test_sizes_are_resnet18_and_resnet50():
    def blocks(arch, size, kind):
        config = models3d.scratch_config(
            arch, size, image_size=28, channels=1, label_names=LABELS, problem_type="single_label_classification"
        )
        return sum(isinstance(m, kind) for m in AutoModelForImageClassification.from_config(config).modules())

    assert blocks("acs", "base", BasicBlock) == 8  # 2+2+2+2
    assert blocks("acs", "large", BottleneckBlock) == 16  # 3+4+6+3
    # With 2D (or ACS) kernels: the parameter count of MedMNIST's 2D ResNet18(in_channels=1, num_classes=2).
    base = models3d.scratch_config(
        "resnet2_5d",
        "base",
        image_size=28,
        channels=1,
        label_names=["a", "b"],
        problem_type="single_label_classification",
    )
    assert sum(p.numel() for p in AutoModelForImageClassification.from_config(base).parameters()) == 11_168_706


def test_unknown_architecture_or_size_is_a_user_error():
    with pytest.raises(UserError, match="resnet3d, acs, resnet2_5d"):
        models3d.scratch_config(
            "vit", "base", image_size=28, channels=1, label_names=LABELS, problem_type="single_label_classification"
        )
    with pytest.raises(UserError, match="small, base, large"):
        models3d.scratch_config(
            "acs", "nano", image_size=28, channels=1, label_names=LABELS, problem_type="single_label_classification"
        )


@pytest.mark.parametrize("arch", FAMILIES)
def test_losses_are_transformers_image_classification_losses(arch):
    x = torch.randn(3, 1, 16, 16, 16)

    multi = small_model(arch, labels=["a", "b", "c", "d"], problem_type="multi_label_classification")
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    out = multi(pixel_values=x, labels=targets)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))

    single = small_model(arch)
    labels = torch.tensor([2, 0, 1])
    out = single(pixel_values=x, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))


@pytest.mark.parametrize("mode", ["dense", "planes"])
@pytest.mark.parametrize("stride", [1, 2])
def test_acs_applies_each_third_of_the_kernels_in_its_own_plane(stride, mode):
    torch.manual_seed(0)
    conv = ACSConv3d(2, 7, 3, stride)
    conv.mode = mode
    assert conv.split == (3, 2, 2)
    x = torch.randn(1, 2, 9, 10, 11)
    out = conv(x)
    # Each group equals a 3x3x3 convolution whose kernel is the 2D kernel in its plane, zero elsewhere.
    full = torch.zeros(7, 2, 3, 3, 3)
    full[0:3, :, 1, :, :] = conv.weight[0:3]  # axial: the H-W plane
    full[3:5, :, :, 1, :] = conv.weight[3:5]  # coronal: the D-W plane
    full[5:7, :, :, :, 1] = conv.weight[5:7]  # sagittal: the D-H plane
    torch.testing.assert_close(out, F.conv3d(x, full, stride=stride, padding=1), rtol=1e-5, atol=1e-5)
    # And the gradient reaches the 2D kernel in both modes.
    out.square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_resnet2_5d_sees_the_slices_medmnist_v2_keeps():
    # 1 x k x k kernels with the stride on every axis (ACSConv's Conv2_5dConverter): after the
    # three strided stages only slices 0, 8, 16 and 24 of a 28-slice volume reach the head.
    model = small_model("resnet2_5d").eval()
    x = torch.randn(1, 1, 28, 8, 8)  # small slices: what matters here is the depth
    with torch.no_grad():
        base = model(pixel_values=x).logits
        for k in range(28):
            y = x.clone()
            y[:, :, k] += 1.0
            changed = not torch.equal(model(pixel_values=y).logits, base)
            assert changed == (k % 8 == 0), k


def test_a_short_trainer_fit_lowers_the_loss_and_checkpoints(tmp_path):
    # Two classes told apart by brightness; a few steps of Adam must fit them.
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 4)
    volumes = torch.rand(8, 1, 16, 16, 16, generator=g) + labels.view(-1, 1, 1, 1, 1) * 0.5
    rows = [{"pixel_values": v, "labels": int(y)} for v, y in zip(volumes, labels)]
    model = small_model("acs", labels=["dark", "bright"])
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=12,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="steps",
        save_steps=12,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    # The Trainer's checkpoint is an ordinary model folder for the Auto classes.
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "checkpoint-12").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=volumes).logits, trainer.model.eval()(pixel_values=volumes).logits, rtol=0, atol=0
        )


@pytest.mark.parametrize("arch", FAMILIES)
def test_fresh_weights_are_he_initialised_and_batch_norm_is_identity(arch):
    config = models3d.scratch_config(
        arch, "base", image_size=28, channels=1, label_names=LABELS, problem_type="single_label_classification"
    )
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(config)
    stage3 = model.resnet.stages[2][1].layer[0][0]  # a 256 -> 256 3x3 kernel
    fan_out = stage3.weight.shape[0] * stage3.weight[0, 0].numel()
    assert stage3.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and all(
        torch.all(m.weight == 1)
        and torch.all(m.bias == 0)
        and torch.all(m.running_mean == 0)
        and torch.all(m.running_var == 1)
        for m in norms
    )


def test_the_published_protocol_drops_the_rate_at_epochs_50_and_75():
    from hfmed.models3d.protocol import PUBLISHED_3D

    assert PUBLISHED_3D.milestone_epochs() == (50, 75)
    assert (PUBLISHED_3D.optimizer, PUBLISHED_3D.learning_rate, PUBLISHED_3D.per_device_train_batch_size) == (
        "Adam",
        1e-3,
        32,
    )
    assert PUBLISHED_3D.default_arch in models3d.FAMILIES and PUBLISHED_3D.default_arch_size in models3d.ARCH_SIZES
