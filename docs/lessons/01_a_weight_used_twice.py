"""Lesson 1: a weight used twice gets the SUM of the gradients of its two uses.

Run: python docs/lessons/01_a_weight_used_twice.py
"""
import numpy as np

import minires.functions as F
from minires.autograd import Parameter, Tensor
from minires.gradcheck import numerical_grad

# A number first. y = w * a + w * b uses w twice: dy/dw = a + b, one term per use.
w = Parameter(np.array(3.0))
a, b = 2.0, 5.0
y = w * a + w * b
y.backward()
print(f"y = w*a + w*b with a = {a}, b = {b}:  dy/dw = {float(w.grad)}  (a + b = {a + b})")
assert float(w.grad) == a + b

# Now a convolution weight, used by two convolutions as in a shared residual block:
#     y = conv(relu(conv(x, W)), W)
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 5, 5))
weight = rng.standard_normal((3, 3, 3, 3)) * 0.3
gy = rng.standard_normal((2, 3, 5, 5))    # a random upstream gradient (ones could hide bugs)


def two_uses(W_first, W_second):
    return F.conv2d(F.relu(F.conv2d(Tensor(x), W_first, pad=1)), W_second, pad=1)


# Untied: two Parameters holding the same values. Each one's gradient is what its use gives.
W1, W2 = Parameter(weight.copy()), Parameter(weight.copy())
two_uses(W1, W2).backward(gy)

# Tied: ONE Parameter used by both convolutions. The engine adds the two gradients.
W = Parameter(weight.copy())
two_uses(W, W).backward(gy)

# Numerical: move W (so both uses move) and watch sum(y * gy) change.
(numerical,) = numerical_grad(lambda w: two_uses(w, w), [weight.copy()], gy)

print(f"\n{'W index':>12} {'use 1':>10} {'use 2':>10} {'use1+use2':>10} {'W.grad':>10} "
      f"{'numerical':>10}")
for k in [(0, 0, 0, 0), (1, 2, 1, 0), (2, 1, 2, 2)]:
    values = (W1.grad[k], W2.grad[k], W1.grad[k] + W2.grad[k], W.grad[k], numerical[k])
    print(f"{str(list(k)):>12} " + " ".join(f"{v:10.5f}" for v in values))

np.testing.assert_allclose(W.grad, W1.grad + W2.grad, rtol=1e-12, atol=1e-12)
np.testing.assert_allclose(W.grad, numerical, rtol=1e-6, atol=1e-8)
assert not np.allclose(W1.grad, W2.grad), "the two uses contribute different gradients"
print("\nW.grad is the sum of both uses, and the numerical gradient agrees.")
print("See it on the library's own shared block: minires explain (and minires explain --trace).")
