"""Weight averaging: an exponential moving average of the weights, evaluated and kept in their place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from transformers import TrainerCallback

from hfmed.errors import UserError

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hfmed.training.trainer import MedTrainer


class WeightAverage:
    """An exponential moving average of a model's parameters, for evaluating and keeping.

    On a few hundred training images the weights of one step are a noisy draw; their running
    average scores more steadily from epoch to epoch, which is what selecting the best epoch on a
    small validation split needs. Buffers (BatchNorm statistics) are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = self.checked(decay)
        self.params = {name for name, _ in model.named_parameters()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @staticmethod
    def checked(decay: float) -> float:
        if not 0.0 < decay < 1.0:
            raise UserError(f"--ema_decay must be between 0 and 1 (exclusive), got {decay}")
        return decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, value in model.state_dict().items():
            average = self.shadow[name]
            if name in self.params and value.dtype.is_floating_point:
                average.lerp_(value.detach(), 1.0 - self.decay)
            else:
                average.copy_(value)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(own)


class AverageEachStep(TrainerCallback):
    """Starts the average when training starts and updates it after every optimizer step."""

    def __init__(self, trainer: MedTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        # Here, not in train(): a checkpoint being resumed has been loaded into the model by now.
        self.trainer.weight_average = WeightAverage(self.trainer.model, self.trainer.ema_decay)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if self.trainer.weight_average is not None:
            self.trainer.weight_average.update(self.trainer.model)
