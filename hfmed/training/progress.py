"""``progress.json`` in a run's folder after every epoch: how far it is and how long it took.

``hfmed benchmark`` reads it while its runs are still going, to learn the machine's real speed
from the first epochs (rather than from finished runs only) and cut its plan in time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

PROGRESS_FILE = "progress.json"


class ProgressFile(TrainerCallback):
    """Writes ``{"epoch", "seconds", "train_started", "rows", "first"}`` after each epoch's training
    and again after its checkpoint: epochs done, seconds since ``started`` (a ``time.perf_counter()``
    value: the start of the run), when training began (what came before is start-up), training
    rows per epoch, and ``first``: the first epoch this process finished (1, or later when it
    resumed) and its ``seconds``. A first epoch pays one-off costs (cold caches, first evaluation
    and checkpoint): a reader measures the speed after it, not from it."""

    def __init__(self, folder: str | Path, started: float, rows: int) -> None:
        self.path, self.started, self.rows = Path(folder) / PROGRESS_FILE, started, int(rows)
        self.train_started: float | None = None
        self.first: dict[str, float] | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.train_started = time.perf_counter() - self.started

    def _write(self, state: TrainerState) -> None:
        if not state.is_world_process_zero or not state.epoch:
            return
        seconds = time.perf_counter() - self.started
        if self.first is None or self.first["epoch"] == state.epoch:  # its checkpoint's write ends that epoch
            self.first = {"epoch": float(state.epoch), "seconds": seconds}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "epoch": float(state.epoch),
                    "seconds": seconds,
                    "train_started": self.train_started or 0.0,
                    "rows": self.rows,
                    "first": self.first,
                }
            )
        )
        tmp.replace(self.path)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self._write(state)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self._write(state)  # after the epoch's evaluation and checkpoint: the whole cost of an epoch
