"""Checkpoints: a model, its optimizer and the training state in one HDF5 file.

Layout of a checkpoint (format version 1)::

    /                     attrs: format="minires-checkpoint", format_version, minires_version,
                                 epoch, best_test_error, best_epoch, config (JSON),
                                 model_spec (JSON), metrics (JSON list of per-epoch rows)
    /model/state/<key>    one dataset per entry of ``model.state_dict()``: parameters and buffers.
                          A shared weight is a single entry (stored once); its attribute
                          ``uses`` lists every name it is reachable under, e.g.
                          ``["stage1.0.conv1.weight", "stage1.0.conv2.weight"]``.
    /model                attrs: aliases (JSON list of the name groups of shared parameters)
    /optimizer            attrs: state (JSON skeleton of ``optimizer.state_dict()``, arrays
                          replaced by ``{"__array__": i}``); datasets ``0``, ``1``... the arrays.

Sharing is restored by rebuilding the model from ``model_spec`` (the architecture creates the
one shared Parameter) and copying the stored values into it with ``load_state_dict``; before
that the stored alias map is compared with the rebuilt model's, so a checkpoint of a shared
network cannot silently load into an unshared one (or the reverse).

Files are written to a temporary name in the same directory and renamed with ``os.replace``:
a crash or Ctrl-C while saving leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field

import h5py
import numpy as np

from minires import __version__
from minires.autograd import Tensor
from minires.backend import to_device, to_numpy
from minires.errors import DataError

FORMAT = "minires-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """The contents of a checkpoint file, arrays as NumPy.

    Attributes:
        state: ``model.state_dict()`` entries, name -> array.
        aliases: for each shared parameter, the sorted list of every name it is used under.
        optimizer_state: the optimizer's ``state_dict()`` (None if none was saved).
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
        optimizer: anything with ``state_dict()`` (nested dicts/lists of arrays and scalars).
        epoch: completed epochs. config, model_spec: JSON-serialisable dicts.
        best_test_error, best_epoch: best test error so far (None if none yet) and its epoch.
        metrics: per-epoch metric rows (dicts of numbers).
    Returns:
        ``path`` as a string.
    """
    state = model.state_dict()
    uses = {}
    for names in model.parameter_uses().values():
        for name in names:
            uses[name] = sorted(names)

    def write(f):
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["minires_version"] = __version__
        f.attrs["epoch"] = int(epoch)
        f.attrs["best_test_error"] = np.nan if best_test_error is None else float(best_test_error)
        f.attrs["best_epoch"] = int(best_epoch)
        f.attrs["config"] = json.dumps(config, sort_keys=True)
        f.attrs["model_spec"] = json.dumps(model_spec, sort_keys=True)
        f.attrs["metrics"] = json.dumps(list(metrics or []))
        group = f.create_group("model")
        group.attrs["aliases"] = json.dumps(alias_groups(model))
        states = group.create_group("state")
        for key, value in state.items():
            dataset = states.create_dataset(key, data=to_numpy(_array(value)))
            if len(uses.get(key, ())) > 1:
                dataset.attrs["uses"] = json.dumps(uses[key])
        if optimizer is not None:
            opt = f.create_group("optimizer")
            arrays = []
            opt.attrs["state"] = json.dumps(_encode(optimizer.state_dict(), arrays))
            for i, array in enumerate(arrays):
                opt.create_dataset(str(i), data=array)

    atomic_write(path, lambda tmp: _write_h5(tmp, write))
    return str(path)


def _write_h5(path, write):
    with h5py.File(path, "w") as f:
        write(f)


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is removed if ``write`` fails or is interrupted (KeyboardInterrupt too).
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    # A fresh name in the same directory (so os.replace stays a rename on one file system),
    # created by ``write`` itself so that the file gets the usual permissions.
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _encode(obj, arrays: list):
    """JSON skeleton of a nested state; arrays are appended to ``arrays`` and referenced."""
    if isinstance(obj, Tensor):
        obj = obj.data
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # NumPy or CuPy array
        arrays.append(to_numpy(obj))
        return {"__array__": len(arrays) - 1}
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _key(k):
    if isinstance(k, (str, int)):
        return k
    raise TypeError(f"optimizer state keys must be str or int, got {type(k).__name__}")


def _decode(obj, arrays):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        return {k: _decode(v, arrays) for k, v in obj["__dict__"]}
    return obj


# -- loading ---------------------------------------------------------------------------------

def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint file, raising DataError when it is missing, corrupt or not ours."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"no checkpoint file at {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path} is not a readable HDF5 file (truncated or corrupt?): "
                        f"{exc}") from exc
    with f:
        if f.attrs.get("format") != FORMAT:
            raise DataError(f"{path} is an HDF5 file but not a minires checkpoint (it has no "
                            f"format={FORMAT!r} attribute)")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise DataError(f"{path} is a minires checkpoint of format version {version}; this "
                            f"minires reads version {FORMAT_VERSION}")
        try:
            best = float(f.attrs["best_test_error"])
            states = f["model/state"]
            state = {key: states[key][()] for key in states}
            optimizer_state = None
            if "optimizer" in f:
                opt = f["optimizer"]
                arrays = [opt[str(i)][()] for i in range(len(opt))]
                optimizer_state = _decode(json.loads(opt.attrs["state"]), arrays)
            return Checkpoint(
                state=state,
                aliases=json.loads(f["model"].attrs["aliases"]),
                optimizer_state=optimizer_state,
                epoch=int(f.attrs["epoch"]),
                best_test_error=None if np.isnan(best) else best,
                best_epoch=int(f.attrs["best_epoch"]),
                config=json.loads(f.attrs["config"]),
                model_spec=json.loads(f.attrs["model_spec"]),
                metrics=json.loads(f.attrs["metrics"]),
                format_version=version)
        except (KeyError, OSError, ValueError) as exc:
            raise DataError(f"{path} is an incomplete or corrupt minires checkpoint: "
                            f"{exc}") from exc


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
        shape = tuple(_array(value).shape)
        if tuple(checkpoint.state[key].shape) != shape:
            raise DataError(f"{path} does not match the model's architecture: {key} has shape "
                            f"{tuple(checkpoint.state[key].shape)}, the model expects {shape}")
    if sorted(sorted(g) for g in checkpoint.aliases) != alias_groups(model):
        raise DataError(f"{path} records weight sharing {checkpoint.aliases}, but the model "
                        f"shares {alias_groups(model)}")
    device = _device_of(model)
    state = {}
    for key, value in expected.items():
        array = _array(value)
        state[key] = to_device(checkpoint.state[key].astype(array.dtype, copy=False), device)
    model.load_state_dict(state)


def restore_optimizer(optimizer, checkpoint: Checkpoint, device: str) -> None:
    """Load the checkpoint's optimizer state (arrays moved to ``device``) into ``optimizer``."""
    if checkpoint.optimizer_state is None:
        raise DataError("the checkpoint holds no optimizer state, so the run cannot resume")
    optimizer.load_state_dict(_to_device_tree(checkpoint.optimizer_state, device))


def _to_device_tree(obj, device):
    if isinstance(obj, dict):
        return {k: _to_device_tree(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device_tree(v, device) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_device(obj, device)
    return obj


def _array(value):
    """The array of a state entry (an array, or a Tensor holding one)."""
    return value.data if isinstance(value, Tensor) else value


def _device_of(model) -> str:
    for p in model.parameters():
        return p.device
    return "cpu"


def _few(names, limit=5):
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def build_model(model_spec: dict):
    """Build the (untrained) model a checkpoint's ``model_spec`` describes."""
    from minires import models
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
    from minires.backend import resolve_device
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint.model_spec).to(resolve_device(device))
    restore_model(model, checkpoint, path)
    model.eval()
    config = dict(checkpoint.config)
    config["model_spec"] = dict(checkpoint.model_spec)
    config["checkpoint_epoch"] = checkpoint.epoch
    return model, config
