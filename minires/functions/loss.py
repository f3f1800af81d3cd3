"""Loss functions."""
from __future__ import annotations

from minires.autograd import Function, unwrap
from minires.backend import get_array_module, is_cuda_array
from minires.kernels import cuda


class SoftmaxCrossEntropy(Function):
    """Mean over the batch of ``-log softmax(logits)[label]``."""

    def __init__(self, labels):
        self.labels = labels

    def forward(self, logits):
        if is_cuda_array(logits):  # no host-side label check: that would sync every step
            loss, self.log_z = cuda.softmax_cross_entropy_forward(logits, self.labels)
            self.logits = logits
            return loss
        xp = get_array_module(logits)
        N, K = logits.shape
        labels = self.labels
        if labels.shape != (N,):
            raise ValueError(f"softmax_cross_entropy: labels must be shaped ({N},), got "
                             f"{labels.shape}")
        if labels.dtype.kind not in "iu" or int(labels.min()) < 0 or int(labels.max()) >= K:
            raise ValueError(f"softmax_cross_entropy: labels must be integers in [0, {K})")
        shifted = logits - logits.max(axis=1, keepdims=True)  # avoids overflow in exp
        log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_z
        self.probs = xp.exp(log_p)
        rows = xp.arange(N)
        return -log_p[rows, labels].mean(dtype=logits.dtype).astype(logits.dtype)

    def backward(self, gy):
        if is_cuda_array(gy):
            return cuda.softmax_cross_entropy_backward(gy, self.logits, self.labels, self.log_z)
        xp = get_array_module(gy)
        N = self.probs.shape[0]
        g = self.probs.copy()
        g[xp.arange(N), self.labels] -= 1
        return g * (gy / N)


def softmax_cross_entropy(logits, labels):
    """Cross-entropy of ``logits (N, K)`` against integer ``labels (N,)``, mean over N."""
    xp = get_array_module(logits)
    return SoftmaxCrossEntropy(xp.asarray(unwrap(labels)))(logits)
