"""The embedded dataset: deterministic, fast to generate, and not linearly separable."""
from __future__ import annotations

import time

import numpy as np
import pytest

from minires.data import load_dataset, make_embedded


@pytest.fixture(scope="module")
def default():
    start = time.perf_counter()
    data = make_embedded()
    return data, time.perf_counter() - start


def test_shapes_and_defaults(default):
    data, seconds = default
    assert seconds < 10, f"generating the default embedded dataset took {seconds:.1f} s"
    assert data.train_images.shape == (10000, 3, 32, 32)
    assert data.test_images.shape == (2000, 3, 32, 32)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.num_classes == 10 and len(data.class_names) == 10
    assert data.augment == "crop_flip" and data.image_size == 32
    assert (np.bincount(data.train_labels) == 1000).all()      # balanced classes
    assert data.mean.shape == (3,) and 0 < data.mean.min() and data.mean.max() < 1
    assert data.std.dtype == np.float32 and (data.std > 0.1).all()


def test_deterministic_from_seed():
    a, b = make_embedded(200, 50, seed=7), make_embedded(200, 50, seed=7)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    c = make_embedded(200, 50, seed=8)
    assert not np.array_equal(a.train_images, c.train_images)
    # The test split does not depend on the training size.
    np.testing.assert_array_equal(make_embedded(300, 50, seed=7).test_images, a.test_images)


def test_load_dataset_embedded_with_subset(default):
    data = load_dataset("embedded", subset=100, seed=0)
    assert data.name == "embedded" and len(data.train_labels) == 100
    np.testing.assert_array_equal(data.train_images, default[0].train_images[:100])


def test_colour_alone_does_not_give_the_class(default):
    data, _ = default
    means = data.train_images.reshape(len(data.train_images), 3, -1).mean(axis=2)
    per_class = np.array([means[data.train_labels == k].mean(axis=0) for k in range(10)])
    assert np.ptp(per_class, axis=0).max() < 20        # class-average colours nearly equal


def test_linear_classifier_does_not_solve_it(default):
    """Softmax regression on normalised raw pixels stays far from solving the task."""
    data, _ = default

    def features(x):
        z = (x / 255.0 - data.mean[None, :, None, None]) / data.std[None, :, None, None]
        return z.reshape(len(x), -1).astype(np.float32)

    X, Xt = features(data.train_images), features(data.test_images)
    y, yt = data.train_labels, data.test_labels
    rng = np.random.default_rng(0)
    W = np.zeros((X.shape[1], 10), np.float32)
    b = np.zeros(10, np.float32)
    for _ in range(5):
        for idx in np.array_split(rng.permutation(len(X)), len(X) // 100):
            z = X[idx] @ W + b
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1
            W -= 0.01 * (X[idx].T @ p / len(idx) + 1e-4 * W)
            b -= 0.01 * p.mean(axis=0)
    accuracy = ((Xt @ W + b).argmax(axis=1) == yt).mean()
    assert accuracy < 0.5, f"a linear classifier reached {accuracy:.1%} test accuracy"
