"""Run train_hf.py processes side by side on every core or every GPU, with a deadline.

On CPUs each run gets one torch thread and there are as many runs as cores: small models at 28 px
do not scale across threads, and separate processes do (as benchmarks/cv_recipes.py found). With
GPUs each run gets one GPU and an equal share of the cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hfmed.errors import UserError

# train_hf.py is the checkout's script, not part of the installed package: an editable install
# finds it beside the package, a regular install in the folder the command is run from.
CHECKOUT = Path(__file__).resolve().parents[2]


def train_script(cwd: Path | None = None) -> Path:
    """The train_hf.py that runs the protocol's trainings."""
    for folder in (CHECKOUT, Path(cwd or Path.cwd()).resolve()):
        if (folder / "train_hf.py").is_file():
            return folder / "train_hf.py"
    raise UserError(
        "hfmed benchmark runs train_hf.py from the hfmed source checkout, and none was "
        "found; run it from the checkout's folder"
    )


@dataclass(frozen=True)
class Slot:
    threads: int
    gpu: int | None = None


def slots(limit: int | None = None) -> list[Slot]:
    """One slot per GPU when there are GPUs, else one per core; ``limit`` sets the number (GPUs are
    then shared in turn)."""
    cores = os.cpu_count() or 1
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        gpus = 0
    found = [Slot(max(1, cores // gpus), i) for i in range(gpus)] if gpus else [Slot(1) for _ in range(cores)]
    return [found[i % len(found)] for i in range(limit or len(found))]


@dataclass
class Job:
    out: Path
    args: list[str]  # train_hf.py flags, --output_dir excluded
    estimate: float = 0.0

    @property
    def done(self) -> bool:
        return (self.out / "results.json").is_file()

    @property
    def log(self) -> Path:
        return self.out.with_suffix(".log")


def _launch(job: Job, slot: Slot) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(slot.threads), "MKL_NUM_THREADS": str(slot.threads)}
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
    if job.out.exists():  # a run this benchmark stopped half-way (no results.json): start it afresh
        shutil.rmtree(job.out)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    script = train_script()
    command = [sys.executable, str(script), *job.args, "--output_dir", str(job.out)]
    with job.log.open("w") as handle:
        return subprocess.Popen(command, cwd=script.parent, stdout=handle, stderr=subprocess.STDOUT, env=env)


def folds_per_round(slots: int, candidates: int) -> int:
    """How many folds a search round takes for ``candidates`` with runs to do: the slots shared
    among them, or one fold more when that fills the slots better (three candidates on two slots:
    two folds are three full waves, where one fold leaves a slot idle for its last run)."""
    slots, candidates = max(1, slots), max(1, candidates)
    base = max(1, slots // candidates)

    def idle(folds: int) -> float:  # the share of slot time left idle by the round's waves
        jobs = folds * candidates
        return (-jobs % slots) / (jobs + -jobs % slots)

    return base + 1 if idle(base + 1) < idle(base) else base


def run_jobs(
    jobs: list[Job],
    pool: list[Slot],
    deadline: float | None = None,
    poll: float = 0.5,
    watch: Callable[[], bool] | None = None,
) -> dict[Path, str]:
    """Run the jobs that have no results.json yet; returns each job's status:
    ``kept`` (done before), ``done``, ``failed``, ``stopped`` (the deadline, a ``time.monotonic()``
    value, passed while it ran, or before it could start) or ``cancelled`` (``watch``, called at
    every poll while jobs run, returned True: the caller has changed its plan)."""
    status = {job.out: "kept" for job in jobs if job.done}
    pending = [job for job in jobs if not job.done]
    free = list(pool)
    running: list[tuple[subprocess.Popen, Job, Slot]] = []
    cancelled = False
    try:
        while pending or running:
            late = deadline is not None and time.monotonic() > deadline
            while pending and free and not late and not cancelled:
                job, slot = pending.pop(0), free.pop(0)
                running.append((_launch(job, slot), job, slot))
            if not cancelled and running and watch is not None and watch():
                cancelled = True
            if late or cancelled:
                for job in pending:
                    status[job.out] = "cancelled" if cancelled else "stopped"
                pending = []
                for process, job, _ in running:
                    process.terminate()
            time.sleep(poll)
            for entry in list(running):
                process, job, slot = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                free.append(slot)
                ended = "done" if process.returncode == 0 and job.done else None
                status[job.out] = ended or ("cancelled" if cancelled else "stopped" if late else "failed")
    except BaseException:
        for process, _, _ in running:
            process.terminate()
        raise
    return status
