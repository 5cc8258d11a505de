"""The trainer: masked multi-task training with a seeded stratified split, per-epoch checkpoints and resume.

  split.py    the seeded stratified split and per-epoch seeds
  batches.py  images and per-head targets/masks on the device, augmentation
  optim.py    optimiser (no weight decay on biases / norm parameters) and the per-step schedule (warm-up, cosine)
  loop.py     Run: set-up, the step (weighting strategy backward), an epoch, validation
  state.py    TrainResult, TrainingCancelled, checkpoint save/load
  trainer.py  train(): the epoch loop, the epoch plan ("auto", time budget), early stopping, best epoch

A head with no labelled sample in a batch does not move: after the strategy's backward its parameters (and its
strategy parameters) get `.grad = None`, which makes AdamW/SGD skip them entirely (no momentum, no weight decay).
"""

from service.ml.train.batches import augment
from service.ml.train.loop import Run
from service.ml.train.split import epoch_seed, stratified_split
from service.ml.train.state import (
    CHECKPOINT,
    CHECKPOINT_VERSION,
    TrainingCancelled,
    TrainResult,
    checkpoint_history,
)
from service.ml.train.trainer import resolve_device, train

_Run = Run  # v1 name

__all__ = ["CHECKPOINT", "CHECKPOINT_VERSION", "Run", "TrainResult", "TrainingCancelled", "augment",
           "checkpoint_history", "epoch_seed", "resolve_device", "stratified_split", "train"]
