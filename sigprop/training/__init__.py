"""Training: TrainConfig + scales, the loop (probes, eval, checkpoints, DDP), and `train()`."""

from sigprop.training.config import SCALES, TrainConfig, get_config
from sigprop.training.loop import Run, TrainingDiverged, train
from sigprop.training.schedule import lr_at

__all__ = ["SCALES", "Run", "TrainConfig", "TrainingDiverged", "get_config", "lr_at", "train"]
