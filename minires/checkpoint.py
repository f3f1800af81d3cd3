"""Checkpoints: a model, its optimizer and the training state in one HDF5 file.

Layout of a checkpoint (format version 2)::

    /                     attrs: format="minires-checkpoint", format_version, minires_version,
                                 epoch, best_test_error (NaN: none yet), best_epoch,
                                 config (JSON), model_spec (JSON), metrics (JSON list of rows)
    /model/state/<key>    one dataset per entry of ``model.state_dict()``: parameters and
                          buffers. A shared weight is ONE dataset, under its first name; its
                          attribute ``uses`` (JSON) lists every name it is used under, e.g.
                          ``["stage1.0.conv1.weight", "stage1.0.conv2.weight"]``. This is the
                          only record of the sharing.
    /optimizer            ``optimizer.state_dict()`` as HDF5 holds it natively: a nested dict
                          is a group, an array a dataset, a number, bool or string an
                          attribute (e.g. ``/optimizer/momentum_buffers/0``, attribute ``lr``).

Every dataset carries HDF5's Fletcher-32 checksum, and the attributes of the training state a
CRC-32 (``attrs_crc32``), so flipped bits are detected on reading; a model with NaN or
infinite values is refused as well.

Sharing is restored by rebuilding the model from ``model_spec`` (the architecture creates the
one shared Parameter) and copying the stored values into it with ``load_state_dict``; before
that the stored sharing is compared with the rebuilt model's, so a checkpoint of a shared
network cannot silently load into an unshared one (or the reverse).

The file is built in memory and written with :func:`minires.atomicfile.write_bytes`: a full
disk or Ctrl-C while saving leaves the previous checkpoint intact and no temporary file, and
HDF5 never writes to a disk that may fill up under it.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field

import h5py
import numpy as np

from minires import __version__, models
from minires.atomicfile import write_bytes
from minires.backend import resolve_device, to_device, to_numpy
from minires.data.store import CHECKSUM_FAILURE
from minires.divergence import first_non_finite
from minires.errors import DataError

FORMAT = "minires-checkpoint"
FORMAT_VERSION = 2


@dataclass
class Checkpoint:
    """The contents of a checkpoint file, arrays as NumPy.

    Attributes:
        state: ``model.state_dict()`` entries, name -> array.
        aliases: for each shared parameter, the sorted list of every name it is used under.
        optimizer_state: the optimizer's ``state_dict()`` (None if none was saved); dict keys
            are strings (HDF5 names), numbers are Python scalars.
        epoch: number of completed epochs.
        best_test_error, best_epoch: the lowest test error so far and its epoch (None, 0 if
            no epoch was evaluated yet).
        config: the training configuration (a dict, as in ``config.json``).
        model_spec: the arguments of ``minires.models.create`` that rebuild the model.
        metrics: per-epoch metric rows up to ``epoch``.
    """

    state: dict
    aliases: list
    optimizer_state: dict | None
    epoch: int
    best_test_error: float | None
    best_epoch: int
    config: dict
    model_spec: dict
    metrics: list = field(default_factory=list)
    format_version: int = FORMAT_VERSION


# -- saving ----------------------------------------------------------------------------------

def alias_groups(model) -> list:
    """The shared parameters of ``model``: a sorted list of sorted name lists (2+ names each)."""
    groups = [sorted(names) for names in model.parameter_uses().values() if len(names) > 1]
    return sorted(groups)


def save_checkpoint(path, model, optimizer=None, *, epoch: int, config: dict,
                    model_spec: dict, best_test_error: float | None = None, best_epoch: int = 0,
                    metrics: list | None = None) -> str:
    """Write ``model`` (and ``optimizer``) with the training state to ``path``, atomically.

    Args:
        path: destination ``.h5`` file; its directory must exist.
        model: a ``minires.nn.Module``; arrays may live on the CPU or the GPU.
        optimizer: anything with ``state_dict()`` (nested dicts of arrays and scalars).
        epoch: completed epochs. config, model_spec: JSON-serialisable dicts.
        best_test_error, best_epoch: best test error so far (None if none yet) and its epoch.
        metrics: per-epoch metric rows (dicts of numbers).
    Returns:
        ``path`` as a string.
    """
    uses = {first: sorted(names) for first, names in model.parameter_uses().items()
            if len(names) > 1}
    # An in-memory HDF5 file (the "core" driver without a backing file): HDF5 fails badly when
    # the disk fills up under it, plain Python writes fail cleanly.
    attrs = dict(epoch=int(epoch), best_epoch=int(best_epoch),
                 best_test_error=np.nan if best_test_error is None else float(best_test_error),
                 config=json.dumps(config, sort_keys=True),
                 model_spec=json.dumps(model_spec, sort_keys=True),
                 metrics=json.dumps(list(metrics or [])))
    with h5py.File("checkpoint.h5", "w", driver="core", backing_store=False) as f:
        f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, minires_version=__version__,
                       attrs_crc32=_attrs_crc32(attrs), **attrs)
        states = f.create_group("model/state")
        for key, value in model.state_dict().items():
            dataset = _create_dataset(states, key, value)
            if key in uses:
                dataset.attrs["uses"] = json.dumps(uses[key])
        if optimizer is not None:
            _write_tree(f.create_group("optimizer"), optimizer.state_dict())
        f.flush()
        image = f.id.get_file_image()
    write_bytes(path, image)
    return str(path)


def _create_dataset(group, name, value):
    array = to_numpy(value)
    if array.size == 0 or array.ndim == 0:  # no chunked layout, so no checksum, for these
        return group.create_dataset(name, data=array)
    # Fletcher-32 needs a chunked layout; one chunk the size of the array wastes no space.
    return group.create_dataset(name, data=array, chunks=array.shape, fletcher32=True)


def _write_tree(group, state: dict) -> None:
    for key, value in state.items():
        name = str(key)
        if isinstance(value, dict):
            _write_tree(group.create_group(name), value)
        elif isinstance(value, (bool, int, float, str, np.generic)):
            group.attrs[name] = value
        elif hasattr(value, "shape") and hasattr(value, "dtype"):  # NumPy or CuPy array
            _create_dataset(group, name, value)
        else:
            raise TypeError(f"cannot store a {type(value).__name__} ({name}) in a checkpoint")


# -- loading ---------------------------------------------------------------------------------

def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint file, raising DataError when it is missing, corrupt or not ours.

    Every dataset's Fletcher-32 checksum is verified as it is read, and the model's values must
    be finite: a checkpoint with flipped bits, or of a model that diverged, is refused.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder; expected a checkpoint file (last.h5 or best.h5 in "
                        f"a run folder)")
    if not os.path.isfile(path):
        raise DataError(f"no checkpoint file at {path}")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path} is an empty file; expected a minires checkpoint")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path} is not a readable HDF5 file (truncated or corrupt?): "
                        f"{' '.join(str(exc).split())}") from exc
    with f:
        if f.attrs.get("format") != FORMAT:
            if "format_version" in f.attrs and "train" in f:
                raise DataError(f"{path} is a prepared dataset, not a checkpoint; give a "
                                f"checkpoint (last.h5 or best.h5 of a run), and datasets with "
                                f"--dataset")
            raise DataError(f"{path} is an HDF5 file but not a minires checkpoint (it has no "
                            f"format={FORMAT!r} attribute)")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise DataError(f"{path} is a minires checkpoint of format version {version}; this "
                            f"minires reads version {FORMAT_VERSION}")
        try:
            stored = f.attrs.get("attrs_crc32")  # absent in checkpoints of minires 0.1
            if stored is not None and int(stored) != _attrs_crc32(f.attrs):
                raise DataError(f"{path} is corrupted: its epoch, configuration or metrics do "
                                f"not match their checksum (bits changed on the disk or in a "
                                f"copy)")
            best = float(f.attrs["best_test_error"])
            states = f["model/state"]
            state = {key: states[key][()] for key in states}
            aliases = sorted(sorted(json.loads(states[key].attrs["uses"]))
                             for key in states if "uses" in states[key].attrs)
            checkpoint = Checkpoint(
                state=state,
                aliases=aliases,
                optimizer_state=_read_tree(f["optimizer"]) if "optimizer" in f else None,
                epoch=int(f.attrs["epoch"]),
                best_test_error=None if np.isnan(best) else best,
                best_epoch=int(f.attrs["best_epoch"]),
                config=json.loads(f.attrs["config"]),
                model_spec=json.loads(f.attrs["model_spec"]),
                metrics=json.loads(f.attrs["metrics"]),
                format_version=version)
        except (KeyError, OSError, ValueError, TypeError, RuntimeError) as exc:
            text = " ".join(str(exc).split())
            if CHECKSUM_FAILURE in text:
                raise DataError(f"{path} is corrupted: a stored array does not match its "
                                f"checksum (bits changed on the disk or in a copy)") from exc
            raise DataError(f"{path} is an incomplete or corrupt minires checkpoint: "
                            f"{text}") from exc
    bad = first_non_finite(checkpoint.state)
    if bad is not None:
        raise DataError(f"{path} holds NaN or infinite values in {bad}: the model had diverged "
                        f"when it was saved")
    return checkpoint


def _attrs_crc32(attrs) -> int:
    """CRC-32 of the training state kept in the file's attributes (HDF5 checksums datasets
    only), the same whether computed from the values written or from the attributes read."""
    values = [int(attrs["epoch"]), int(attrs["best_epoch"]), repr(float(attrs["best_test_error"])),
              str(attrs["config"]), str(attrs["model_spec"]), str(attrs["metrics"])]
    return zlib.crc32(json.dumps(values).encode("utf-8"))


def _read_tree(group) -> dict:
    tree = {name: value.item() if isinstance(value, np.generic) else value
            for name, value in group.attrs.items()}
    for name, item in group.items():
        tree[name] = _read_tree(item) if isinstance(item, h5py.Group) else item[()]
    return tree


def restore_model(model, checkpoint: Checkpoint, path="checkpoint") -> None:
    """Copy the checkpoint's values into ``model``, after checking that the architectures match.

    Raises DataError when the names, shapes or weight sharing differ. The values go into the
    model's existing Parameters (``load_state_dict``), so a weight shared by two convolutions
    stays one Parameter.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(checkpoint.state))
    unexpected = sorted(set(checkpoint.state) - set(expected))
    if missing or unexpected:
        raise DataError(f"{path} does not match the model's architecture: missing "
                        f"{_few(missing)}, unexpected {_few(unexpected)}")
    for key, value in expected.items():
        if checkpoint.state[key].shape != value.shape:
            raise DataError(f"{path} does not match the model's architecture: {key} has shape "
                            f"{checkpoint.state[key].shape}, the model expects {value.shape}")
    if checkpoint.aliases != alias_groups(model):
        raise DataError(f"{path} records weight sharing {checkpoint.aliases}, but the model "
                        f"shares {alias_groups(model)}")
    model.load_state_dict(checkpoint.state)  # cast to each parameter's dtype and device


def restore_optimizer(optimizer, checkpoint: Checkpoint, device: str) -> None:
    """Load the checkpoint's optimizer state (arrays moved to ``device``) into ``optimizer``."""
    if checkpoint.optimizer_state is None:
        raise DataError("the checkpoint holds no optimizer state, so the run cannot resume")
    try:
        optimizer.load_state_dict(_to_device_tree(checkpoint.optimizer_state, device))
    except (KeyError, ValueError) as exc:
        raise DataError(f"the checkpoint's optimizer state does not fit this model: "
                        f"{exc}") from exc


def _to_device_tree(obj, device):
    if isinstance(obj, dict):
        return {k: _to_device_tree(v, device) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_device(obj, device)
    return obj


def _few(names, limit=5):
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def build_model(model_spec: dict):
    """Build the (untrained) model a checkpoint's ``model_spec`` describes."""
    try:
        return models.create(**model_spec)
    except TypeError as exc:
        raise DataError(f"the checkpoint's model description {model_spec} does not fit this "
                        f"minires: {exc}") from exc


def load_model(path, device: str = "cpu"):
    """Rebuild a trained model from a checkpoint.

    Args:
        path: a checkpoint written by :func:`save_checkpoint` (``last.h5``, ``best.h5``).
        device: ``cpu``, ``cuda`` or ``auto``.
    Returns:
        ``(model, config)``: the model in eval mode on ``device``, with shared weights shared
        again, and the training configuration dict (``config["model_spec"]`` and
        ``config["checkpoint_epoch"]`` are added).
    """
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint.model_spec).to(resolve_device(device))
    restore_model(model, checkpoint, path)
    model.eval()
    config = dict(checkpoint.config)
    config["model_spec"] = dict(checkpoint.model_spec)
    config["checkpoint_epoch"] = checkpoint.epoch
    return model, config
