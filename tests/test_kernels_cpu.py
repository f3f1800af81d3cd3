"""The numba im2col/col2im kernels against NumPy, and col2im as the adjoint of im2col."""
import numpy as np
import pytest

from minires.kernels import col2im, im2col

GEOMETRIES = [  # (N, C, H, W, KH, KW, SH, SW, PH, PW)
    (2, 3, 5, 6, 3, 3, 1, 1, 1, 1),
    (2, 3, 7, 6, 3, 3, 2, 2, 1, 1),
    (1, 2, 5, 7, 2, 3, 1, 2, 0, 1),
    (2, 4, 6, 6, 1, 1, 2, 2, 0, 0),
]


def im2col_numpy(x, KH, KW, SH, SW, PH, PW):
    N, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    col = np.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            col[:, :, kh, kw] = padded[:, :, kh:kh + SH * OH:SH, kw:kw + SW * OW:SW]
    return col


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_matches_numpy(geometry, dtype):
    N, C, H, W, *kernel = geometry
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(dtype)
    np.testing.assert_array_equal(im2col(x, *kernel), im2col_numpy(x, *kernel))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(geometry):
    # <im2col(x), c> == <x, col2im(c)> for all x, c: the defining property of the backward.
    N, C, H, W, KH, KW, SH, SW, PH, PW = geometry
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W))
    col = im2col(x, KH, KW, SH, SW, PH, PW)
    c = rng.standard_normal(col.shape)
    lhs = (col * c).sum()
    rhs = (x * col2im(c, H, W, SH, SW, PH, PW)).sum()
    assert lhs == pytest.approx(rhs, rel=1e-12)
