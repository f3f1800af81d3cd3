"""The run configuration: every setting of a training run, its default, its choices, its rules.

:class:`TrainConfig` is the one home of the settings. Each field carries its rules and help text
in its metadata (see :func:`setting`); ``minires train`` builds its command-line options from
them, so the command line and the library cannot disagree. The choices come from where they
are defined: architectures, share modes and shortcuts from :mod:`minires.models`, schedules
from :mod:`minires.optim`, devices from :mod:`minires.backend`.

A run uses its configuration in three steps:

1. :meth:`TrainConfig.validate` checks every setting once, before anything is loaded, and
   raises :class:`~minires.errors.ConfigError` naming the first one out of range;
2. :meth:`TrainConfig.resolved` fills in what depends on the dataset (a Wide ResNet's depth
   depends on the image size) and names the run directory;
3. a resumed run starts from the configuration it saved, under the resume rules of
   :func:`merge_resume_config`: the settings in :data:`RUN_FIELDS` define the run and cannot
   change; the others (epochs, device, data directory, prefetching) may.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import time
import types
import typing
from dataclasses import dataclass, field

from minires.backend import DEVICES, resolve_device
from minires.data import DATASETS, EMBEDDED
from minires.data.catalog import DATASET_CHOICES, names_a_dataset
from minires.errors import ConfigError
from minires.models import (ARCHS, DEFAULT_RESNET_DEPTH, DEFAULT_WRN_WIDTH, SHARE_MODES,
                            SHORTCUTS, STAGES_FOR_INPUT, architecture_defaults, default_wrn_depth,
                            resnet_blocks_per_stage)
from minires.optim import SCHEDULES, make_schedule
from minires.run_dir import dataset_label

# He et al. 2016 train CIFAR for 64k iterations at batch 128 (164 epochs); Chrabaszcz et al. 2017
# train downsampled ImageNet for 40 epochs. The embedded set is for a first run: 3 epochs of
# ResNet-20 take about 70 s of CPU time (40 s on 2 idle cores) and end between 22% and 30%
# test error over seeds 0-2 (chance: 90%).
DEFAULT_EPOCHS = {"cifar10": 164, "cifar100": 164, "imagenet16": 40, "imagenet32": 40,
                  "imagenet64": 40, EMBEDDED: 3}
OTHER_DEFAULT_EPOCHS = 164
# (schedule, warm-up epochs): He et al.'s step schedule, except on the embedded set, whose three
# epochs learn much more, and more reliably across seeds, with a warm-up and a cosine decay.
DEFAULT_SCHEDULES = {EMBEDDED: ("cosine", 0.5)}
OTHER_DEFAULT_SCHEDULE = ("step", 0.0)
MIN_EVAL_BATCH_SIZE = 256
DEFAULT_RUNS_FOLDER = "runs"


def setting(default, help: str, *, choices=None, minimum=None, above=None, below=None,
            shown_default=None, short=None, off_flag=None, path=False, option=True,
            defines_run=True):
    """A :class:`TrainConfig` field: its default, the rules its value must follow, its help.

    Args:
        default: the value when none is given. None means "decided later": by the
            architecture or the dataset (:meth:`TrainConfig.resolved`), or taken from the run
            being resumed.
        help: one sentence for ``minires train --help``.
        choices: the allowed values (for str settings).
        minimum, above, below: numbers must be ``>= minimum``, ``> above``, ``< below``; floats
            must also be finite.
        shown_default: how ``--help`` shows a default that is decided later.
        short: a one-letter option name (``-b``). off_flag: the name that turns a boolean
            setting off (``--no-prefetch``).
        path: the value names a folder.
        option: whether ``minires train`` has an option for it.
        defines_run: a resumed run cannot change it (see :func:`merge_resume_config`).
    """
    rules = dict(help=help, choices=choices, minimum=minimum, above=above, below=below,
                 shown_default=shown_default, short=short, off_flag=off_flag)
    metadata = {key: value for key, value in rules.items() if value is not None}
    metadata.update(path=path, option=option, defines_run=defines_run)
    return field(default=default, metadata=metadata)


def _epochs_text():
    cifar, imagenet = DEFAULT_EPOCHS["cifar10"], DEFAULT_EPOCHS["imagenet32"]
    return f"{cifar} on CIFAR, {imagenet} on ImageNet, {DEFAULT_EPOCHS[EMBEDDED]} on {EMBEDDED}"


def _schedule_text(part: int) -> str:
    """How ``--help`` shows the default schedule (part 0) or warm-up (part 1)."""
    text = f"{OTHER_DEFAULT_SCHEDULE[part]}, {DEFAULT_SCHEDULES[EMBEDDED][part]} on {EMBEDDED}"
    return text + " without --schedule" if part else text


@dataclass
class TrainConfig:
    """Everything that defines a training run; each field's help and rules are in its metadata.

    ``dataset`` is a name of ``minires.data.DATASETS``, ``embedded`` (generated in memory), or
    the path of a prepared ``.h5`` file. ``milestones`` are epochs (for ``schedule="multistep"``).
    ``resume`` continues the run in ``run_dir`` from its ``last.h5``.
    """

    dataset: str = setting(
        EMBEDDED, f"{EMBEDDED} (generated, no download), {', '.join(DATASETS)} (prepared with "
                  "`minires prepare`), or the path of a prepared .h5 file.")
    data_dir: str | None = setting(
        None, "Folder of prepared datasets.", shown_default="$MINIRES_DATA or ~/.cache/minires",
        path=True, defines_run=False)
    arch: str = setting("resnet", "resnet: He et al. (CIFAR style); wrn: wide ResNet.",
                        choices=ARCHS)
    depth: int | None = setting(
        None, "Depth: 6n+2 for resnet (8, 20, 32, 44, 56, 110), 2nS+4 for wrn.", minimum=1,
        shown_default=f"{DEFAULT_RESNET_DEPTH} for resnet; "
                      f"{'/'.join(str(default_wrn_depth(s)) for s in STAGES_FOR_INPUT)} for wrn "
                      f"on {'/'.join(str(s) for s in STAGES_FOR_INPUT)}-pixel images")
    width: int | None = setting(None, "Widening factor (wrn only).", minimum=1,
                                shown_default=f"1 for resnet, {DEFAULT_WRN_WIDTH} for wrn")
    share: str = setting(
        "none", "Weight sharing: none; block (the paper: the two 3x3 convolutions of a block "
                "share one weight); stage (same-shaped blocks of a stage share).",
        choices=SHARE_MODES)
    shortcut: str | None = setting(
        None, "Shortcut where the shape changes: A zero-padding identity, B 1x1 projection.",
        choices=SHORTCUTS, shown_default="A for resnet, B for wrn")
    epochs: int | None = setting(None, "Epochs.", minimum=1, shown_default=_epochs_text(),
                                 defines_run=False)
    batch_size: int = setting(128, "Training batch size.", minimum=1, short="-b")
    lr: float = setting(0.1, "Initial learning rate.", above=0)
    momentum: float = setting(0.9, "SGD momentum (0 disables it).", minimum=0, below=1)
    weight_decay: float = setting(1e-4, "L2 weight decay.", minimum=0)
    nesterov: bool = setting(False, "Nesterov momentum.")
    schedule: str | None = setting(
        None, "step: x gamma at 50% and 75% of the epochs (He et al.); multistep: at "
              "--milestones; cosine; constant.", choices=SCHEDULES,
        shown_default=_schedule_text(0))
    milestones: list[int] | None = setting(
        None, "Comma-separated epochs where the rate is multiplied by --gamma (implies "
              "--schedule multistep).", minimum=1)
    gamma: float = setting(0.1, "Factor applied to the rate at each milestone.", above=0)
    warmup_epochs: float | None = setting(
        None, "Linear warm-up of the learning rate over this many epochs.", minimum=0,
        shown_default=_schedule_text(1))
    seed: int = setting(0, "Seeds the weights, the data subset, shuffling and augmentation.",
                        minimum=0)
    device: str = setting("auto", "auto: cuda when CuPy sees a GPU, else cpu.", choices=DEVICES,
                          defines_run=False)
    cuda_graph: bool = setting(
        False, "Replay each training step from one CUDA graph (needs the GPU; see "
               "minires.cuda_graph).", defines_run=False)
    run_dir: str | None = setting(
        None, "Where config, metrics and checkpoints go.", short="-o", path=True,
        shown_default="runs/<dataset>-<arch><depth>-<share>-<time>", defines_run=False)
    subset: int | None = setting(None, "Train on only the first N training images.", minimum=1)
    test_subset: int | None = setting(None, "Evaluate on only the first N test images.",
                                      minimum=1)
    no_decay_bn: bool = setting(False, "No weight decay on BatchNorm parameters and biases.")
    prefetch: bool = setting(False, "Prepare the next batch in a background thread.",
                             off_flag="--no-prefetch", defines_run=False)
    eval_batch_size: int | None = setting(
        None, "Evaluation batch size.", minimum=1, option=False,
        shown_default=f"max(batch size, {MIN_EVAL_BATCH_SIZE})")
    resume: bool = setting(
        False, "Continue the run in --run-dir from its last.h5 (settings come from the run).",
        defines_run=False)

    def validate(self) -> None:
        """Check every setting; raise ConfigError naming the first one out of range.

        None is accepted where the default is decided later (depth, width, ...).
        """
        for f in dataclasses.fields(self):
            _check_setting(f, getattr(self, f.name))
        if self.arch == "resnet" and self.depth is not None:
            try:  # a Wide ResNet's depth depends on the image size: checked when it is built
                resnet_blocks_per_stage(self.depth)
            except ValueError as exc:
                raise ConfigError("depth", str(exc)) from None
        if not names_a_dataset(self.dataset):
            raise ConfigError("dataset", f"dataset must be {DATASET_CHOICES}, got "
                                         f"{self.dataset!r}")
        resolve_device(self.device)
        _check_cuda_graph(self.cuda_graph, self.device)
        epochs = self.epochs if self.epochs is not None else default_epochs(self.dataset)
        schedule, warmup_epochs = self.schedule_settings()
        try:  # the schedule checks that its own settings fit together
            make_schedule(schedule, self.lr, epochs, milestones=self.milestones,
                          gamma=self.gamma, warmup_epochs=warmup_epochs)
        except ValueError as exc:
            raise ConfigError(None, str(exc)) from exc

    def schedule_settings(self) -> tuple:
        """``(schedule, warmup_epochs)``: without a schedule, the dataset's default schedule
        and warm-up; a schedule given without a warm-up has none. A warm-up given always wins.
        """
        if self.schedule is None:
            schedule, warmup_epochs = DEFAULT_SCHEDULES.get(self.dataset, OTHER_DEFAULT_SCHEDULE)
        else:
            schedule, warmup_epochs = self.schedule, 0.0
        return schedule, self.warmup_epochs if self.warmup_epochs is not None else warmup_epochs

    def resolved(self, image_size: int) -> TrainConfig:
        """A copy with the defaults decided: depth, width and shortcut of the architecture (a
        Wide ResNet's depth depends on ``image_size``), epochs, schedule and warm-up of the
        dataset, the evaluation batch size, the device (``auto`` becomes ``cpu`` or ``cuda``) and
        the run directory; paths become strings (the copy is stored as JSON)."""
        schedule, warmup_epochs = self.schedule_settings()
        config = dataclasses.replace(
            self, **architecture_defaults(self.arch, self.depth, self.width, self.shortcut,
                                          image_size),
            dataset=os.fspath(self.dataset),
            data_dir=None if self.data_dir is None else os.fspath(self.data_dir),
            epochs=self.epochs if self.epochs is not None else default_epochs(self.dataset),
            schedule=schedule, warmup_epochs=warmup_epochs,
            eval_batch_size=(self.eval_batch_size if self.eval_batch_size is not None
                             else max(self.batch_size, MIN_EVAL_BATCH_SIZE)),
            milestones=None if self.milestones is None else [int(m) for m in self.milestones],
            device=resolve_device(self.device))
        config.run_dir = os.fspath(self.run_dir if self.run_dir is not None
                                   else default_run_dir(config))
        _check_cuda_graph(config.cuda_graph, config.device)  # auto may have become cpu
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build a config from a dict, ignoring keys that are not fields (versions, ...)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


SETTING_TYPES = typing.get_type_hints(TrainConfig)
# The settings that define a run: resuming with a different value would not continue it.
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["defines_run"])


def setting_type(name: str) -> type:
    """The plain type of a setting: ``int``, ``float``, ``bool``, ``str`` or ``list``."""
    hint = SETTING_TYPES[name]
    if isinstance(hint, types.UnionType):  # ``int | None``: the type besides None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint  # ``list[int]`` -> list


def _check_setting(f, value) -> None:
    name, rules, kind = f.name, f.metadata, setting_type(f.name)
    if value is None:
        if f.default is None:
            return
        raise ConfigError(name, f"{name} must be given")
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"{name} must be true or false, got {value!r}")
    elif kind is str:
        if rules["path"] and not str(value).strip():
            raise ConfigError(name, f"{name} must name a folder, got {value!r}")
        if "choices" in rules and value not in rules["choices"]:
            raise ConfigError(name, f"{name} must be one of {', '.join(rules['choices'])}, got "
                                    f"{value!r}")
    elif kind is list:
        for item in value:
            _check_number(name, item, int, rules)
    else:
        _check_number(name, value, kind, rules)


def _check_number(name, value, kind, rules) -> None:
    bounds = [f"{sign} {rules[key]:g}" for key, sign in
              (("minimum", ">="), ("above", ">"), ("below", "<")) if key in rules]
    if kind is int:
        expected = "an integer"
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:
        expected = "a finite number"
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value))
    expected += " " + " and ".join(bounds) if bounds else ""
    ok = ok and ("minimum" not in rules or value >= rules["minimum"]) and \
        ("above" not in rules or value > rules["above"]) and \
        ("below" not in rules or value < rules["below"])
    if not ok:
        raise ConfigError(name, f"{name} must be {expected}, got {value!r}")


def _check_cuda_graph(cuda_graph, device) -> None:
    if cuda_graph is True and device == "cpu":
        raise ConfigError("cuda_graph", "cuda_graph needs the GPU (device cuda), but the run's "
                                        "device is cpu")


def default_epochs(dataset) -> int:
    return DEFAULT_EPOCHS.get(dataset, OTHER_DEFAULT_EPOCHS)


def merge_resume_config(saved: dict, given: TrainConfig) -> TrainConfig:
    """The configuration of a resumed run: the saved one, under the resume rules.

    A setting of :data:`RUN_FIELDS` given (not None) with a value other than the run's raises
    ValueError; any other setting given (epochs, device, data_dir, prefetch, run_dir) replaces
    the saved value, and None keeps it.
    """
    saved_config = TrainConfig.from_dict(saved)
    differences = []
    for name in RUN_FIELDS:
        value, before = getattr(given, name), getattr(saved_config, name)
        if value is not None and _normal(value) != _normal(before):
            differences.append(f"{name}={value!r} (the run has {before!r})")
    if differences:
        raise ValueError("cannot resume with different settings: " + ", ".join(differences))
    changes = {f.name: getattr(given, f.name) for f in dataclasses.fields(TrainConfig)
               if not f.metadata["defines_run"] and getattr(given, f.name) is not None}
    return dataclasses.replace(saved_config, **{**changes, "resume": True})


def _normal(value):
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else value


# -- names of runs -----------------------------------------------------------------------------

def model_label(config) -> str:
    """``resnet20``, ``wrn16-4``... (parts not yet resolved are left out)."""
    label = f"{config.arch}{config.depth or ''}"
    return label + f"-{config.width}" if config.arch == "wrn" and config.width else label


def default_run_dir(config, now: float | None = None) -> str:
    """``runs/<dataset>-<arch><depth>-<share>-<YYYYmmdd-HHMMSS>`` under the working directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return os.path.join(DEFAULT_RUNS_FOLDER, f"{dataset_label(config.dataset)}-"
                                             f"{model_label(config)}-{config.share}-{stamp}")
