"""Lesson 4: the two uses of a shared weight keep their OWN BatchNorm.

Run: python docs/lessons/04_one_batchnorm_per_use.py

The two convolutions of a block see differently distributed inputs, so their outputs have
different statistics. The paper shares only the convolution weight; each use keeps its
BatchNorm, whose running statistics then follow that use alone, updated once per step.
"""
import numpy as np

from minires.autograd import Tensor
from minires.models.resnet import BasicBlock

block = BasicBlock(8, 8, share_convs=True, rng=np.random.default_rng(0), dtype=np.float64)
assert block.conv1.weight is block.conv2.weight      # the weight is shared ...
assert block.bn1 is not block.bn2                    # ... the BatchNorms are not
print("block.conv1.weight is block.conv2.weight:", block.conv1.weight is block.conv2.weight)
print("block.bn1 is block.bn2:                  ", block.bn1 is block.bn2)

# Record what each BatchNorm normalises and how often it is called, with forward hooks.
seen = {"bn1": [], "bn2": []}
for name in seen:
    getattr(block, name).register_forward_hook(
        lambda module, inputs, output, name=name: seen[name].append(inputs[0].data))

x = Tensor(np.random.default_rng(1).standard_normal((4, 8, 6, 6)))
block.train()
block(x)                                             # one training step's forward pass
calls = {name: len(inputs) for name, inputs in seen.items()}
print(f"\ncalls in one forward pass: {calls}")
assert calls == {"bn1": 1, "bn2": 1}

m1 = seen["bn1"][0].mean(axis=(0, 2, 3))             # batch mean of use 1's output
m2 = seen["bn2"][0].mean(axis=(0, 2, 3))             # batch mean of use 2's output
print(f"{'channel':>8} {'use 1 mean':>11} {'use 2 mean':>11} {'bn1 running':>12} "
      f"{'bn2 running':>12}")
for c in range(3):
    print(f"{c:>8} {m1[c]:11.5f} {m2[c]:11.5f} {block.bn1.running_mean[c]:12.5f} "
          f"{block.bn2.running_mean[c]:12.5f}")
# running_mean = 0.9 * 0 + 0.1 * batch mean: each updated once, from its own use.
np.testing.assert_allclose(block.bn1.running_mean, 0.1 * m1, rtol=1e-12)
np.testing.assert_allclose(block.bn2.running_mean, 0.1 * m2, rtol=1e-12)
assert np.abs(m1 - m2).max() > 0.05, "the two uses see different statistics"
print("\nEach running mean is 0.1 x the batch mean of its own use: updated once, from one "
      "distribution.")
print("One BatchNorm for both uses would be updated twice per step from a blend of the two:")
print("see it switched on with minires explain --break bn-twice")
