"""Lesson 2: summing gradients without aliasing: (x + x) + x must give 3, not 4.

Run: python docs/lessons/02_accumulation_without_aliasing.py
"""
import numpy as np

from minires.autograd import Tensor, accumulate
from minires.functions.arithmetic import Add

# An operation may hand the SAME array to two inputs: Add's gradient is gy for both.
add = Add()
a, b = Tensor(np.array([1.0]), requires_grad=True), Tensor(np.array([2.0]), requires_grad=True)
add(a, b)
gy = np.array([1.0])
ga, gb = add.backward(gy)
print(f"Add.backward(gy) returns the same array twice: ga is gb -> {ga is gb}")
assert ga is gb

# So the first gradient a tensor receives may be an array someone else also holds. Adding the
# next gradient INTO it (grad += g) would change the other holder too. The engine's
# accumulate() returns a new array instead and never writes into its arguments:
current, incoming = ga, gb
total = accumulate(current, incoming)
print(f"accumulate(g, g) = {total}, a new array: {total is not current}; g is still {current}")
assert total is not current and current[0] == 1.0 and total[0] == 2.0

# The classic test: y = (x + x) + x, so dy/dx = 3. The outer Add hands gy to (x + x) and to x;
# the inner Add hands the gradient of (x + x) to x twice. Accumulated in place, the shared
# array would double twice and x.grad would end at 4.
x = Tensor(np.array([2.0]), requires_grad=True)
y = (x + x) + x
y.backward()
print(f"y = (x + x) + x: dy/dx = {x.grad[0]:g} (by hand: 3)")
assert x.grad[0] == 3.0

# A leaf's .grad belongs to that leaf: changing one in place changes no other gradient.
u = Tensor(np.array([1.0, 2.0]), requires_grad=True)
v = Tensor(np.array([3.0, 4.0]), requires_grad=True)
upstream = np.array([1.0, 1.0])
(u + v).backward(upstream)
u.grad *= 0.5
print(f"after u.grad *= 0.5: u.grad = {u.grad}, v.grad = {v.grad}, upstream = {upstream}")
assert list(v.grad) == [1.0, 1.0] and list(upstream) == [1.0, 1.0]

print("\nminires/autograd/engine.py: accumulate (out of place) and accumulate_leaf (a private "
      "copy when shared).")
print("See the bug switched on: minires explain --break inplace")
