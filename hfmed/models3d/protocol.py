"""The training protocol behind MedMNIST v2's published 3D rows, for ``--preset medmnist`` on 3D.

``../shared/reference/baselines.md`` gives the 3D table's figures but not its protocol (its
protocol paragraph is the 2D one). What follows is read from the training script itself,
github.com/MedMNIST/experiments ``MedMNIST3D/train_and_eval_pytorch.py`` (commit 11409d84), and
its ``models.py`` (commit 853dee5f):

- from scratch: ResNet-18 or ResNet-50 (``--model_flag``, default resnet18) built as 2D networks
  with a 3x3 stride-1 stem and no max-pooling, then converted by ACSConv's ``ACSConverter``,
  ``Conv3dConverter`` or ``Conv2_5dConverter`` (``--conv``, default ``ACSConv``), with batch norm
  made synchronised (one GPU by default, so plain batch norm);
- 100 epochs (``--num_epochs`` default), batch 32 (``--batch_size`` default), shuffled;
- Adam, lr 0.001, PyTorch's default betas and no weight decay; ``MultiStepLR`` x0.1 at epochs
  50 and 75 (0.5 and 0.75 of the epochs), stepped once per epoch;
- ``nn.CrossEntropyLoss`` for every 3D subset (all are binary or multi-class; binary tasks have
  two softmax outputs);
- one input channel unless ``--as_rgb`` copies it to three;
- model selection: the script records the epoch with the best validation AUC, but keeps
  ``best_model = model`` (the same object, not a copy), so the final evaluation and the saved
  ``best_model.pth`` are of the last epoch's weights. Which of the two the published rows report
  is not stated in the reference folder.

Not stated in the reference folder (the script's ``Transform3D``, in its ``utils.py``, is not
there): the intensity scaling and any augmentation of the volumes, and which runs used
``--shape_transform`` (scale the binary shape volumes of AdrenalMNIST3D / VesselMNIST3D by a
random factor in training and 0.5 at evaluation) or ``--as_rgb``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol3D:
    """A training recipe in the terms ``TrainingArguments`` takes."""

    num_train_epochs: int
    per_device_train_batch_size: int
    optimizer: str  # torch.optim class name
    learning_rate: float
    weight_decay: float
    lr_milestones: tuple[float, ...]  # fractions of the epochs at which lr is multiplied by lr_gamma
    lr_gamma: float
    selection_metric: str  # validation metric the script tracks
    default_arch: str  # hfmed.models3d.FAMILIES name of the script's default --conv
    default_arch_size: str  # hfmed.models3d.ARCH_SIZES name of the script's default --model_flag

    def milestone_epochs(self) -> tuple[int, ...]:
        """The epochs after which the learning rate drops (50 and 75 for 100 epochs)."""
        return tuple(int(f * self.num_train_epochs) for f in self.lr_milestones)


#: MedMNIST v2's 3D protocol, as its training script sets it (see the module docstring).
PUBLISHED_3D = Protocol3D(
    num_train_epochs=100,
    per_device_train_batch_size=32,
    optimizer="Adam",
    learning_rate=1e-3,
    weight_decay=0.0,
    lr_milestones=(0.5, 0.75),
    lr_gamma=0.1,
    selection_metric="auc",
    default_arch="acs",
    default_arch_size="base",
)
