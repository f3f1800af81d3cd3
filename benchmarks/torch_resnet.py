"""The CIFAR ResNet of ``minires.models.resnet`` written in PyTorch, for side-by-side runs.

Benchmark-only (PyTorch is never a dependency of minires): the CPU and GPU step benchmarks and
the accuracy reference all build this one model. Option-A shortcuts; with ``share="block"``
conv2 applies conv1's Parameter wherever the two convolutions have the same shape.
"""


def torch_resnet(torch, depth: int, share: str = "none", num_classes: int = 10):
    """A PyTorch ResNet-``depth`` (``6n + 2``); ``torch`` is the imported module."""
    nn, TF = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.same = cin == cout and stride == 1
            if share == "block" and self.same:
                self.conv2.weight = self.conv1.weight  # one Parameter, two uses
            self.extra, self.stride = cout - cin, stride

        def forward(self, x):
            h = TF.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(h))
            shortcut = x
            if not self.same:
                before = self.extra // 2
                shortcut = TF.pad(x[:, :, ::self.stride, ::self.stride],
                                  (0, 0, 0, 0, before, self.extra - before))
            return TF.relu(y + shortcut)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            stages, cin = [], 16
            for cout, stride in ((16, 1), (32, 2), (64, 2)):
                blocks = []
                for i in range(n):
                    blocks.append(Block(cin, cout, stride if i == 0 else 1))
                    cin = cout
                stages.append(nn.Sequential(*blocks))
            self.stage1, self.stage2, self.stage3 = stages
            self.fc = nn.Linear(64, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):  # He et al.'s init, as minires.nn.Conv2d
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            x = TF.relu(self.bn1(self.conv1(x)))
            x = self.stage3(self.stage2(self.stage1(x)))
            return self.fc(x.mean(dim=(2, 3)))

    return ResNet()
