"""What ``train_hf.py`` is made of, one concept per module; each is usable on its own.

- ``arguments``: the command line (argument dataclasses, presets) and the flag combinations refused.
- ``hardware``: speed defaults for the machine at hand, and its description for the report.
- ``allocator``: the C allocator keeps freed memory for the next step (CPU training).
- ``data``: opening a config (local build or Hub repo) and its splits as ``hfmed.loaders`` batch loaders.
- ``folds``: cross-validation (train and validation pooled, stratified folds, grouped by patient on request)
  through the same batch transform.
- ``models``: from-scratch ViT/ConvNeXt/ResNet sized to the data, or a pretrained checkpoint, and what each must be fed.
- ``trainer``: ``MedTrainer`` (loaders in, per-rank evaluation gathered once, step decay, EMA, TTA, timing).
- ``averaging``, ``losses``, ``distributed``: weight averaging, extra losses, what ranks share.
- ``progress``: progress.json after every epoch (epochs done, seconds so far), for a scheduler watching the run.
- ``report`` and ``plots``: results.json (one schema, shared with ``hfmed ensemble``), results.md,
  predictions.npz and the figures; these two import neither torch nor transformers.

The names below are importable from ``hfmed.training`` directly; a submodule is imported only when
one of its names is first used, so ``from hfmed.training import report`` costs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "arguments": (
        "ARGUMENT_TYPES",
        "COMMON_DEFAULTS",
        "PRESETS",
        "DataArguments",
        "ModelArguments",
        "RecipeArguments",
        "check_cv",
        "default_output_dir",
        "parse_args",
        "refuse_impossible",
    ),
    "hardware": ("device_description", "hardware_defaults", "versions"),
    "allocator": ("keep_freed_memory",),
    "data": ("SPLITS", "Data", "Feed", "close_loaders", "config_name", "ensure_built", "locate", "open_data"),
    "folds": ("CV_SEED", "Fold", "cv_assignment", "grouped_assignment", "read_groups", "strata"),
    "models": (
        "ARCH_DIMENSIONS",
        "ARCH_SIZES",
        "ModelBundle",
        "build_model",
        "check_dimensions",
        "fitted_input_size",
        "fitted_patch",
        "problem_type",
        "scratch_config",
        "wants_channels_last",
    ),
    "trainer": ("MedTrainer",),
    "averaging": ("WeightAverage",),
    "losses": ("ordinal_emd_loss",),
    "progress": ("PROGRESS_FILE", "ProgressFile"),
    "report": (
        "PREDICTIONS_FILE",
        "SCHEMA",
        "arguments_record",
        "published_for",
        "published_rows",
        "redacted_command",
        "results_markdown",
        "results_record",
        "scored",
        "write_json",
        "write_predictions",
        "write_report",
    ),
    "plots": ("plot_confusion", "plot_roc"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["TaskInfo"]


def __getattr__(name: str) -> Any:
    if name == "TaskInfo":
        from hfmed.loaders import TaskInfo

        return TaskInfo
    if name in _EXPORTS:
        return importlib.import_module(f"hfmed.training.{name}")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hfmed.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hfmed.training.{module}"), name)
