#!/usr/bin/env python
"""Train an image classifier on a MedMNIST subset or a MedIMeta task with the transformers Trainer.

    python train_hf.py --subset retinamnist
    python train_hf.py --subset pneumoniamnist --size 224 --model google/vit-base-patch16-224-in21k --bf16
    python train_hf.py --collection medimeta --subset dr_regular --task dr_level
    torchrun --nproc_per_node 8 train_hf.py --subset pathmnist --size 224 ...

Every TrainingArguments flag works; ``--preset medmnist`` (the default) is the published MedMNIST
v2 protocol, ``--preset finetune`` fine-tunes a pretrained checkpoint. The model is chosen on
validation AUC, evaluated once on test, and the output folder gets results.json, results.md (this
run beside the published figures), roc_curve.png, confusion_matrix.png and the model card.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers import set_seed

from hfmed import metrics, training
from hfmed.errors import UserError


def run(argv: list[str] | None = None) -> dict:
    data_args, model_args, recipe_args, training_args = training.parse_args(argv)
    started = time.perf_counter()
    set_seed(training_args.seed)

    data = training.open_data(data_args, training_args)
    info = data.info
    if model_args.ordinal_loss != "cross_entropy" and info.task != "ordinal":
        raise UserError(f"--ordinal_loss {model_args.ordinal_loss} is for ordinal tasks; {data.config} {info.label_column} is {info.task}")
    bundle = training.build_model(model_args, recipe_args, info, data_args)
    channels_last = training.wants_channels_last(model_args, bundle.model)
    splits = data.splits()
    if channels_last:
        bundle.model = bundle.model.to(memory_format=torch.channels_last)

    collator = training.Collator(
        image_size=bundle.image_size,
        channels=bundle.channels,
        mean=bundle.mean,
        std=bundle.std,
        multi_label=info.task == "multi-label",
        channels_last=channels_last,
    )
    train_collator = dataclasses.replace(collator, augment=training.make_augment(recipe_args.augment))
    per_epoch = training.steps_per_epoch(data.sizes["train"], training_args)
    trainer = training.MedTrainer(
        model=bundle.model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=collator,
        train_collator=train_collator,
        compute_metrics=metrics.compute_metrics_for_trainer(info.task),
        compute_loss_func=training.ordinal_emd_loss if model_args.ordinal_loss == "emd" else None,
        lr_decay_steps=[round(epoch * per_epoch) for epoch in recipe_args.lr_decay_epochs],
        lr_decay_gamma=recipe_args.lr_decay_gamma,
        ema_decay=recipe_args.ema_decay,
        tta=recipe_args.tta,
    )

    train_seconds = None
    if training_args.do_train:
        train_started = time.perf_counter()
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        train_seconds = time.perf_counter() - train_started - trainer.side_seconds
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_state()

    # predict, not evaluate: the validation scores are kept (predictions.npz) for `hfmed ensemble`.
    validation_out = trainer.predict(splits["validation"], metric_key_prefix="validation")
    validation = validation_out.metrics
    trainer.log_metrics("validation", validation)
    outputs = {"validation": validation_out}
    cv = data.cv_folds is not None
    test = None  # cross-validation chooses a recipe: the test split stays unread
    if not cv:
        test = outputs["test"] = trainer.predict(splits["test"], metric_key_prefix="test")
        trainer.log_metrics("test", test.metrics)
    last = "test" if test is not None else "validation"

    world = max(1, training_args.world_size)
    results = {
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
        "validation": _strip(validation, "validation"),
        "test": _strip(test.metrics, "test") if test is not None else None,
        "cross_validation": {"folds": data.cv_folds, "fold": data.cv_fold, "seed": training.CV_SEED, "pooled": ["train", "validation"]} if cv else None,
        "num_samples": {"train": data.sizes["train"], "validation": data.sizes["validation"], "test": int(len(test.label_ids)) if test is not None else None},
        "wall_time_seconds": time.perf_counter() - started,
        "train_seconds": train_seconds,
        "train_images_per_second": (trainer.images_seen * world / train_seconds) if train_seconds else None,
        "eval_images_per_second": outputs[last].metrics.get(f"{last}_samples_per_second"),
        "device": training.device_description(),
        "num_processes": world,
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        "channels_last": channels_last,
        "torch_compile": training_args.torch_compile,
        "versions": _versions(),
        "command": shlex.join(["python", "train_hf.py", *training.redacted_command(sys.argv[1:] if argv is None else argv)]),
        "arguments": training.arguments_record(data_args, model_args, recipe_args, training_args),
    }
    out = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        training.write_report(out, results, info, {split: (o.label_ids, o.predictions) for split, o in outputs.items()})
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
    if training_args.push_to_hub:
        figure = f"test AUC {_fmt(results['test'].get('auc'))}" if not cv else f"fold {data.cv_fold} of {data.cv_folds}: validation AUC {_fmt(results['validation'].get('auc'))}"
        trainer.push_to_hub(commit_message=f"{data.config}: {figure}", **card)
    return results


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _strip(metrics_: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in metrics_.items() if k.startswith(prefix + "_")}


def _versions() -> dict:
    import datasets
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "datasets": datasets.__version__}


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except UserError as e:
        print(f"train_hf.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
