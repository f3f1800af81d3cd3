"""Augmentation kernel against NumPy references, and the loader's batches and determinism."""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import cuda_emulator as emu
from minires.data import Loader
from minires.data.augment import (AugmentParams, apply, augment_batch, draw_params,
                                  normalization_constants)
from minires.kernels.cuda.augment import crop_flip_normalize_array_code

MEAN = np.array([0.49, 0.48, 0.45], np.float32)
STD = np.array([0.25, 0.24, 0.26], np.float32)


def images(n=37, C=3, H=32, W=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, C, H, W), dtype=np.uint8)


def loop_reference(batch, params, scale, shift):
    """One image at a time, the obvious way: zero-pad, crop, flip, normalise (as torchvision's
    RandomCrop(padding=pad) + RandomHorizontalFlip + Normalize)."""
    B, C, H, W = batch.shape
    P = params.pad
    out = np.empty((B, C, H, W), np.float32)
    for i in range(B):
        padded = np.pad(batch[i], ((0, 0), (P, P), (P, P)))     # zeros in uint8 space
        crop = padded[:, params.dy[i]:params.dy[i] + H, params.dx[i]:params.dx[i] + W]
        if params.flip[i]:
            crop = crop[:, :, ::-1]
        out[i] = crop.astype(np.float32) * scale[:, None, None] - shift[:, None, None]
    return out


@pytest.mark.parametrize("pad", [0, 1, 4, 8])
@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 16, 16), (1, 7, 11)])
def test_kernel_matches_references(pad, shape):
    x = images(23, *shape, seed=pad)
    rng = np.random.default_rng(1)
    params = draw_params(rng, len(x), "crop_flip", pad=pad)
    mean, std = np.full(shape[0], 0.4), np.full(shape[0], 0.3)
    scale, shift = normalization_constants(mean, std)
    expected = loop_reference(x, params, scale, shift)
    np.testing.assert_array_equal(crop_flip_normalize_array_code(
        np, x, params.dy, params.dx, params.flip, params.pad, scale, shift), expected)
    for parallel in (True, False):
        got = apply(x, np.arange(len(x)), params, scale, shift, parallel=parallel)
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.float32 and got.flags.c_contiguous


def test_kernel_gathers_through_index():
    x = images(10)
    index = np.array([7, 2, 2, 9])
    params = draw_params(np.random.default_rng(3), 4, "crop_flip")
    scale, shift = normalization_constants(MEAN, STD)
    np.testing.assert_array_equal(apply(x, index, params, scale, shift),
                                  loop_reference(x[index], params, scale, shift))


def test_crop_offsets_and_flip_by_hand():
    x = images(1, 1, 6, 6)
    unit = normalization_constants([0.0], [1 / 255])          # scale 1, shift 0: raw pixels
    one = lambda dy, dx, flip: AugmentParams(np.array([dy]), np.array([dx]),  # noqa: E731
                                             np.array([flip]), 4)
    centre = apply(x, [0], one(4, 4, False), *unit)[0, 0]
    np.testing.assert_array_equal(centre, x[0, 0])            # origin = pad: no shift
    top_left = apply(x, [0], one(0, 0, False), *unit)[0, 0]
    assert (top_left[:4] == 0).all() and (top_left[:, :4] == 0).all()   # four rows/cols of pad
    np.testing.assert_array_equal(top_left[4:, 4:], x[0, 0, :2, :2])
    shifted = apply(x, [0], one(5, 6, False), *unit)[0, 0]
    np.testing.assert_array_equal(shifted[:5, :4], x[0, 0, 1:, 2:])    # down 1, right 2
    assert (shifted[5:] == 0).all() and (shifted[:, 4:] == 0).all()
    flipped = apply(x, [0], one(4, 4, True), *unit)[0, 0]
    np.testing.assert_array_equal(flipped, x[0, 0, :, ::-1])
    flip_shift = apply(x, [0], one(4, 6, True), *unit)[0, 0]    # crop, then mirror
    crop = np.concatenate([x[0, 0, :, 2:], np.zeros((6, 2))], axis=1)  # right edge is padding
    np.testing.assert_array_equal(flip_shift, crop[:, ::-1])


def test_padding_value_is_zero_pixel_after_normalisation():
    x = np.full((1, 3, 8, 8), 200, np.uint8)
    scale, shift = normalization_constants(MEAN, STD)
    out = apply(x, [0], AugmentParams(np.array([0]), np.array([0]), np.array([False]), 4),
                      scale, shift)
    np.testing.assert_allclose(out[0, :, 0, 0], (0 - MEAN) / STD, rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 7, 7], (200 / 255 - MEAN) / STD, rtol=1e-6)


def test_draw_params_distribution():
    p = draw_params(np.random.default_rng(0), 20000, "crop_flip", pad=4)
    assert p.dy.min() == 0 and p.dy.max() == 8 and p.dx.min() == 0 and p.dx.max() == 8
    assert abs(p.flip.mean() - 0.5) < 0.02
    assert abs(np.bincount(p.dy, minlength=9) / 20000 - 1 / 9).max() < 0.02
    f = draw_params(np.random.default_rng(0), 100, "flip")
    assert f.pad == 0 and not f.dy.any() and 0 < f.flip.sum() < 100
    n = draw_params(np.random.default_rng(0), 100, None)
    assert not n.flip.any() and not n.dx.any()


def collect(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(xa, xb) and np.array_equal(ya, yb)
                                    for (xa, ya), (xb, yb) in zip(a, b, strict=True))


def make_loader(x, y, **kwargs):
    options = {"shuffle": True, "augment": "crop_flip", "mean": MEAN, "std": STD, "seed": 3}
    options.update(kwargs)
    return Loader(x, y, 8, **options)


def test_batches_shapes_and_coverage():
    x = images(37)
    y = np.arange(37)
    loader = make_loader(x, y)
    assert len(loader) == 5
    batches = collect(loader)
    assert [len(b[1]) for b in batches] == [8, 8, 8, 8, 5]
    for bx, by in batches:
        assert bx.dtype == np.float32 and bx.flags.c_contiguous and bx.shape[1:] == (3, 32, 32)
        assert by.dtype == np.int64
    assert sorted(np.concatenate([b[1] for b in batches])) == list(range(37))
    assert len(make_loader(x, y, drop_last=True)) == 4
    assert [len(b[1]) for b in make_loader(x, y, drop_last=True)] == [8] * 4


def test_batches_match_reference_of_the_plan():
    x = images(37)
    y = np.arange(37) % 10
    loader = make_loader(x, y)
    loader.set_epoch(4)
    plan = loader.plan()
    scale, shift = normalization_constants(MEAN, STD)
    expected = loop_reference(x[plan.order], plan.params, scale, shift)
    got = np.concatenate([b for b, _ in loader])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.concatenate([t for _, t in loader]), y[plan.order])


def test_determinism_and_resume():
    x, y = images(37), np.arange(37)
    a, b = make_loader(x, y), make_loader(x, y)
    assert same(collect(a), collect(a))                   # iterating twice: same epoch
    epochs_a = []
    for e in range(3):
        a.set_epoch(e)
        epochs_a.append(collect(a))
    b.set_epoch(2)                                        # a resumed run jumps to epoch 2
    assert same(collect(b), epochs_a[2])
    assert not same(epochs_a[0], epochs_a[1])
    c = make_loader(x, y, seed=4)
    assert not same(collect(c), epochs_a[0])


def test_prefetch_gives_identical_batches():
    x, y = images(37), np.arange(37)
    for e in (0, 5):
        plain, pre = make_loader(x, y), make_loader(x, y, prefetch=True)
        threads = make_loader(x, y, parallel=True)
        for loader in (plain, pre, threads):
            loader.set_epoch(e)
        assert same(collect(plain), collect(pre))
        assert same(collect(plain), collect(threads))


def test_prefetch_thread_stops_on_early_exit():
    x, y = images(64), np.arange(64)
    before = threading.active_count()
    loader = make_loader(x, y, prefetch=True)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    it = iter(loader)
    next(it)
    it.close()
    assert threading.active_count() == before


def test_no_augmentation_no_shuffle_is_plain_normalisation():
    x, y = images(20), np.arange(20)
    loader = Loader(x, y, 6, shuffle=False, augment=None, mean=MEAN, std=STD)
    got = np.concatenate([b for b, _ in loader])
    np.testing.assert_allclose(got, (x / 255.0 - MEAN[:, None, None]) / STD[:, None, None],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([t for _, t in loader]), y)


def test_flip_policy_only_mirrors():
    x, y = images(50), np.arange(50)
    loader = Loader(x, y, 50, shuffle=False, augment="flip", mean=MEAN, std=STD, seed=1)
    (bx, _), = list(loader)
    plain = (x / 255.0 - MEAN[:, None, None]) / STD[:, None, None]
    flipped = loader.plan().params.flip
    assert 0 < flipped.sum() < 50
    np.testing.assert_allclose(bx[flipped], plain[flipped][..., ::-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bx[~flipped], plain[~flipped], rtol=1e-5, atol=1e-5)


def test_augment_batch_entry_point():
    x = images(5)
    params = draw_params(np.random.default_rng(0), 5, "crop_flip")
    scale, shift = normalization_constants(MEAN, STD)
    np.testing.assert_array_equal(augment_batch(x, params, MEAN, STD),
                                  loop_reference(x, params, scale, shift))


@pytest.mark.parametrize("kwargs, message", [
    ({"augment": "rotate"}, "augment must be one of"),
    ({"mean": [0.5, 0.5], "std": [0.2, 0.2]}, "2 channels"),
    ({"std": [0.2, 0.0, 0.2]}, "std must be positive"),
    ({"seed": -1}, "seed must be"),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_loader(images(4), np.arange(4), **kwargs)
    with pytest.raises(ValueError, match="uint8"):
        make_loader(images(4).astype(np.float32), np.arange(4))


def test_array_code_path_gives_the_same_batches(monkeypatch):
    """The path taken for CuPy (gather on the images' side, augment with array code on the
    device), driven here by the tests' stand-in for ``cupy``: NumPy arrays of a type that
    minires takes for device arrays."""
    fake_cupy = emu.fake_cupy(None, emu.GuardedAllocator())
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    x, y = images(37), np.arange(37)
    for source in (x, emu.to_emulated_device(x)):  # images on the host, on the "device"
        for prefetch in (False, True):
            batches = collect(make_loader(source, y, xp=fake_cupy, prefetch=prefetch))
            assert all(type(bx) is emu.EmulatedDeviceArray for bx, _ in batches)
            assert same(collect(make_loader(x, y)), batches)


@pytest.mark.gpu
def test_cupy_path_matches_cpu():
    cupy = pytest.importorskip("cupy")
    from minires.backend import cuda_available

    if not cuda_available():
        pytest.skip("no usable GPU")
    x, y = images(37), np.arange(37)
    cpu = collect(make_loader(x, y))
    gpu = [(bx.get(), by.get()) for bx, by in make_loader(x, y, xp=cupy)]
    assert all(np.allclose(a[0], b[0], atol=1e-6) and np.array_equal(a[1], b[1])
               for a, b in zip(cpu, gpu, strict=True))
    on_device = [(bx.get(), by.get()) for bx, by in make_loader(cupy.asarray(x), y, xp=cupy)]
    assert all(np.allclose(a[0], b[0], atol=1e-6) for a, b in zip(cpu, on_device, strict=True))
