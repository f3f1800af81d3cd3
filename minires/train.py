"""The training loop: SGD on a ResNet, evaluation every epoch, metrics and checkpoints.

Data flow one way: a :class:`TrainConfig` -> dataset + model + optimizer -> epochs -> files in the
run directory:

``config.json``
    the resolved configuration, the model's parameter count, package versions, device, Python.
``metrics.jsonl`` and ``metrics.csv``
    one row per epoch: ``epoch, lr, train_loss, train_error, test_loss, test_error, seconds,
    images_per_s``. Errors are fractions in [0, 1]; ``lr`` is the rate at the start of the
    epoch; ``seconds`` is the whole epoch (training and evaluation); ``images_per_s`` counts
    training images over training time.
``last.h5``
    checkpoint after the last completed epoch (also written before the first epoch).
``best.h5``
    checkpoint of the epoch with the lowest test error.

Every file is written to a temporary name and renamed, so an interruption never leaves a
half-written file. Resuming restores the model, the optimizer's momentum, the epoch count, the
best error and the metrics; the loaders draw their shuffling and augmentation from
``(seed, epoch)`` alone, so on the CPU a resumed run reproduces an uninterrupted one exactly.

The library never prints: progress is reported through the ``on_batch`` and ``on_epoch``
callbacks. The loss and error sums stay on the device during an epoch and are read once per
epoch, so the GPU is not synchronised after every batch.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import minires.functions as F
from minires import __version__
from minires.autograd import Tensor, no_grad
from minires.backend import resolve_device, xp_for
from minires.checkpoint import (atomic_write, load_checkpoint, restore_model, restore_optimizer,
                                save_checkpoint)
from minires.errors import DataError, TrainingError

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
                  "seconds", "images_per_s")
ARCHS = ("resnet", "wrn")
SHARES = ("none", "block", "stage")
SHORTCUTS = ("A", "B")
SCHEDULES = ("step", "multistep", "cosine", "constant")
EMBEDDED = "embedded"
# He et al. 2016 train CIFAR for 64k iterations at batch 128 (164 epochs); Chrabaszcz et al. 2017
# train downsampled ImageNet for 40 epochs. The embedded set is for a first run: 3 epochs of
# ResNet-20 take under two minutes on 2 CPU cores and reach roughly 70% test error (chance: 90%).
DEFAULT_EPOCHS = {"cifar10": 164, "cifar100": 164, "imagenet16": 40, "imagenet32": 40,
                  "imagenet64": 40, EMBEDDED: 3}
OTHER_DEFAULT_EPOCHS = 164
# Defaults that depend on the architecture (a Wide ResNet's depth also on the image size).
RESNET_DEPTH = 20
WRN_WIDTH = 10
# Fields that define a run: resuming with a different value would not continue the same run.
RUN_FIELDS = ("dataset", "arch", "depth", "width", "share", "shortcut", "batch_size", "lr",
              "momentum", "weight_decay", "nesterov", "schedule", "milestones", "gamma",
              "warmup_epochs", "seed", "subset", "test_subset", "no_decay_bn",
              "eval_batch_size")


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` fields are resolved by :meth:`resolved`.

    Attributes:
        dataset: a name of ``minires.data.DATASETS`` (``embedded`` is generated in memory) or
            the path of a prepared ``.h5`` file. data_dir: where prepared datasets live.
        arch: ``resnet`` (He et al., CIFAR style) or ``wrn`` (wide ResNet).
        depth: network depth; None -> 20 for resnet (6n+2: 8, 14, 20, 32, 44, 56, 110), and
            for wrn 2nS+4 with n=4 (20, 28, 36 for 16, 32, 64-pixel images).
        width: widening factor; None -> 1 for resnet (the only value), 10 for wrn.
        share: ``none``, ``block`` (both 3x3 convolutions of a block share one weight, the
            paper's scheme) or ``stage``.
        shortcut: ``A`` (zero-padding identity) or ``B`` (1x1 projection) where shapes change;
            None -> A for resnet, B (the only value) for wrn.
        epochs: None -> a per-dataset default (:data:`DEFAULT_EPOCHS`).
        batch_size, lr, momentum, weight_decay, nesterov: SGD settings.
        schedule: ``step`` (x ``gamma`` at 50% and 75% of ``epochs``, He et al.),
            ``multistep`` (x ``gamma`` at each of ``milestones``), ``cosine`` or ``constant``.
        milestones: epochs where ``multistep`` drops the rate (only for multistep).
        warmup_epochs: linear warm-up from 0 over this many epochs.
        seed: seeds the weights, the data subset, the shuffling and the augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.
        run_dir: where files are written; None -> :func:`default_run_dir`.
        subset: train on only the first this many training images (None: all).
        test_subset: evaluate on only the first this many test images (None: all).
        no_decay_bn: exempt BatchNorm parameters and biases from weight decay.
        prefetch: prepare the next batch in a background thread.
        eval_batch_size: batch size for evaluation; None -> max(batch_size, 256).
        resume: continue the run in ``run_dir`` from its ``last.h5``.
    """

    dataset: str = EMBEDDED
    data_dir: str | None = None
    arch: str = "resnet"
    depth: int | None = None
    width: int | None = None
    share: str = "none"
    shortcut: str | None = None
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: str = "step"
    milestones: list | None = None
    gamma: float = 0.1
    warmup_epochs: float = 0
    seed: int = 0
    device: str = "auto"
    run_dir: str | None = None
    subset: int | None = None
    test_subset: int | None = None
    no_decay_bn: bool = False
    prefetch: bool = False
    eval_batch_size: int | None = None
    resume: bool = False

    def resolved(self, image_size: int | None = None) -> "TrainConfig":
        """A copy with depth, width, shortcut, epochs, eval batch size, device and run_dir
        filled in. ``image_size`` (of the dataset) sets a Wide ResNet's default depth; without
        it the size is guessed from the dataset name."""
        from minires.models import default_wrn_depth
        config = dataclasses.replace(self)
        config.validate()
        if config.arch == "resnet":
            config.depth = RESNET_DEPTH if config.depth is None else config.depth
            config.width = 1 if config.width is None else config.width
            config.shortcut = "A" if config.shortcut is None else config.shortcut
        else:
            if config.depth is None:
                size = image_size or {"imagenet16": 16, "imagenet64": 64}.get(config.dataset, 32)
                config.depth = default_wrn_depth(int(size))
            config.width = WRN_WIDTH if config.width is None else config.width
            config.shortcut = "B" if config.shortcut is None else config.shortcut
        if config.epochs is None:
            config.epochs = DEFAULT_EPOCHS.get(config.dataset, OTHER_DEFAULT_EPOCHS)
        if config.milestones is not None:
            config.milestones = [int(m) for m in config.milestones]
        if config.eval_batch_size is None:
            config.eval_batch_size = max(config.batch_size, 256)
        config.device = resolve_device(config.device)
        if config.run_dir is None:
            config.run_dir = default_run_dir(config)
        config.run_dir = os.fspath(config.run_dir)
        return config

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        _choice("arch", self.arch, ARCHS)
        _choice("share", self.share, SHARES)
        if self.shortcut is not None:
            _choice("shortcut", self.shortcut, SHORTCUTS)
        _choice("schedule", self.schedule, SCHEDULES)
        for name in ("depth", "width", "batch_size"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        for name in ("subset", "test_subset"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of images, got "
                                 f"{getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("momentum, weight_decay and warmup_epochs must not be negative")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build a config from a dict, ignoring keys that are not fields (versions, ...)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def dataset_label(dataset: str) -> str:
    """The dataset's short name for run directories: a path becomes its file stem."""
    base = os.path.basename(os.fspath(dataset))
    return base[:-3] if base.endswith(".h5") else base


def model_label(config) -> str:
    """``resnet20``, ``wrn16-4``... (parts not yet resolved are left out)."""
    label = f"{config.arch}{config.depth or ''}"
    return label + f"-{config.width}" if config.arch == "wrn" and config.width else label


def default_run_dir(config, now: float | None = None) -> str:
    """``runs/<dataset>-<arch><depth>-<share>-<YYYYmmdd-HHMMSS>`` under the working directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return os.path.join("runs", f"{dataset_label(config.dataset)}-{model_label(config)}-"
                                f"{config.share}-{stamp}")


# -- progress reports passed to the callbacks --------------------------------------------------

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
    holds the state after ``epochs_done`` completed epochs (the partial epoch is discarded) and
    ``interrupted_at`` is ``(epoch, batch)``. ``model`` is the in-memory model (after an
    interruption: in the middle of the interrupted epoch).
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
    model: object = field(default=None, repr=False)


# -- building blocks ---------------------------------------------------------------------------

def model_spec_for(config: TrainConfig, dataset) -> dict:
    """Keyword arguments of ``minires.models.create`` for this run (stored in checkpoints)."""
    return {"arch": config.arch, "depth": int(config.depth), "width": int(config.width),
            "num_classes": int(dataset.num_classes), "share": config.share,
            "shortcut": config.shortcut, "input_size": int(dataset.image_size),
            "seed": int(config.seed)}


def build_optimizer(model, config: TrainConfig):
    """SGD over the model's unique parameters, optionally without decay on BatchNorm/biases."""
    from minires import optim
    no_decay = optim.split_decay(model)[1] if config.no_decay_bn else ()
    return optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                     weight_decay=config.weight_decay, nesterov=config.nesterov,
                     no_decay=no_decay)


def build_schedule(config: TrainConfig):
    from minires import optim
    return optim.make_schedule(config.schedule, config.lr, config.epochs,
                               milestones=config.milestones, gamma=config.gamma,
                               warmup_epochs=config.warmup_epochs)


def evaluate(model, loader) -> tuple[float, float]:
    """Mean cross-entropy and error rate of ``model`` over ``loader``, in eval mode, no graph.

    Sums stay on the device and are read once at the end. The model's train/eval mode is
    restored afterwards.
    """
    was_training = getattr(model, "training", True)
    model.eval()
    loss_sum = wrong = None
    count = 0
    try:
        with no_grad():
            for x, y in loader:
                logits = model(Tensor(x))
                loss = F.softmax_cross_entropy(logits, y).data * len(y)
                miss = (logits.data.argmax(axis=1) != y).sum()
                loss_sum = loss if loss_sum is None else loss_sum + loss
                wrong = miss if wrong is None else wrong + miss
                count += len(y)
    finally:
        if was_training:
            model.train()
    if count == 0:
        raise DataError("evaluation needs at least one test image")
    return float(loss_sum) / count, float(wrong) / count


def package_versions(device: str) -> dict:
    """Versions of minires and its dependencies (and CuPy when it is installed)."""
    from importlib import metadata
    versions = {"minires": __version__}
    for name in ("numpy", "numba", "h5py", "click"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    for name in ("cupy-cuda13x", "cupy-cuda12x", "cupy"):
        try:
            versions["cupy"] = metadata.version(name)
            break
        except metadata.PackageNotFoundError:
            continue
    return versions


def _write_text(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    atomic_write(path, write)


def _metrics_text(rows) -> tuple[str, str]:
    """The contents of metrics.jsonl and metrics.csv for ``rows``."""
    jsonl = "".join(json.dumps({k: row[k] for k in METRIC_COLUMNS}) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    return jsonl, buffer.getvalue()


def _write_metrics(run_dir, rows) -> None:
    # Rewritten whole each epoch (atomically): a few kB, and a resume that truncates rows
    # past the checkpoint cannot leave the two files disagreeing.
    jsonl, text = _metrics_text(rows)
    _write_text(os.path.join(run_dir, "metrics.jsonl"), jsonl)
    _write_text(os.path.join(run_dir, "metrics.csv"), text)


def merge_resume_config(saved: dict, given: TrainConfig) -> TrainConfig:
    """The configuration of a resumed run: the saved one, with the given epochs/device/...

    ``epochs``, ``device``, ``data_dir`` and ``prefetch`` may change on resume (None keeps the
    saved value); any other field that differs from the saved run raises ValueError.
    """
    saved_config = TrainConfig.from_dict(saved)
    differences = []
    for name in RUN_FIELDS:
        value, before = getattr(given, name), getattr(saved_config, name)
        if value is not None and _normal(value) != _normal(before):
            differences.append(f"{name}={value!r} (the run has {before!r})")
    if differences:
        raise ValueError("cannot resume with different settings: " + ", ".join(differences))
    merged = dataclasses.replace(saved_config, resume=True, run_dir=given.run_dir,
                                 device=given.device, prefetch=given.prefetch)
    if given.epochs is not None:
        merged.epochs = given.epochs
    if given.data_dir is not None:
        merged.data_dir = given.data_dir
    return merged


def _normal(value):
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else value


# -- the loop ----------------------------------------------------------------------------------

def train(config: TrainConfig, on_epoch=None, on_batch=None) -> TrainResult:
    """Train a ResNet as ``config`` says, evaluating on the test split after every epoch.

    Args:
        config: the run's settings; ``config.resume`` continues ``config.run_dir``.
        on_epoch: called with each epoch's metric row (a dict with :data:`METRIC_COLUMNS`,
            plus ``epochs``, the total).
        on_batch: called with a :class:`BatchProgress` after each optimizer step.
    Returns:
        a :class:`TrainResult`. A KeyboardInterrupt (Ctrl-C, or raised by a callback) stops the
        run cleanly: ``last.h5`` keeps the last completed epoch, and the result says
        ``interrupted=True``.
    Raises:
        TrainingError: the training loss became NaN or infinite (names the epoch and batch).
        DataError: the dataset or the checkpoint to resume cannot be read.
        ValueError: a setting is out of range, the run directory already holds a run (without
            ``resume``), or ``resume`` changes a setting that defines the run.
    """
    from minires import data as mdata

    if not config.resume:
        config.validate()  # before the dataset is loaded: bad settings fail fast
    run_dir = os.fspath(config.run_dir) if config.run_dir is not None else None
    checkpoint = None
    if config.resume:
        if run_dir is None:
            raise ValueError("resume needs the run directory of the run to continue")
        last_path = os.path.join(run_dir, "last.h5")
        if not os.path.isfile(last_path):
            raise DataError(f"cannot resume: {run_dir} has no last.h5 checkpoint")
        checkpoint = load_checkpoint(last_path)
        config = merge_resume_config(checkpoint.config, config)
    dataset = mdata.load_dataset(config.dataset, data_dir=config.data_dir, subset=config.subset,
                                 seed=config.seed)
    config = config.resolved(image_size=int(dataset.image_size))
    run_dir = config.run_dir
    last_path = os.path.join(run_dir, "last.h5")
    best_path = os.path.join(run_dir, "best.h5")
    if not config.resume and os.path.exists(last_path):
        raise ValueError(f"{run_dir} already holds a run (last.h5); resume it or choose "
                         f"another run directory")
    if checkpoint is not None and checkpoint.epoch > config.epochs:
        raise ValueError(f"the run already completed {checkpoint.epoch} epochs, more than "
                         f"epochs={config.epochs}")

    xp = xp_for(config.device)
    from minires import models
    spec = model_spec_for(config, dataset)
    model = models.create(**spec).to(config.device)
    optimizer = build_optimizer(model, config)
    schedule = build_schedule(config)
    # On the GPU both splits live in device memory (xp.asarray is a no-op on the CPU): batches
    # are gathered and augmented there, and only each epoch's small plan crosses the bus.
    train_loader = mdata.Loader(xp.asarray(dataset.train_images), dataset.train_labels,
                                config.batch_size, shuffle=True, augment=dataset.augment,
                                mean=dataset.mean, std=dataset.std, seed=config.seed,
                                prefetch=config.prefetch, xp=xp)
    test_images, test_labels = dataset.test_images, dataset.test_labels
    if config.test_subset is not None:
        test_images, test_labels = (test_images[:config.test_subset],
                                    test_labels[:config.test_subset])
    test_loader = mdata.Loader(xp.asarray(test_images), test_labels, config.eval_batch_size,
                               shuffle=False, augment=None, mean=dataset.mean, std=dataset.std,
                               seed=config.seed, prefetch=config.prefetch, xp=xp)
    num_batches = len(train_loader)
    num_train = len(dataset.train_labels)

    stored = config.to_dict()
    stored.update(num_classes=int(dataset.num_classes), image_size=int(dataset.image_size),
                  num_train=int(num_train), num_test=int(len(test_labels)),
                  num_parameters=int(model.num_parameters()),
                  normalize_mean=[float(v) for v in dataset.mean],
                  normalize_std=[float(v) for v in dataset.std])
    if checkpoint is not None:
        restore_model(model, checkpoint, last_path)
        restore_optimizer(optimizer, checkpoint, config.device)
        start_epoch = checkpoint.epoch
        best_error, best_epoch = checkpoint.best_test_error, checkpoint.best_epoch
        metrics = [row for row in checkpoint.metrics if row["epoch"] <= start_epoch]
    else:
        start_epoch, best_error, best_epoch, metrics = 0, None, 0, []
    os.makedirs(run_dir, exist_ok=True)
    run_info = dict(stored, versions=package_versions(config.device), python=sys.version.split()[0],
                    platform=platform.platform(), started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    _write_text(os.path.join(run_dir, "config.json"), json.dumps(run_info, indent=2) + "\n")
    _write_metrics(run_dir, metrics)

    def save(path, epoch):
        save_checkpoint(path, model, optimizer, epoch=epoch, config=stored, model_spec=spec,
                        best_test_error=best_error, best_epoch=best_epoch, metrics=metrics)

    if checkpoint is None:
        save(last_path, 0)  # so that an interruption during the first epoch can be resumed

    result = TrainResult(config=config, run_dir=run_dir, metrics=metrics,
                         epochs_done=start_epoch, best_test_error=best_error,
                         best_epoch=best_epoch, last_checkpoint=last_path,
                         best_checkpoint=best_path if os.path.exists(best_path) else None,
                         model=model)
    epoch, batch = start_epoch + 1, 0
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            lr_start = float(schedule(epoch - 1))
            model.train()
            train_loader.set_epoch(epoch - 1)
            loss_sum = wrong = None
            batch_losses = []
            for batch, (x, y) in enumerate(train_loader, start=1):
                # The rate follows the schedule within the epoch (warm-up and cosine are smooth).
                optimizer.lr = float(schedule(epoch - 1 + (batch - 1) / num_batches))
                optimizer.zero_grad()
                logits = model(Tensor(x))
                loss = F.softmax_cross_entropy(logits, y)
                if xp is np:  # on the CPU reading the loss costs nothing: stop at once
                    _check_finite(float(loss.data), epoch, batch, num_batches, optimizer.lr)
                else:
                    batch_losses.append(loss.data)
                loss.backward()
                optimizer.step()
                batch_loss = loss.data * len(y)
                miss = (logits.data.argmax(axis=1) != y).sum()
                loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
                wrong = miss if wrong is None else wrong + miss
                if on_batch is not None:
                    on_batch(BatchProgress(epoch, config.epochs, batch, num_batches, len(y),
                                           optimizer.lr))
            train_seconds = time.perf_counter() - started
            train_loss = float(loss_sum) / num_train
            if not math.isfinite(train_loss):  # GPU: find the first bad batch only now
                losses = xp.stack(batch_losses)
                bad = int(xp.argmax(~xp.isfinite(losses))) + 1
                _check_finite(float(losses[bad - 1]), epoch, bad, num_batches, optimizer.lr)
            test_loss, test_error = evaluate(model, test_loader)
            row = {"epoch": epoch, "lr": lr_start, "train_loss": train_loss,
                   "train_error": float(wrong) / num_train, "test_loss": test_loss,
                   "test_error": test_error, "seconds": time.perf_counter() - started,
                   "images_per_s": num_train / train_seconds}
            metrics.append(row)
            if best_error is None or test_error < best_error:
                best_error, best_epoch = test_error, epoch
                # best.h5 before last.h5: an interruption between the two repeats this epoch
                # on resume (last.h5 is behind), which rewrites best.h5 identically.
                save(best_path, epoch)
                result.best_checkpoint = best_path
            save(last_path, epoch)
            result.epochs_done, result.best_test_error, result.best_epoch = (
                epoch, best_error, best_epoch)
            _write_metrics(run_dir, metrics)
            batch = 0
            if on_epoch is not None:
                on_epoch(dict(row, epochs=config.epochs))
    except KeyboardInterrupt:
        # last.h5 already holds the last completed epoch; the partial one is dropped, so that a
        # resume repeats it from its start with the same batches.
        del metrics[result.epochs_done:]  # a row appended before last.h5 was written
        _write_metrics(run_dir, metrics)
        result.interrupted = True
        result.interrupted_at = (epoch, batch)
    return result


def _check_finite(value, epoch, batch, num_batches, lr):
    if not math.isfinite(value):
        raise TrainingError(f"the training loss became {value} at epoch {epoch}, batch "
                            f"{batch} of {num_batches} (lr={lr:g}); lower the learning rate")


def evaluate_checkpoint(path, dataset: str | None = None, data_dir=None, device: str = "auto",
                        batch_size: int = 256, test_subset: int | None = None) -> dict:
    """Test loss and error of a checkpoint on the test split of a dataset.

    Args:
        path: a checkpoint (``last.h5`` or ``best.h5``).
        dataset: dataset name or ``.h5`` path; None -> the one the checkpoint was trained on.
        data_dir: folder of prepared datasets; None -> the run's, else the default.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: evaluation batch size.
        test_subset: evaluate only the first this many test images (None: all).
    Returns:
        a dict with ``test_loss``, ``test_error``, ``num_images``, ``epoch``, ``dataset``,
        ``model`` (e.g. ``resnet20 share=block``) and ``device``.
    Raises:
        DataError: unreadable checkpoint, or a dataset whose classes or image size do not fit
            the model.
    """
    from minires import data as mdata
    from minires.checkpoint import load_model

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if test_subset is not None and int(test_subset) < 1:
        raise ValueError(f"test_subset must be a positive number of images, got {test_subset}")
    device = resolve_device(device)
    model, config = load_model(path, device=device)
    spec = config["model_spec"]
    name = dataset if dataset is not None else config.get("dataset", EMBEDDED)
    data_dir = data_dir if data_dir is not None else config.get("data_dir")
    # The embedded set is generated from the seed: the run's seed gives the run's test images.
    data = mdata.load_dataset(name, data_dir=data_dir, seed=int(config.get("seed", 0)))
    if int(data.num_classes) != spec["num_classes"] or int(data.image_size) != spec["input_size"]:
        raise DataError(f"{path} was trained for {spec['num_classes']} classes of "
                        f"{spec['input_size']}x{spec['input_size']} images, but {name} has "
                        f"{data.num_classes} classes of {data.image_size}x{data.image_size}")
    images, labels = data.test_images[:test_subset], data.test_labels[:test_subset]
    loader = mdata.Loader(images, labels, int(batch_size), shuffle=False,
                          augment=None, mean=_stats(config, "mean", data.mean),
                          std=_stats(config, "std", data.std), xp=xp_for(device))
    test_loss, test_error = evaluate(model, loader)
    return {"test_loss": test_loss, "test_error": test_error,
            "num_images": int(len(labels)), "epoch": config["checkpoint_epoch"],
            "dataset": data.name, "model": f"{model_label(TrainConfig.from_dict(spec))} "
                                            f"share={spec['share']}", "device": device}


def _stats(config, key, default):
    """The normalisation the model was trained with (stored in its config), else ``default``."""
    value = config.get(f"normalize_{key}")
    return np.asarray(value, dtype=np.float32) if value is not None else default
