"""A diverging run: the checks that stop it before anything of it is saved, and the advice.

On the CPU every batch's training loss is checked as it comes; after each epoch the training
loss, the test loss and every weight and BatchNorm statistic must be finite before the epoch
counts. A model whose training loss is merely huge can already have overflowed its BatchNorm
statistics, so that every test image gets NaN logits: such a model must not be saved, and its
test error (the arg max of NaN logits is a class like any other) must never count as the best.
"""
from __future__ import annotations

import math

from minires.backend import get_array_module
from minires.errors import TrainingError


def check_loss(value: float, epoch: int, batch: int, num_batches: int, lr: float,
               config) -> None:
    """Raise TrainingError when a batch's training loss ``value`` is NaN or infinite."""
    if not math.isfinite(value):
        raise TrainingError(f"the training loss became {value} at epoch {epoch}, batch {batch} "
                            f"of {num_batches}: {divergence_advice(config, lr)}")


def check_epoch(row: dict, model, config) -> None:
    """Raise TrainingError when an epoch's metric ``row`` has a loss that is not finite, or
    ``model`` a parameter or buffer holding a NaN or an infinity."""
    where = f"at epoch {row['epoch']}"
    for key, what in (("train_loss", "the training loss"), ("test_loss", "the test loss")):
        if not math.isfinite(row[key]):
            raise TrainingError(f"{what} became {row[key]} {where}: "
                                f"{divergence_advice(config, row['lr'])}")
    name = first_non_finite(model.state_dict())
    if name is not None:
        raise TrainingError(f"the model's {name} became NaN or infinite {where}: "
                            f"{divergence_advice(config, row['lr'])}")


def first_non_finite(arrays: dict):
    """The name of the first array holding a NaN or an infinity, or None (one device read)."""
    if not arrays:
        return None
    xp = get_array_module(*arrays.values())
    finite = xp.stack([xp.isfinite(a).all() for a in arrays.values()])
    if bool(finite.all()):
        return None
    return next(name for name, ok in zip(arrays, finite.tolist()) if not ok)


def divergence_advice(config, lr: float) -> str:
    """What to change when a run with settings ``config`` diverged at learning rate ``lr``."""
    advice = f"the run diverged at learning rate {lr:g}; start a new run with a lower --lr " \
             f"(this one has {config.lr:g})"
    if config.gamma > 1 and config.schedule in ("step", "multistep"):
        advice += (f" or a --gamma below 1 (this one has {config.gamma:g}, so every milestone "
                   f"raises the rate)")
    return advice
