"""Winograd F(2x2, 3x3) and F(4x4, 3x3) CPU kernels: the transforms against the matrices of
Lavin & Gray, agreement with the im2col convolution (float64 tight, float32 per ResNet-20 layer
shape), adjoint identities, and the chunk/thread split. (Gradient checks through ``F.conv2d``
and the shared transformed weight: tests/test_weight_transform.py.)"""
import numpy as np
import pytest

from minires.kernels.cpu import conv as im2col
from minires.kernels.cpu import parallel
from minires.kernels.cpu import winograd as wg
from minires.kernels.cpu import winograd_tiles as tiles

TILES = wg.TILE_SIZES
GEOMETRIES = [  # (N, C, OC, H, W, pad)
    (2, 3, 5, 7, 9, 1),    # odd sizes: the last tiles overhang the image; C != OC
    (1, 8, 8, 8, 8, 1),    # batch 1; tiles fit exactly; one 8-channel copy block
    (3, 13, 4, 6, 11, 0),  # no padding; 8-channel block plus 5 left over
    (2, 16, 9, 5, 5, 1),
    (2, 2, 3, 3, 4, 0),    # one output row
]

# The matrices of F(2, 3) and F(4, 3) as printed by Lavin & Gray, written out independently
# of the kernels' factored 1-D transforms.
BT = {2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
      4: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
          [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]}
AT = {2: [[1, 1, 1, 0], [0, 1, -1, -1]],
      4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]}
ONE_D = {2: (tiles.bt2, tiles.b2, tiles.at2, tiles.a2), 4: (tiles.bt4, tiles.b4, tiles.at4,
                                                            tiles.a4)}


def rel_error(a, ref):
    """Largest deviation relative to the largest reference value."""
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def im2col_reference(x, W, gy, pad):
    """``(y, gx, gW)`` of the stride-1 convolution by the im2col path."""
    y, saved = im2col.conv2d_forward(x, W, 1, 1, pad, pad)
    gx, gW = im2col.conv2d_backward(gy, W, saved, 1, 1, pad, pad)
    return y, gx, gW


def apply(fn, n_in):
    """The matrix of the 1-D transform ``fn`` of ``n_in`` scalars, column by column."""
    return np.array([fn(*np.eye(n_in)[i]) for i in range(n_in)], dtype=float).T


@pytest.mark.parametrize("m", TILES)
def test_one_d_transforms_are_the_papers_matrices(m):
    bt, b, at, a = ONE_D[m]
    BT_m, AT_m = np.array(BT[m], float), np.array(AT[m], float)
    np.testing.assert_array_equal(apply(bt, m + 2), BT_m)
    np.testing.assert_array_equal(apply(b, m + 2), BT_m.T)
    np.testing.assert_array_equal(apply(at, m + 2), AT_m)
    np.testing.assert_array_equal(apply(a, m), AT_m.T)


@pytest.mark.parametrize("m", TILES)
def test_weight_transform_gives_a_correlation_with_the_papers_matrices(m):
    # A^T [U(W) * (B^T d B)] A is the 3x3 cross-correlation of one a x a tile d with W.
    rng = np.random.default_rng(0)
    a = m + 2
    W = rng.standard_normal((1, 1, 3, 3))
    d = rng.standard_normal((a, a))
    U = wg.weight_transform(W, m)[:, 0, 0].reshape(a, a).T  # positions are column-major
    BT_m, AT_m = np.array(BT[m], float), np.array(AT[m], float)
    y = AT_m @ (U * (BT_m @ d @ BT_m.T)) @ AT_m.T
    expected = [[(d[i:i + 3, j:j + 3] * W[0, 0]).sum() for j in range(m)] for i in range(m)]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("m", TILES)
def test_float64_matches_im2col(m, geometry):
    N, C, OC, H, W, P = geometry
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W))
    Wt = rng.standard_normal((OC, C, 3, 3))
    gy = rng.standard_normal((N, OC, H + 2 * P - 2, W + 2 * P - 2))
    y_ref, gx_ref, gW_ref = im2col_reference(x, Wt, gy, P)

    U = wg.weight_transform(Wt, m)
    y = wg.winograd_forward(x, U, m, P, P)
    gx, gU = wg.winograd_backward(x, gy, U, m, P, P)
    assert y.shape == y_ref.shape and gx.shape == x.shape and gU.shape == U.shape
    assert rel_error(y, y_ref) < 1e-11
    assert rel_error(gx, gx_ref) < 1e-11
    assert rel_error(wg.weight_transform_adjoint(gU, m), gW_ref) < 1e-11
    # The single-gradient entry points agree with the fused pass.
    gx_only = wg.winograd_backward_data(gy, U, m, P, P, x.shape)
    gU_only = wg.winograd_backward_weight(x, gy, m, P, P)
    np.testing.assert_allclose(gx_only, gx, rtol=0, atol=1e-13 * np.abs(gx).max())
    np.testing.assert_allclose(gU_only, gU, rtol=0, atol=1e-13 * np.abs(gU).max())


# Measured float32 errors (max |error| / max |float64 result|, batch 8, 16, 32 and 128,
# realistic inputs: post-ReLU activations, He-initialised weights, unit-normal gy): im2col 2e-7
# to 7e-7; F(2x2) 2e-7 to 6e-7; F(4x4) 2e-6 to 7e-6 (y 3e-6 to 6e-6, gx 2e-6 to 4e-6, gW 3e-6 to
# 7e-6; the 3-channel first layer's gW is the largest). The bounds leave a margin of about 3.
FLOAT32_BOUND = {2: 2e-6, 4: 2e-5}
RESNET20_STRIDE1 = [(3, 16, 32), (16, 16, 32), (32, 32, 16), (64, 64, 8)]  # (C, OC, H)


@pytest.mark.parametrize("layer", RESNET20_STRIDE1)
@pytest.mark.parametrize("m", TILES)
def test_float32_error_per_resnet20_layer(m, layer):
    C, OC, H = layer
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, C, H, H)).astype(np.float32)
    if C > 3:
        x = np.maximum(x, 0)  # what a convolution after BatchNorm + ReLU sees
    W = (rng.standard_normal((OC, C, 3, 3)) * np.sqrt(2 / (9 * C))).astype(np.float32)
    gy = rng.standard_normal((8, OC, H, H)).astype(np.float32)
    y64, gx64, gW64 = im2col_reference(x.astype(np.float64), W.astype(np.float64),
                                       gy.astype(np.float64), 1)

    U = wg.weight_transform(W, m)
    assert U.dtype == np.float32
    y = wg.winograd_forward(x, U, m, 1, 1)
    gx, gU = wg.winograd_backward(x, gy, U, m, 1, 1)
    gW = wg.weight_transform_adjoint(gU, m)
    assert y.dtype == gx.dtype == gW.dtype == np.float32
    bound = FLOAT32_BOUND[m]
    assert rel_error(y, y64) < bound
    assert rel_error(gx, gx64) < bound
    assert rel_error(gW, gW64) < bound
    # ...and the float32 im2col path, which carries its own error (bounded by 2e-6 here).
    for ours, theirs in zip((y, gx, gW), im2col_reference(x, W, gy, 1)):
        assert rel_error(ours, theirs) < bound + 2e-6


@pytest.mark.parametrize("m", TILES)
def test_adjoint_identities(m):
    rng = np.random.default_rng(7)
    a = m + 2
    W = rng.standard_normal((5, 3, 3, 3))
    gU = rng.standard_normal((a * a, 3, 5))
    # The weight transform and its adjoint: <gU, U(W)> = <U^T(gU), W>.
    lhs = (gU * wg.weight_transform(W, m)).sum()
    assert lhs == pytest.approx((wg.weight_transform_adjoint(gU, m) * W).sum(), rel=1e-12)
    # The convolution is bilinear in (x, U): <y(x, U), gy> = <x, gx(gy, U)> = <U, gU(x, gy)>.
    x = rng.standard_normal((2, 3, 7, 5))
    U = wg.weight_transform(W, m)
    y = wg.winograd_forward(x, U, m, 1, 1)
    gy = rng.standard_normal(y.shape)
    gx, gU = wg.winograd_backward(x, gy, U, m, 1, 1)
    assert (y * gy).sum() == pytest.approx((x * gx).sum(), rel=1e-12)
    assert (y * gy).sum() == pytest.approx((U * gU).sum(), rel=1e-12)


@pytest.mark.parametrize("m", TILES)
def test_chunks_and_threads_do_not_change_the_result(m, monkeypatch):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 6, 9, 9))
    U = wg.weight_transform(rng.standard_normal((7, 6, 3, 3)), m)
    gy = rng.standard_normal((5, 7, 9, 9))
    y = wg.winograd_forward(x, U, m, 1, 1)
    gx, gU = wg.winograd_backward(x, gy, U, m, 1, 1)
    threads = parallel.num_threads()
    monkeypatch.setattr(wg, "CHUNK_BYTES", 1)  # one image per chunk
    try:
        for n in (1, 3):
            parallel.set_num_threads(n)
            np.testing.assert_array_equal(wg.winograd_forward(x, U, m, 1, 1), y)
            gx_n, gU_n = wg.winograd_backward(x, gy, U, m, 1, 1)
            np.testing.assert_array_equal(gx_n, gx)
            # gU is summed per worker, so the order of additions follows the split.
            np.testing.assert_allclose(gU_n, gU, rtol=1e-13, atol=1e-13 * np.abs(gU).max())
    finally:
        parallel.set_num_threads(threads)


@pytest.mark.parametrize("m", TILES)
def test_empty_batch(m):
    U = wg.weight_transform(np.ones((4, 3, 3, 3)), m)
    x, gy = np.zeros((0, 3, 5, 5)), np.zeros((0, 4, 5, 5))
    assert wg.winograd_forward(x, U, m, 1, 1).shape == (0, 4, 5, 5)
    gx, gU = wg.winograd_backward(x, gy, U, m, 1, 1)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gU, np.zeros_like(U))


def test_bad_arguments_are_refused():
    x = np.zeros((1, 3, 5, 5))
    with pytest.raises(ValueError, match="tile size"):
        wg.weight_transform(np.zeros((2, 3, 3, 3)), 3)
    with pytest.raises(ValueError, match="3x3 kernel"):
        wg.weight_transform(np.zeros((2, 3, 5, 5)), 2)
    with pytest.raises(ValueError, match="U must be"):
        wg.winograd_forward(x, wg.weight_transform(np.zeros((2, 4, 3, 3)), 2), 2, 1, 1)
    with pytest.raises(ValueError, match="U must be"):
        wg.winograd_forward(x, wg.weight_transform(np.zeros((2, 3, 3, 3)), 2), 4, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        wg.winograd_forward(np.zeros((1, 3, 1, 5)), wg.weight_transform(np.zeros((2, 3, 3, 3)),
                                                                          2), 2, 0, 0)
    with pytest.raises(ValueError, match="needs x"):
        wg.winograd_backward(None, np.zeros((1, 2, 5, 5)), None, 2, 1, 1, need_gx=False,
                             x_shape=x.shape)
    with pytest.raises(ValueError, match="gy must be"):
        wg.winograd_backward(x, np.zeros((1, 2, 4, 4)), None, 2, 1, 1, need_gx=False)


def test_tile_size_rule():
    choose = wg.choose_tile_size
    # ResNet-20's 3x3 stride-1 layers at batch 128 on two workers: F(4x4), first layer included.
    for C, OC, H in RESNET20_STRIDE1:
        assert choose((128, C, H, H), (OC, C, 3, 3), (1, 1), (1, 1), workers=2) == 4
    # No Winograd path: stride 2, 1x1 and 5x5 kernels.
    assert choose((128, 16, 32, 32), (32, 16, 3, 3), (2, 2), (1, 1)) is None
    assert choose((128, 16, 32, 32), (32, 16, 1, 1), (1, 1), (0, 0)) is None
    assert choose((128, 16, 32, 32), (32, 16, 5, 5), (1, 1), (2, 2)) is None
    # 2x2 outputs: one overhanging 6x6 tile per image does more work than four 4x4 tiles.
    assert choose((128, 64, 2, 2), (64, 64, 3, 3), (1, 1), (1, 1)) == 2
    # Too few tiles to amortise a wide layer's U (640 channels, 8x8, batch 4: 16 tiles).
    assert choose((4, 640, 8, 8), (640, 640, 3, 3), (1, 1), (1, 1)) == 2
    assert choose((128, 640, 8, 8), (640, 640, 3, 3), (1, 1), (1, 1), workers=2) == 4
