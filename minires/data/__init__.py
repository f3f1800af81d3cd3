"""Datasets: official archives converted once to HDF5, an embedded default, and a loader.

- :func:`prepare` converts CIFAR-10/100 or downsampled ImageNet into ``DATA_DIR/NAME.h5``.
- :func:`load_dataset` loads a prepared file (or the generated ``"embedded"`` dataset) into a
  :class:`Dataset` held in memory.
- :class:`Loader` yields shuffled, augmented, normalised float32 batches.

Per-channel ``mean``/``std`` are on the 0..1 scale everywhere (``(pixel / 255 - mean) / std``).
"""
from minires.data.augment import POLICIES, augment_batch
from minires.data.catalog import DATASETS, EMBEDDED, default_data_dir, prepared_path
from minires.data.cifar import ChecksumWarning
from minires.data.dataset import Dataset, load_dataset
from minires.data.embedded import make_embedded
from minires.data.loader import EpochPlan, Loader
from minires.data.prepare import prepare
from minires.data.store import FORMAT_VERSION, describe_store, store_info

__all__ = ["DATASETS", "EMBEDDED", "POLICIES", "FORMAT_VERSION", "ChecksumWarning", "Dataset",
           "EpochPlan", "Loader", "augment_batch", "default_data_dir", "describe_store",
           "load_dataset", "make_embedded", "prepare", "prepared_path", "store_info"]
