"""Plain NumPy references, written for clarity rather than speed, that the tests compare with."""
import numpy as np


def conv2d_loops(x, W, b=None, stride=(1, 1), pad=(0, 0)):
    """Convolution by explicit loops over output positions: x (N, C, H, W), W (OC, C, KH, KW)."""
    N, C, H, W_in = x.shape
    OC, _, KH, KW = W.shape
    SH, SW = stride
    PH, PW = pad
    xp = np.zeros((N, C, H + 2 * PH, W_in + 2 * PW), dtype=x.dtype)
    xp[:, :, PH:PH + H, PW:PW + W_in] = x
    OH = (H + 2 * PH - KH) // SH + 1
    OW = (W_in + 2 * PW - KW) // SW + 1
    y = np.zeros((N, OC, OH, OW), dtype=x.dtype)
    for n in range(N):
        for oc in range(OC):
            for oh in range(OH):
                for ow in range(OW):
                    patch = xp[n, :, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW]
                    y[n, oc, oh, ow] = (patch * W[oc]).sum()
            if b is not None:
                y[n, oc] += b[oc]
    return y


def batch_norm_train(x, gamma, beta, eps=1e-5):
    """Normalise with the batch mean and biased variance over (N, H, W) for each channel."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes).reshape(shape)
    var = ((x - mean) ** 2).mean(axis=axes).reshape(shape)
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


def softmax_cross_entropy(logits, labels):
    rows = []
    for z, t in zip(logits, labels):
        z = z - z.max()
        rows.append(np.log(np.exp(z).sum()) - z[t])
    return np.mean(rows)


def max_pool_loops(x, k, s):
    N, C, H, W = x.shape
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for oh in range(OH):
        for ow in range(OW):
            y[:, :, oh, ow] = x[:, :, oh * s:oh * s + k, ow * s:ow * s + k].max(axis=(2, 3))
    return y
