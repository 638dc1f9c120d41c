"""Training: losses, the engine, checkpoints and data-parallel helpers."""

from .checkpoint import latest_good, load_checkpoint, save_checkpoint
from .engine import TrainingDiverged, evaluate, train
from .losses import cumulative_accuracy, mean_output_ce, tet_loss
from .step import train_step

__all__ = ["TrainingDiverged", "cumulative_accuracy", "evaluate", "latest_good", "load_checkpoint",
           "mean_output_ce", "save_checkpoint", "tet_loss", "train", "train_step"]
