"""train_hf.py flags the training benchmarks share."""

#: A run that only trains: no evaluation, no checkpoint, no progress bar, so that its wall time is
#: the training loop's and nothing else's.
TRAINING_ONLY = (
    "--eval_strategy",
    "no",
    "--save_strategy",
    "no",
    "--load_best_model_at_end",
    "false",
    "--disable_tqdm",
    "true",
)
