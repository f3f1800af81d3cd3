"""The preparable datasets, their official sources, and where prepared files live."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATASETS = ("cifar10", "cifar100", "imagenet16", "imagenet32", "imagenet64")
EMBEDDED = "embedded"
DATA_DIR_ENV = "MINIRES_DATA"


@dataclass(frozen=True)
class CifarSpec:
    """Where a CIFAR archive comes from and what it holds (facts from the dataset's page)."""
    name: str
    title: str
    url: str
    archive: str            # file name of the official archive
    md5: str                # md5 of the official archive
    size: int               # size in bytes of the official archive
    folder: str             # top folder inside the archive
    train: tuple            # member names of the training batches, in order
    test: tuple
    meta: str
    label_key: str          # key of the labels in a batch
    names_key: str          # key of the label names in the meta file
    num_classes: int
    member_md5: dict        # md5 of each extracted member (checks an extracted folder)


CIFAR = {
    "cifar10": CifarSpec(
        name="cifar10", title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive="cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
        size=170498071, folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",),
        meta="batches.meta", label_key="labels", names_key="label_names", num_classes=10,
        member_md5={"data_batch_1": "c99cafc152244af753f735de768cd75f",
                    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                    "data_batch_4": "634d18415352ddfa80567beed471001a",
                    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                    "test_batch": "40351d587109b95175f43aff81a1287e",
                    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}),
    "cifar100": CifarSpec(
        name="cifar100", title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive="cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85",
        size=169001437, folder="cifar-100-python", train=("train",), test=("test",),
        meta="meta", label_key="fine_labels", names_key="fine_label_names", num_classes=100,
        member_md5={"train": "16019d7e3df5f24257cddd939b257f8d",
                    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                    "meta": "7973b15100ade9c7d40fb424638fde48"}),
}

# Downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter 2017): image side per dataset name.
IMAGENET_SIZES = {"imagenet16": 16, "imagenet32": 32, "imagenet64": 64}
IMAGENET_TRAIN_BATCHES = 10
IMAGENET_CLASSES = 1000

# Default augmentation policy per dataset (see minires.data.augment).
DEFAULT_AUGMENT = {"cifar10": "crop_flip", "cifar100": "crop_flip", EMBEDDED: "crop_flip",
                   "imagenet16": "flip", "imagenet32": "flip", "imagenet64": "flip"}


def default_data_dir() -> Path:
    """``$MINIRES_DATA`` if set (and not empty), else ``~/.cache/minires``."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minires"


def resolve_data_dir(data_dir=None) -> Path:
    """``data_dir`` as a Path, or :func:`default_data_dir` when it is None."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def prepared_path(name: str, data_dir=None) -> Path:
    """Where ``minires prepare NAME`` writes its HDF5 file: ``DATA_DIR/NAME.h5``."""
    return resolve_data_dir(data_dir) / f"{name}.h5"


def names_a_dataset(name) -> bool:
    """True when ``name`` is :data:`EMBEDDED`, one of :data:`DATASETS`, or could be the path of
    a prepared file (it exists, or ends in ``.h5`` or ``.hdf5``)."""
    name = os.fspath(name)
    if name == EMBEDDED or name in DATASETS:
        return True
    if not name.strip():
        return False
    path = Path(name).expanduser()
    return path.suffix in (".h5", ".hdf5") or path.exists()


DATASET_CHOICES = f"{EMBEDDED}, one of {', '.join(DATASETS)}, or the path of a prepared .h5 file"


def check_name(name: str) -> str:
    """Return ``name`` if it is preparable, else raise a DataError listing the choices."""
    from minires.errors import DataError

    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return name
