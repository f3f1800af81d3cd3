"""Lesson 3: a shared weight is counted, stepped and saved ONCE.

Run: python docs/lessons/03_collecting_parameters_once.py
"""
import numpy as np

from minires import optim
from minires.models.resnet import BasicBlock

shared = BasicBlock(16, 16, share_convs=True)      # conv2 applies conv1's Parameter
unshared = BasicBlock(16, 16, share_convs=False)
W = shared.conv1.weight
assert shared.conv2.weight is W

# One Parameter, two names: parameter_uses() keeps every name, parameters() yields it once.
uses = shared.parameter_uses()
print(f"names of W: {uses['conv1.weight']}")
assert uses["conv1.weight"] == ["conv1.weight", "conv2.weight"]
params = list(shared.parameters())
names = [name for name, _ in shared.named_parameters()]
print(f"parameters(): {len(params)} Parameters: {names}")
assert len(params) == 5 and sum(p is W for p in params) == 1    # uniqueness is by identity

# Counting: the shared block has one 16x16x3x3 weight less.
print(f"parameters: unshared {unshared.num_parameters():,}, shared {shared.num_parameters():,}"
      f" (one 3x3 weight less: 9 * 16 * 16 = {9 * 16 * 16:,})")
assert unshared.num_parameters() - shared.num_parameters() == 9 * 16 * 16

# Saving: the state stores W once, under its first name.
state = shared.state_dict()
print(f"state_dict keys with 'weight': {[k for k in state if 'weight' in k]}")
assert "conv1.weight" in state and "conv2.weight" not in state

# Stepping: SGD refuses a list that holds W twice (it would step W twice, with momentum and
# weight decay applied twice) ...
try:
    optim.SGD([("conv1.weight", W), ("conv2.weight", W)], lr=0.1)
    raise AssertionError("SGD accepted a repeated Parameter")
except ValueError as exc:
    print(f"SGD([W, W]) -> ValueError: {exc}")

# ... and given parameters(), it keeps one momentum buffer for W and moves it once per step.
optimizer = optim.SGD(shared.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
print(f"momentum buffers: {len(optimizer.momentum_buffers)}, one per Parameter")
assert len(optimizer.momentum_buffers) == 5
rng = np.random.default_rng(0)
for p in shared.parameters():
    p.grad = rng.standard_normal(p.shape).astype(p.dtype)
before = W.data.copy()
optimizer.step()
expected = before - 0.1 * (W.grad + 1e-4 * before)   # first step: v = g + wd * W
print(f"W moved by lr * (g + wd * W) exactly once: max error "
      f"{np.abs(W.data - expected).max():.1e}")
np.testing.assert_allclose(W.data, expected, rtol=1e-6, atol=1e-7)
print("\nminires/nn/module.py, named_parameters (de-duplication by identity); minires/optim.py, "
      "SGD.")
print("See the bug switched on: minires explain --break dedup")
