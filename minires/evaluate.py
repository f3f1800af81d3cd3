"""Evaluation: the mean loss and error rate of a model on a test split, or of a checkpoint."""
from __future__ import annotations

import numpy as np

import minires.functions as F
from minires.autograd import Tensor, no_grad
from minires.backend import resolve_device, xp_for
from minires.checkpoint import load_model
from minires.data import EMBEDDED, Loader, load_dataset
from minires.data.catalog import DATASET_CHOICES, names_a_dataset
from minires.errors import ConfigError, DataError
from minires.run_config import TrainConfig, model_label


def evaluate(model, loader) -> tuple[float, float]:
    """Mean cross-entropy and error rate of ``model`` over ``loader``, in eval mode, no graph.

    Args:
        model: a ``minires.nn.Module`` mapping ``(N, C, H, W)`` images to ``(N, classes)``.
        loader: yields ``(x, y)`` batches on the model's device.
    Returns:
        ``(loss, error)``. The sums stay on the device and are read once at the end. The
        model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    loss_sum = mistakes = count = 0
    try:
        with no_grad():
            for x, y in loader:
                logits = model(Tensor(x))
                loss_sum = loss_sum + F.softmax_cross_entropy(logits, y).data * len(y)
                mistakes = mistakes + (logits.data.argmax(axis=1) != y).sum()
                count += len(y)
    finally:
        model.train(was_training)
    if count == 0:
        raise DataError("evaluation needs at least one test image")
    return float(loss_sum) / count, float(mistakes) / count


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
        ConfigError: an argument out of range (a dataset that names none).
        DeviceError: the device cannot be used.
        DataError: unreadable, corrupted or diverged checkpoint, or a dataset whose classes or
            image size do not fit the model.
    """
    if int(batch_size) < 1:
        raise ConfigError("batch_size", f"batch_size must be a positive integer, got "
                                        f"{batch_size}")
    if test_subset is not None and int(test_subset) < 1:
        raise ConfigError("test_subset", f"test_subset must be a positive number of images, "
                                         f"got {test_subset}")
    if dataset is not None and not names_a_dataset(dataset):
        raise ConfigError("dataset", f"dataset must be {DATASET_CHOICES}, got {dataset!r}")
    device = resolve_device(device)
    model, config = load_model(path, device=device)
    spec = config["model_spec"]
    name = dataset if dataset is not None else config.get("dataset", EMBEDDED)
    data_dir = data_dir if data_dir is not None else config.get("data_dir")
    # The embedded set is generated from the seed: the run's seed gives the run's test images.
    data = load_dataset(name, data_dir=data_dir, seed=int(config.get("seed", 0)))
    if int(data.num_classes) != spec["num_classes"] or int(data.image_size) != spec["input_size"]:
        raise DataError(f"{path} was trained for {spec['num_classes']} classes of "
                        f"{spec['input_size']}x{spec['input_size']} images, but {name} has "
                        f"{data.num_classes} classes of {data.image_size}x{data.image_size}")
    images, labels = data.test_images[:test_subset], data.test_labels[:test_subset]
    loader = Loader(images, labels, int(batch_size), shuffle=False, augment=None,
                    mean=_stats(config, "mean", data.mean), std=_stats(config, "std", data.std),
                    xp=xp_for(device))
    test_loss, test_error = evaluate(model, loader)
    return {"test_loss": test_loss, "test_error": test_error,
            "num_images": int(len(labels)), "epoch": config["checkpoint_epoch"],
            "dataset": data.name, "model": f"{model_label(TrainConfig.from_dict(spec))} "
                                            f"share={spec['share']}", "device": device}


def _stats(config, key, default):
    """The normalisation the model was trained with (stored in its config), else ``default``."""
    value = config.get(f"normalize_{key}")
    return np.asarray(value, dtype=np.float32) if value is not None else default
