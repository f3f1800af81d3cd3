"""The training loop: :func:`train_step` on every batch, evaluation after every epoch.

Data flow one way: a :class:`~minires.run_config.TrainConfig` (validated once) -> dataset,
model, optimizer and loaders -> epochs -> the files of the run directory
(:mod:`minires.run_dir`): ``config.json``, the metrics, ``last.h5`` after every epoch and
``best.h5`` for the lowest test error.

Resuming restores the model, the optimizer's momentum, the epoch count, the best error and the
metrics; the loaders draw their shuffling and augmentation from ``(seed, epoch)`` alone, so on
the CPU a resumed run reproduces an uninterrupted one exactly.

The library never prints: progress is reported through the ``on_start``, ``on_batch`` and
``on_epoch`` callbacks. The loss and error sums stay on the device during an epoch and are read
once per epoch, so the GPU is not synchronised after every batch.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from dataclasses import dataclass, field

import minires.functions as F
from minires import models, optim
from minires.atomicfile import check_writable_folder
from minires.autograd import Tensor
from minires.backend import xp_for
from minires.checkpoint import load_checkpoint, restore_model, restore_optimizer, save_checkpoint
from minires.cuda_graph import GraphedTrainStep
from minires.data import Loader, load_dataset
from minires.divergence import check_epoch, check_loss
from minires.errors import DataError, TrainingError
from minires.evaluate import evaluate
from minires.run_config import DEFAULT_RUNS_FOLDER, TrainConfig, merge_resume_config
from minires.run_dir import LAST_CHECKPOINT, RunDirectory

__all__ = ["train", "train_step", "TrainConfig", "TrainResult", "BatchProgress", "TrainingState"]


def train_step(model, optimizer, x, y):
    """One step of stochastic gradient descent on a batch.

    Args:
        model: maps images ``x (N, C, H, W)`` to logits ``(N, classes)``.
        optimizer: an ``optim.SGD`` over ``model.parameters()``.
        x: ``(N, C, H, W)`` float images, y: ``(N,)`` integer labels, on the model's device.
    Returns:
        ``(loss, mistakes)``: the batch's mean cross-entropy and how many images it got wrong,
        as 0-d arrays on the device (reading them would wait for the GPU).
    """
    optimizer.zero_grad()                       # forget the previous batch's gradients
    logits = model(Tensor(x))                   # forward: (N, classes)
    loss = F.softmax_cross_entropy(logits, y)   # mean over the batch
    loss.backward()                             # d loss / d p into every Parameter's .grad
    optimizer.step()                            # p -= lr * (momentum-smoothed) gradient
    mistakes = (logits.data.argmax(axis=1) != y).sum()
    return loss.data, mistakes


@dataclass
class BatchProgress:
    """Passed to ``on_batch`` after each optimizer step (no loss: reading it would sync)."""

    epoch: int          # 1-based epoch being trained
    epochs: int
    batch: int          # 1-based batch within the epoch
    num_batches: int
    images: int         # images in this batch
    lr: float


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``interrupted`` is True when a KeyboardInterrupt stopped the run; ``last_checkpoint`` then
    holds the state after ``epochs_done`` completed epochs (the partial epoch is discarded),
    ``interrupted_at`` is ``(epoch, batch)``: the batch being trained (0 before the first, None
    after the last), ``interrupted_while`` the phase (``starting``, ``training``,
    ``evaluating`` or ``saving``) and ``stop_signal`` the signal's number (SIGINT for Ctrl-C).
    ``model`` is the in-memory model (after an interruption: in the middle of the interrupted
    epoch).
    """

    config: TrainConfig
    run_dir: str
    metrics: list
    epochs_done: int
    best_test_error: float | None
    best_epoch: int
    last_checkpoint: str
    best_checkpoint: str | None
    interrupted: bool = False
    interrupted_at: tuple | None = None
    interrupted_while: str | None = None
    stop_signal: int | None = None
    model: object = field(default=None, repr=False)


# -- building a run ----------------------------------------------------------------------------

def model_spec_for(config: TrainConfig, dataset) -> dict:
    """Keyword arguments of ``minires.models.create`` for this run (stored in checkpoints)."""
    return {"arch": config.arch, "depth": int(config.depth), "width": int(config.width),
            "num_classes": int(dataset.num_classes), "share": config.share,
            "shortcut": config.shortcut, "input_size": int(dataset.image_size),
            "seed": int(config.seed)}


def build_optimizer(model, config: TrainConfig) -> optim.SGD:
    """SGD over the model's unique parameters, optionally without decay on BatchNorm/biases."""
    no_decay = optim.split_decay(model)[1] if config.no_decay_bn else ()
    return optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                     weight_decay=config.weight_decay, nesterov=config.nesterov,
                     no_decay=no_decay)


def build_schedule(config: TrainConfig):
    return optim.make_schedule(config.schedule, config.lr, config.epochs,
                               milestones=config.milestones, gamma=config.gamma,
                               warmup_epochs=config.warmup_epochs)


def build_loaders(config: TrainConfig, dataset) -> tuple[Loader, Loader]:
    """The shuffled, augmented training loader and the plain test loader of a run."""
    # On the GPU both splits live in device memory (xp.asarray is a no-op on the CPU): batches
    # are gathered and augmented there, and only each epoch's small plan crosses the bus.
    xp = xp_for(config.device)
    common = dict(mean=dataset.mean, std=dataset.std, seed=config.seed,
                  prefetch=config.prefetch, xp=xp)
    train_loader = Loader(xp.asarray(dataset.train_images), dataset.train_labels,
                          config.batch_size, shuffle=True, augment=dataset.augment, **common)
    test_images = dataset.test_images[:config.test_subset]
    test_loader = Loader(xp.asarray(test_images), dataset.test_labels[:config.test_subset],
                         config.eval_batch_size, shuffle=False, augment=None, **common)
    return train_loader, test_loader


def run_record(config: TrainConfig, dataset, model, started: str) -> dict:
    """The settings and facts of a run, as ``config.json`` and every checkpoint store them;
    ``started`` is when the run first started (a resumed run keeps it)."""
    return dict(config.to_dict(), started=started, num_classes=int(dataset.num_classes),
                image_size=int(dataset.image_size), num_train=int(len(dataset.train_labels)),
                num_test=int(len(dataset.test_labels[:config.test_subset])),
                num_parameters=int(model.num_parameters()),
                normalize_mean=[float(v) for v in dataset.mean],
                normalize_std=[float(v) for v in dataset.std])


@dataclass
class TrainingState:
    """What carries over from epoch to epoch; every checkpoint saves it with the model."""

    epoch: int = 0                          # completed epochs
    best_test_error: float | None = None
    best_epoch: int = 0
    metrics: list = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, checkpoint) -> TrainingState:
        done = checkpoint.epoch
        return cls(done, checkpoint.best_test_error, checkpoint.best_epoch,
                   [row for row in checkpoint.metrics if row["epoch"] <= done])

    def record(self, row: dict) -> None:
        """Add a completed epoch's metric row (the best one so far if its test error is)."""
        self.metrics.append(row)
        self.epoch = row["epoch"]
        if self.best_test_error is None or row["test_error"] < self.best_test_error:
            self.best_test_error, self.best_epoch = row["test_error"], row["epoch"]

    def copy(self) -> TrainingState:
        return dataclasses.replace(self, metrics=list(self.metrics))


def _run_to_resume(config: TrainConfig) -> RunDirectory:
    if config.run_dir is None:
        raise ValueError("resume needs the run directory of the run to continue")
    return RunDirectory(config.run_dir)


def _checkpoint_to_resume(run: RunDirectory):
    if not os.path.isfile(run.last_checkpoint):
        raise DataError(f"cannot resume: {run.path} has no {LAST_CHECKPOINT} checkpoint (a run "
                        f"stopped before its first one has nothing to resume; start it anew)")
    return load_checkpoint(run.last_checkpoint)


# -- the loop ----------------------------------------------------------------------------------

def train(config: TrainConfig, on_start=None, on_epoch=None, on_batch=None) -> TrainResult:
    """Train a ResNet as ``config`` says, evaluating on the test split after every epoch.

    Args:
        config: the run's settings; ``config.resume`` continues ``config.run_dir``.
        on_start: called with the resolved configuration (its ``run_dir`` named) once the
            settings, the dataset and the checkpoint to resume have been checked and the run
            directory is the run's own, before the first epoch.
        on_epoch: called with each epoch's metric row (a dict with the columns of
            ``minires.run_dir.METRIC_COLUMNS``, plus ``epochs``, the total).
        on_batch: called with a :class:`BatchProgress` after each optimizer step.
    Returns:
        a :class:`TrainResult`. A KeyboardInterrupt (Ctrl-C, a stop signal raised as
        :class:`~minires.errors.Interrupted`, or one raised by a callback) once the first
        checkpoint exists stops the run cleanly: ``last.h5`` keeps the last completed epoch and
        the result says ``interrupted=True``. One that comes earlier goes on to the caller;
        nothing was written then.
    Raises:
        ConfigError: a setting is out of range (a ValueError).
        DeviceError: the device cannot be used (``cuda`` without CuPy or a GPU).
        DataError: the dataset or the checkpoint to resume cannot be read.
        LockedError: another run is writing into the run directory.
        ValueError: the run directory already holds a run (without ``resume``), or ``resume``
            changes a setting that defines the run.
        TrainingError: the training loss, the test loss or a weight became NaN or infinite.
            Nothing of that epoch is saved: the run's files keep the epoch before.
        OSError: a file of the run could not be written (a full disk); the files written
            before stay whole.
    The lock of a killed run found in the run directory is removed with a
    :class:`~minires.lockfile.StaleLockWarning`.
    """
    # A run to resume is claimed before its checkpoint is read: no other run may write into
    # it meanwhile. A new run's folder is claimed once everything has been checked.
    run = _run_to_resume(config) if config.resume else None
    try:
        checkpoint = None
        if run is not None:
            run.claim(resume=True)
            checkpoint = _checkpoint_to_resume(run)
            config = merge_resume_config(checkpoint.config, config)
        config.validate()  # the one check of the settings, before anything is loaded
        if run is None:  # where the new run's folder will be (default: under runs/)
            check_writable_folder(config.run_dir or DEFAULT_RUNS_FOLDER)
        dataset = load_dataset(config.dataset, data_dir=config.data_dir, subset=config.subset,
                               seed=config.seed)
        config = config.resolved(image_size=int(dataset.image_size))
        spec = model_spec_for(config, dataset)
        model = models.create(**spec).to(config.device)
        optimizer, schedule = build_optimizer(model, config), build_schedule(config)
        train_loader, test_loader = build_loaders(config, dataset)
        state = TrainingState()
        if checkpoint is not None:
            if checkpoint.epoch > config.epochs:
                raise ValueError(f"the run already completed {checkpoint.epoch} epochs, more "
                                 f"than epochs={config.epochs}")
            restore_model(model, checkpoint, run.last_checkpoint)
            restore_optimizer(optimizer, checkpoint, config.device)
            state = TrainingState.from_checkpoint(checkpoint)
        else:
            run = RunDirectory(config.run_dir)
            run.claim(resume=False)
        started = (checkpoint.config.get("started") or run.recorded_start()) if checkpoint \
            else None
        record = run_record(config, dataset, model, started or time.strftime("%Y-%m-%dT%H:%M:%S"))
        loop = _Loop(config, run, model, optimizer, schedule, spec, record, state)
        if checkpoint is None:
            # Before any other file: a run stopped before this leaves nothing behind.
            loop.save(run.last_checkpoint)
        return loop.epochs(train_loader, test_loader, on_start, on_epoch, on_batch)
    finally:
        if run is not None:
            run.release()


class _Loop:
    """The epochs of one claimed run: train, evaluate, check, save."""

    def __init__(self, config, run, model, optimizer, schedule, spec, record, state):
        self.config, self.run, self.model, self.optimizer = config, run, model, optimizer
        self.schedule, self.spec, self.record, self.state = schedule, spec, record, state

    def save(self, path):
        state = self.state
        save_checkpoint(path, self.model, self.optimizer, epoch=state.epoch, config=self.record,
                        model_spec=self.spec, best_test_error=state.best_test_error,
                        best_epoch=state.best_epoch, metrics=state.metrics)

    def epochs(self, train_loader, test_loader, on_start, on_epoch, on_batch) -> TrainResult:
        config, run, state = self.config, self.run, self.state
        saved = state.copy()  # what last.h5 holds
        position = _Position(epoch=state.epoch + 1)
        step = GraphedTrainStep(train_step) if config.cuda_graph else train_step
        try:
            run.write_config(self.record)
            run.write_metrics(saved.metrics)
            if on_start is not None:
                on_start(config)
            for epoch in range(state.epoch + 1, config.epochs + 1):
                position.epoch, position.phase = epoch, "training"
                row = _run_epoch(self.model, self.optimizer, self.schedule, train_loader,
                                 test_loader, config, position, on_batch, step)
                check_epoch(row, self.model, config)
                position.phase = "saving"
                state.record(row)
                if state.best_epoch == epoch:
                    # best.h5 before last.h5: an interruption between the two repeats this
                    # epoch on resume (last.h5 is behind), which rewrites best.h5 alike.
                    self.save(run.best_checkpoint)
                self.save(run.last_checkpoint)
                saved = state.copy()
                run.write_metrics(saved.metrics)
                if on_epoch is not None:
                    on_epoch(dict(row, epochs=config.epochs))
        except KeyboardInterrupt as stop:
            # last.h5 holds the last completed epoch; the partial one is dropped, so that a
            # resume repeats it from its start with the same batches.
            run.write_metrics(saved.metrics)
            return self._result(saved, position, getattr(stop, "signum", signal.SIGINT))
        except TrainingError as exc:
            raise TrainingError(f"{exc}. Nothing of epoch {position.epoch} was saved: "
                                f"{run.last_checkpoint} holds epoch {saved.epoch}") from None
        return self._result(saved, None, None)

    def _result(self, saved, position, stop_signal) -> TrainResult:
        run = self.run
        return TrainResult(
            config=self.config, run_dir=run.path, metrics=saved.metrics,
            epochs_done=saved.epoch, best_test_error=saved.best_test_error,
            best_epoch=saved.best_epoch, last_checkpoint=run.last_checkpoint,
            best_checkpoint=run.best_checkpoint if saved.best_epoch else None,
            interrupted=position is not None,
            interrupted_at=None if position is None else (position.epoch, position.batch),
            interrupted_while=None if position is None else position.phase,
            stop_signal=stop_signal, model=self.model)


@dataclass
class _Position:
    """Where the loop is: the epoch, its phase (``starting``, ``training``, ``evaluating``,
    ``saving``) and the batch being trained (0 before the first, None after the last)."""

    epoch: int
    batch: int | None = 0
    phase: str = "starting"


def _run_epoch(model, optimizer, schedule, train_loader, test_loader, config, position,
               on_batch, step) -> dict:
    """Train one epoch (``position.epoch``), then evaluate; returns the epoch's metric row."""
    started = time.perf_counter()
    train_loss, train_error = _train_epoch(model, optimizer, schedule, train_loader, config,
                                           position, on_batch, step)
    train_seconds = time.perf_counter() - started
    position.batch, position.phase = None, "evaluating"
    test_loss, test_error = evaluate(model, test_loader)
    return {"epoch": position.epoch, "lr": float(schedule(position.epoch - 1)),
            "train_loss": train_loss, "train_error": train_error, "test_loss": test_loss,
            "test_error": test_error, "seconds": time.perf_counter() - started,
            "images_per_s": len(train_loader.labels) / train_seconds}


def _train_epoch(model, optimizer, schedule, loader, config, position, on_batch, step):
    """One pass over the training set; returns ``(mean loss, error rate)``."""
    epoch, num_batches = position.epoch, len(loader)
    position.batch = 0
    model.train()
    loader.set_epoch(epoch - 1)
    # On the CPU reading a loss costs nothing, so a diverging run stops at once; on the GPU
    # the losses stay there and are looked at only if the epoch's sum is not finite.
    stop_at_once = config.device == "cpu"
    loss_sum = mistakes_sum = 0
    losses = []
    for batch, (x, y) in enumerate(loader, start=1):
        position.batch = batch
        # The rate follows the schedule within the epoch (warm-up and cosine are smooth).
        optimizer.lr = float(schedule(epoch - 1 + (batch - 1) / num_batches))
        loss, mistakes = step(model, optimizer, x, y)
        loss_sum, mistakes_sum = loss_sum + loss * len(y), mistakes_sum + mistakes
        if stop_at_once:
            check_loss(float(loss), epoch, batch, num_batches, optimizer.lr, config)
        else:
            losses.append(loss)
        if on_batch is not None:
            on_batch(BatchProgress(epoch, config.epochs, batch, num_batches, len(y),
                                   optimizer.lr))
    if not math.isfinite(float(loss_sum)):
        for batch, loss in enumerate(losses, start=1):  # the first bad batch, found only now
            check_loss(float(loss), epoch, batch, num_batches, optimizer.lr, config)
        check_loss(float(loss_sum), epoch, num_batches, num_batches, optimizer.lr, config)
    count = len(loader.labels)
    return float(loss_sum) / count, float(mistakes_sum) / count
