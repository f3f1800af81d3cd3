"""Loss functions."""
from __future__ import annotations

from minires.autograd import Function, unwrap


class SoftmaxCrossEntropy(Function):
    """Mean over the batch of ``-log softmax(logits)[label]``."""

    def __init__(self, labels):
        self.labels = labels

    def forward(self, logits):
        self.logits, self.labels = logits, self.k.xp.asarray(self.labels)
        loss, self.log_z = self.k.softmax_cross_entropy_forward(logits, self.labels)
        return loss

    def backward(self, gy):
        return self.k.softmax_cross_entropy_backward(gy, self.logits, self.labels, self.log_z)


def softmax_cross_entropy(logits, labels):
    """Cross-entropy of ``logits (N, K)`` against integer ``labels (N,)``, mean over N."""
    return SoftmaxCrossEntropy(unwrap(labels))(logits)
