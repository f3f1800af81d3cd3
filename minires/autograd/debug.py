"""Checks run after every op when debug mode is on (see ``config.debug_mode``)."""
from __future__ import annotations


def _check_finite(xp, array, what: str) -> None:
    if array.dtype.kind == "f" and not bool(xp.isfinite(array).all()):
        raise FloatingPointError(f"{what} contains NaN or Inf")


def check_forward(fn, inputs, outputs) -> None:
    """Outputs must be finite and float outputs must keep the inputs' float dtype."""
    xp = fn.k.xp
    float_dtypes = {t.data.dtype for t in inputs if t.data.dtype.kind == "f"}
    for i, y in enumerate(outputs):
        what = f"{fn.name}.forward output {i} (shape {tuple(y.shape)}, {y.dtype})"
        _check_finite(xp, y, what)
        if y.dtype.kind == "f" and float_dtypes and y.dtype not in float_dtypes:
            raise ValueError(f"{what}: expected dtype {sorted(map(str, float_dtypes))} "
                             f"like its inputs")


def check_backward(fn, gxs) -> None:
    """Each gradient must have its input's shape and dtype and be finite."""
    for i, (x, gx) in enumerate(zip(fn.inputs, gxs)):
        if gx is None:
            continue
        what = f"{fn.name}.backward gradient {i}"
        if tuple(gx.shape) != tuple(x.shape):
            raise ValueError(f"{what}: shape {tuple(gx.shape)}, expected the input's "
                             f"{tuple(x.shape)}")
        if gx.dtype != x.data.dtype:
            raise ValueError(f"{what}: dtype {gx.dtype}, expected the input's {x.data.dtype}")
        _check_finite(fn.k.xp, gx, what)
