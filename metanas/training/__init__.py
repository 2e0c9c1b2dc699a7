"""Supernet training and the final distillation of exported students.

- `schedule`: the subnets of each step, learning-rate schedules, parameter groups, data order;
- `checkpoint`: `TrainState` and `Checkpoint` (exact resume), RNG state, Ctrl-C handling;
- `trainer`: `SupernetTrainer` and `train_supernet`;
- `artifact`: the trained-supernet file and `load_trained_supernet`;
- `distill`: distilling a standalone exported model from the teacher.
"""

from metanas.training.artifact import (
    RECIPE_FILE,
    SUMMARY_FILE,
    SUPERNET_FILE,
    TOKENIZER_DIR,
    TrainedSupernet,
    load_trained_supernet,
)
from metanas.training.checkpoint import CHECKPOINT_FILE, TrainingDiverged, TrainingInterrupted, TrainState
from metanas.training.trainer import SupernetTrainer, TrainResult, train_supernet

__all__ = [
    "CHECKPOINT_FILE",
    "RECIPE_FILE",
    "SUMMARY_FILE",
    "SUPERNET_FILE",
    "TOKENIZER_DIR",
    "SupernetTrainer",
    "TrainResult",
    "TrainState",
    "TrainedSupernet",
    "TrainingDiverged",
    "TrainingInterrupted",
    "load_trained_supernet",
    "train_supernet",
]
