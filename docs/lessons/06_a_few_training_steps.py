"""Lesson 6: a few training steps of the shared ResNet-20, on the embedded dataset.

Run: python docs/lessons/06_a_few_training_steps.py

Each step is what `minires train` does per batch (minires.train.train_step): forget the old
gradients, forward, loss, backward (each shared weight gets the sum of its two uses), one
optimizer step (each shared weight moved once). Here the same small batch is used again and
again, so the loss must fall fast: the network memorises it.
"""
import numpy as np

from minires import models, optim
from minires.data import make_embedded
from minires.train import train_step

data = make_embedded(n_train=32, n_test=10, seed=0)
x = ((data.train_images / 255.0 - data.mean[None, :, None, None])
     / data.std[None, :, None, None]).astype(np.float32)        # normalised, (32, 3, 32, 32)
y = data.train_labels

model = models.resnet(20, share="block", seed=0)
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
block = model.stage1[0]
W = block.conv1.weight
W_start = W.data.copy()
print(f"ResNet-20, shared: {model.num_parameters():,} parameters, "
      f"{len(optimizer.params)} Parameters in the optimizer")

losses = []
for step in range(1, 16):
    loss, mistakes = train_step(model, optimizer, x, y)
    losses.append(float(loss))
    if step in (1, 2, 3, 5, 10, 15):
        print(f"step {step:2d}  loss {float(loss):.4f}  wrong {int(mistakes):2d}/{len(y)}  "
              f"stage1.0 W[0,0,1,1] {W.data[0, 0, 1, 1]:+.5f}")

assert block.conv2.weight is W, "still one Parameter after training"
assert not np.array_equal(W.data, W_start), "the shared weight was trained"
assert losses[-1] < 0.5 * losses[0], f"the loss should fall on a repeated batch: {losses}"
print(f"\nThe loss fell from {losses[0]:.3f} to {losses[-1]:.3f}; stage1.0's shared weight moved "
      f"{np.linalg.norm(W.data - W_start):.3f} and is still one Parameter.")
print("A real run: minires train --shared (one line per epoch; see the README for the figures).")
