"""Training: TrainConfig + scales, the loop (probes, eval, checkpoints, DDP), and `train()`."""

from sigprop.train.config import SCALES, TrainConfig, get_config
from sigprop.train.loop import Run, TrainingDiverged, train
from sigprop.train.schedule import lr_at

__all__ = ["SCALES", "Run", "TrainConfig", "TrainingDiverged", "get_config", "lr_at", "train"]
