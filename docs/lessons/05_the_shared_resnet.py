"""Lesson 5: the shared ResNet-20 and its parameter count, 269,722 -> 170,650.

Run: python docs/lessons/05_the_shared_resnet.py
"""
from minires import models

unshared = models.resnet(20, share="none")
shared = models.resnet(20, share="block")        # the paper: one 3x3 weight per block

# Which blocks share? Those whose two convolutions have the same shape: every block but the
# first of stages 2 and 3, which changes the width (16 -> 32, 32 -> 64) and the stride.
saved_by_hand = 0
print(f"{'block':<10} {'channels':>9} {'shared':>7} {'saves 9*C*C':>12}")
for stage_name in ("stage1", "stage2", "stage3"):
    for i, block in enumerate(getattr(shared, stage_name)):
        C = block.conv2.out_channels
        saves = 9 * C * C if block.is_shared else 0
        saved_by_hand += saves
        print(f"{stage_name}.{i:<3} {block.conv1.in_channels:>4}->{C:<4} "
              f"{'yes' if block.is_shared else 'no':>7} {saves:>12,}")
        assert block.is_shared == (i > 0 or stage_name == "stage1")
        assert block.bn1 is not block.bn2

n_unshared, n_shared = unshared.num_parameters(), shared.num_parameters()
print(f"\nResNet-20 parameters: unshared {n_unshared:,}, shared {n_shared:,}")
print(f"saved {n_unshared - n_shared:,} = the table's {saved_by_hand:,} "
      f"(3 x 2,304 + 2 x 9,216 + 2 x 36,864)")
print(f"that is {100 * (n_unshared - n_shared) / n_unshared:.2f}% of the network")
assert (n_unshared, n_shared) == (269_722, 170_650)
assert n_unshared - n_shared == saved_by_hand == 3 * 2304 + 2 * 9216 + 2 * 36864

# Seven weights have two names each; everything that counts, steps or saves sees them once.
aliases = {first: names for first, names in shared.parameter_uses().items() if len(names) > 1}
print(f"\n{len(aliases)} shared weights, for example {next(iter(aliases.values()))}")
assert len(aliases) == 7
assert len(shared.state_dict()) == len(unshared.state_dict()) - 7

# ShaResNet-like sharing across the blocks of a stage, for comparison.
print(f"share='stage' (one conv1 and one conv2 weight per stage): "
      f"{models.resnet(20, share='stage').num_parameters():,}")
print("\nThe same table, layer by layer: minires summary --shared")
