#!/usr/bin/env python
"""Train an image or volume classifier on a MedMNIST subset or a MedIMeta task with the transformers Trainer.

    python train_hf.py --subset retinamnist
    python train_hf.py --subset adrenalmnist3d --arch acs       # 3D: resnet3d (default), acs, resnet2_5d
    python train_hf.py --subset pneumoniamnist --size 224 --model google/vit-base-patch16-224-in21k --bf16
    python train_hf.py --collection medimeta --subset dr_regular --task dr_level
    torchrun --nproc_per_node 8 train_hf.py --subset pathmnist --size 224 ...

Every TrainingArguments flag works; ``--preset medmnist`` (the default) is the published MedMNIST
v2 protocol, ``--preset finetune`` fine-tunes a pretrained checkpoint. The model is chosen on
validation AUC, evaluated once on test, and the output folder gets results.json, results.md (this
run beside the published figures), roc_curve.png, confusion_matrix.png and the model card. The
batches come from ``hfmed.loaders``, each rank reading its own share of the rows (see
``hfmed.training`` for the parts).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import set_seed

from hfmed import metrics, training
from hfmed.errors import UserError
from hfmed.loaders import augment

if TYPE_CHECKING:
    from transformers import TrainingArguments
    from transformers.trainer_utils import PredictionOutput

    from hfmed.training.arguments import DataArguments, ModelArguments, RecipeArguments
    from hfmed.training.data import Data
    from hfmed.training.models import ModelBundle
    from hfmed.training.trainer import MedTrainer


def run(argv: list[str] | None = None) -> dict:
    data_args, model_args, recipe_args, training_args = training.parse_args(argv)
    started = time.perf_counter()
    if training_args.use_cpu or not torch.cuda.is_available():
        training.keep_freed_memory()  # each step reuses the last one's memory (training/allocator.py)
    set_seed(training_args.seed)

    # The data: a config of a build (checked before any model is made), one batch loader per split.
    data = training.open_data(data_args, training_args, model_args)
    info = data.info
    if model_args.ordinal_loss != "cross_entropy" and info.task != "ordinal":
        raise UserError(
            f"--ordinal_loss {model_args.ordinal_loss} is for ordinal tasks; {data.config} "
            f"{info.label_column} is {info.task}"
        )
    bundle = training.build_model(model_args, recipe_args, info, data_args)
    channels_last = training.wants_channels_last(model_args, bundle.model)
    if channels_last:
        bundle.model = bundle.model.to(memory_format=torch.channels_last)
    feed = training.Feed(
        bundle.image_size,
        bundle.channels,
        bundle.mean,
        bundle.std,
        augment.by_name(recipe_args.augment, len(info.image_shape)),
    )
    splits = {split: data.loader(split, feed, training_args) for split in data.splits}

    trainer = training.MedTrainer(
        model=bundle.model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        compute_metrics=metrics.compute_metrics_for_trainer(info.task),
        compute_loss_func=training.ordinal_emd_loss if model_args.ordinal_loss == "emd" else None,
        lr_decay_epochs=recipe_args.lr_decay_epochs,
        lr_decay_gamma=recipe_args.lr_decay_gamma,
        ema_decay=recipe_args.ema_decay,
        mixup_alpha=recipe_args.mixup_alpha,
        tta=recipe_args.tta,
        channels_last=channels_last,
    )
    if training_args.do_train:
        trainer.add_callback(training.ProgressFile(training_args.output_dir, started, data.sizes["train"]))
    try:
        train_seconds = None
        if training_args.do_train:
            train_started = time.perf_counter()
            train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
            train_seconds = time.perf_counter() - train_started - trainer.side_seconds
            trainer.save_model()
            trainer.log_metrics("train", train_result.metrics)
            trainer.save_state()
        # predict, not evaluate: the scores are kept (predictions.npz) for `hfmed ensemble`. Under
        # cross-validation or --eval_test false the test split is never opened.
        outputs = {
            split: trainer.predict(splits[split], metric_key_prefix=split) for split in data.splits if split != "train"
        }
        for split, output in outputs.items():
            trainer.log_metrics(split, output.metrics)
        batches = trainer.batches_per_rank()
    finally:
        training.close_loaders(splits.values())

    results = _results(
        argv, data, data_args, model_args, recipe_args, training_args, bundle, trainer, outputs, channels_last
    )
    results.update(
        wall_time_seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        train_batches_per_rank=batches,
        train_images_per_second=(trainer.images_seen * training_args.world_size / train_seconds)
        if train_seconds
        else None,
    )
    out = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        scores = {split: training.scored(info.task, o.label_ids, o.predictions) for split, o in outputs.items()}
        training.write_report(out, results, scores)
    _write_card(trainer, data, data_args, model_args, results, out)
    return results


def _results(
    argv: list[str] | None,
    data: Data,
    data_args: DataArguments,
    model_args: ModelArguments,
    recipe_args: RecipeArguments,
    training_args: TrainingArguments,
    bundle: ModelBundle,
    trainer: MedTrainer,
    outputs: dict[str, PredictionOutput],
    channels_last: bool,
) -> dict:
    """The run's results.json (schema: ``hfmed.training.report.SCHEMA``), timings aside."""
    info, cv = data.info, data.cv_folds is not None
    last = "test" if "test" in outputs else "validation"
    return {
        "collection": data_args.collection,
        "dataset": data.location,
        "config": data.config,
        "subset": data_args.subset or data.config,
        "task": info.label_column,
        "task_column_chosen": data_args.task is not None,
        "task_type": info.task,
        "num_labels": info.num_labels,
        "label_names": list(info.label_names),
        "model": bundle.source,
        "image_size": bundle.image_size,
        "selection_metric": training_args.metric_for_best_model,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_validation_auc": trainer.state.best_metric,
        **{split: _strip(output.metrics, split) for split, output in outputs.items()},
        "cross_validation": {
            "folds": data.cv_folds,
            "fold": data.cv_fold,
            "seed": training.CV_SEED,
            "pooled": ["train", "validation"],
            "groups": data.cv_groups,
        }
        if cv
        else None,
        "num_samples": {
            "train": data.sizes["train"],
            "validation": data.sizes["validation"],
            "test": int(len(outputs["test"].label_ids)) if "test" in outputs else None,
        },
        "eval_images_per_second": outputs[last].metrics.get(f"{last}_samples_per_second"),
        "device": training.device_description(),
        "num_processes": max(1, training_args.world_size),
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        "channels_last": channels_last,
        "torch_compile": training_args.torch_compile,
        "versions": training.versions(),
        "command": shlex.join(
            ["python", "train_hf.py", *training.redacted_command(sys.argv[1:] if argv is None else argv)]
        ),
        "arguments": training.arguments_record(data_args, model_args, recipe_args, training_args),
    }


def _write_card(
    trainer: MedTrainer, data: Data, data_args: DataArguments, model_args: ModelArguments, results: dict, out: Path
) -> None:
    if not model_args.model:
        # The card says "fine-tuned from <name_or_path>" unless that is a folder; a model built
        # from a config has an empty one, so name this run's own folder: "trained from scratch".
        trainer.model.config._name_or_path = str(out)
    card = {
        "model_name": out.name,
        "dataset": data.location if not Path(data.location).is_dir() else data_args.collection,
        "dataset_args": data.config,
        "tags": ["medical-imaging", data_args.collection, data.config],
    }
    trainer.create_model_card(**card)  # rank 0 only, inside
    if trainer.args.push_to_hub:
        cv = results["cross_validation"]
        if cv:
            figure = f"fold {cv['fold']} of {cv['folds']}: validation AUC {_fmt(results['validation'].get('auc'))}"
        elif results["test"] is None:
            figure = f"validation AUC {_fmt(results['validation'].get('auc'))}, test not read"
        else:
            figure = f"test AUC {_fmt(results['test'].get('auc'))}"
        trainer.push_to_hub(commit_message=f"{data.config}: {figure}", **card)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _strip(metrics_: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1 :]: v for k, v in metrics_.items() if k.startswith(prefix + "_")}


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except UserError as e:
        print(f"train_hf.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
