"""``MedTrainer``: the stock Trainer fed by hfmed's loaders, plus what the protocols need.

- Data: the train and evaluation "datasets" it is given are ready batch loaders
  (``hfmed.loaders.dataloader`` or a cross-validation fold, see ``hfmed.training.data``); it
  uses them as they are. Nothing is re-batched, collated, dispatched from rank 0 or split by
  accelerate: each rank's loader already reads that rank's share of the rows.
- Evaluation: each rank scores its own share of the split, in source order; the logits and labels
  are gathered in rank order, so every row is scored once and the metrics are those of one
  process on the whole split. Normalisation statistics are averaged over the ranks first
  (``hfmed.training.distributed``): the model evaluated is the model saved.
- Step decay at given epochs (the MedMNIST protocol's x0.1 at epochs 50 and 75), as a factor on
  top of whichever ``--lr_scheduler_type`` is in use.
- Optionally a moving average of the weights (``--ema_decay``), evaluated and checkpointed in
  place of the raw weights, mixup of the training batches (``--mixup_alpha``), and flip
  test-time augmentation (``--tta flip``).
- Timing of pure training: wall time minus evaluation, checkpointing and reloading the best
  checkpoint, and images seen.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize

from hfmed.errors import UserError
from hfmed.training import distributed, mixup
from hfmed.training.averaging import AverageEachStep, WeightAverage

if TYPE_CHECKING:
    from torch.utils.data import DataLoader
    from transformers.trainer_utils import TrainOutput


class MedTrainer(Trainer):
    """A Trainer whose ``train_dataset`` and ``eval_dataset`` are hfmed batch loaders."""

    def __init__(
        self,
        *args,
        lr_decay_epochs: list[float] | None = None,
        lr_decay_gamma: float = 0.1,
        ema_decay: float | None = None,
        mixup_alpha: float | None = None,
        tta: str = "none",
        channels_last: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ema_decay = ema_decay
        self.weight_average: WeightAverage | None = None
        self.tta = tta
        if ema_decay is not None:
            WeightAverage.checked(ema_decay)  # before anything is trained
            self.add_callback(AverageEachStep(self))
        self.mixup_alpha = None if mixup_alpha is None else mixup.checked(mixup_alpha)
        self.lr_decay_epochs = sorted(lr_decay_epochs or [])
        self.lr_decay_gamma = lr_decay_gamma
        self.channels_last = channels_last
        self.images_seen = 0
        self.batches_trained = 0  # on this rank
        self.side_seconds = 0.0  # time spent evaluating and saving inside train()

    # --- data: the loaders as they are ------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        return self.train_dataset

    def get_eval_dataloader(self, eval_dataset: DataLoader | None = None) -> DataLoader:
        return eval_dataset if eval_dataset is not None else self.eval_dataset

    def get_test_dataloader(self, test_dataset: DataLoader) -> DataLoader:
        return test_dataset

    def num_examples(self, dataloader: DataLoader) -> int:
        """Rows this rank reads per epoch (the Trainer's default counts a batch loader's batches)."""
        rows = getattr(dataloader.dataset, "rows_per_rank", None)
        return rows() if rows is not None else super().num_examples(dataloader)

    def _prepare_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = super()._prepare_inputs(inputs)
        pixels = inputs["pixel_values"]
        if self.channels_last and pixels.dim() == 4:
            inputs["pixel_values"] = pixels.contiguous(memory_format=torch.channels_last)
        return inputs

    # --- schedule -----------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch: the train loader's batches on this rank (equal on every rank)."""
        return max(1, -(-len(self.train_dataset) // self.args.gradient_accumulation_steps))

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if created and self.lr_decay_epochs:
            lambdas = getattr(scheduler, "lr_lambdas", None)
            if lambdas is None:
                raise UserError(
                    "--lr_decay_epochs cannot be combined with --lr_scheduler_type "
                    f"{self.args.lr_scheduler_type.value}; drop one of them"
                )
            per_epoch = self.steps_per_epoch()
            milestones, gamma = [round(epoch * per_epoch) for epoch in self.lr_decay_epochs], self.lr_decay_gamma
            scheduler.lr_lambdas = [
                (lambda step, base=base: base(step) * gamma ** bisect.bisect_right(milestones, step))
                for base in lambdas
            ]
            # LambdaLR set the first learning rate from the old lambdas; step 0 is before any milestone.
        return scheduler

    # --- training -----------------------------------------------------------------------------
    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        self.images_seen += int(inputs["pixel_values"].shape[0])
        self.batches_trained += 1
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, object]:
        if self.mixup_alpha is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        pixels, partner, weight = mixup.mix(inputs["pixel_values"], self.mixup_alpha)
        outputs = model(pixel_values=pixels)
        loss = weight * self._loss_against(model, outputs, labels, num_items_in_batch) + (
            1.0 - weight
        ) * self._loss_against(model, outputs, labels[partner], num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _loss_against(
        self,
        model: torch.nn.Module,
        outputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None,
    ) -> torch.Tensor:
        """The loss this run trains with (--ordinal_loss, label smoothing, or the model's own), against ``labels``."""
        if self.compute_loss_func is not None:
            return self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        if self.label_smoother is not None:
            return self.label_smoother(outputs, labels, num_items_in_batch=num_items_in_batch)
        logits = outputs["logits"].float()
        if self.accelerator.unwrap_model(model).config.problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        return F.cross_entropy(logits, labels)

    def train(self, *args, **kwargs) -> TrainOutput:
        try:
            result = super().train(*args, **kwargs)
            if self.weight_average is not None and not self.args.load_best_model_at_end:
                self.model.load_state_dict(self.weight_average.shadow)  # the average is the model
            return result
        finally:
            self.weight_average = None

    def batches_per_rank(self) -> list[int]:
        """Training batches each rank ran (a collective under torchrun)."""
        return distributed.gather_in_rank_order(self.batches_trained)

    @contextmanager
    def _averaged(self) -> Iterator[None]:
        if self.weight_average is None:
            yield
        else:
            with self.weight_average.applied(self.model):
                yield

    # --- evaluation ---------------------------------------------------------------------------
    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        start = time.perf_counter()
        try:
            with self._averaged():
                return super().evaluate(*args, **kwargs)
        finally:
            if self.is_in_train:
                self.side_seconds += time.perf_counter() - start

    def evaluation_loop(
        self,
        dataloader: DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """Score this rank's share, gather every rank's in rank order, compute the metrics on the whole split.

        The model is used unwrapped: ranks may run different numbers of evaluation batches (their
        shares differ by a row at most), so nothing inside the forward may wait for another rank.
        """
        model = self.model
        model.eval()
        distributed.average_running_stats(model)
        logits, labels, loss_sum = [], [], 0.0
        for inputs in dataloader:
            inputs = self._prepare_inputs(inputs)
            loss, out, target = self.prediction_step(model, inputs, prediction_loss_only=False, ignore_keys=ignore_keys)
            out = out[0] if isinstance(out, (tuple, list)) else out
            logits.append(out.detach().float().cpu().numpy())
            labels.append(target.detach().cpu().numpy())
            if loss is not None:
                loss_sum += float(loss) * len(target)
        local = (_concat(logits), _concat(labels), loss_sum)
        shares = distributed.gather_in_rank_order(local)
        all_logits = np.concatenate([s[0] for s in shares if s[0] is not None])
        all_labels = np.concatenate([s[1] for s in shares if s[1] is not None])
        metrics = {}
        if self.compute_metrics is not None and not prediction_loss_only:
            metrics = self.compute_metrics(EvalPrediction(predictions=all_logits, label_ids=all_labels))
        metrics = denumpify_detensorize(metrics)
        metrics["loss"] = sum(s[2] for s in shares) / max(1, len(all_labels))
        metrics = {
            k if k.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{k}": v for k, v in metrics.items()
        }
        return EvalLoopOutput(
            predictions=all_logits, label_ids=all_labels, metrics=metrics, num_samples=len(all_labels)
        )

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if self.tta == "flip" and not prediction_loss_only and isinstance(logits, torch.Tensor):
            mirrored = {**inputs, "pixel_values": inputs["pixel_values"].flip(-1)}
            _, other, _ = super().prediction_step(model, mirrored, False, ignore_keys=ignore_keys)
            logits = (logits + other) / 2
        return loss, logits, labels

    # --- saving -------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        distributed.average_running_stats(
            self.model
        )  # every rank calls save_model: the statistics rank 0 writes are everyone's
        super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, *args, **kwargs) -> None:
        start = time.perf_counter()
        try:
            with self._averaged():
                return super()._save_checkpoint(*args, **kwargs)
        finally:
            self.side_seconds += time.perf_counter() - start

    def _load_best_model(self) -> None:
        """Restore the selected checkpoint through ``from_pretrained``.

        transformers 5 saves some models (ViT among them) under their original checkpoint key
        names, while the stock ``_load_best_model`` loads the raw file into the live model with
        ``strict=False``: for those models nothing is restored and the last epoch, not the best,
        would be tested. ``from_pretrained`` applies the key conversion, and loading its state
        dict strictly makes any other mismatch an error instead of a warning.
        """
        start = time.perf_counter()  # inside train(), but not training: kept out of the images/s
        try:
            checkpoint = self.state.best_model_checkpoint
            if not checkpoint or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return super()._load_best_model()
            model = self.accelerator.unwrap_model(self.model)
            if not hasattr(type(model), "from_pretrained"):
                return super()._load_best_model()
            best = type(model).from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
            model.load_state_dict(best.state_dict(), strict=True)
        finally:
            self.side_seconds += time.perf_counter() - start

    def create_model_card(self, *args, **kwargs) -> None:
        """The Trainer's card, followed by results.md (this run beside the published figures).

        Overridden rather than appended to once, because ``push_to_hub`` writes the card again
        right before uploading it.
        """
        from pathlib import Path

        super().create_model_card(*args, **kwargs)
        out = Path(self.args.output_dir)
        card, results = out / "README.md", out / "results.md"
        if self.is_world_process_zero() and card.is_file() and results.is_file():
            section = "\n".join(
                "#" + line if line.startswith("#") else line
                for line in results.read_text(encoding="utf-8").splitlines()
            )
            card.write_text(
                card.read_text(encoding="utf-8").rstrip() + "\n\n## Results\n\n" + section + "\n", encoding="utf-8"
            )


def _concat(parts: list[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(parts) if parts else None
