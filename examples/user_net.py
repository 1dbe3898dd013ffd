"""A model of your own, as latprof takes it: a factory function in a file.

    latprof sweep --model examples/user_net.py:build --batch 1 --quick
    latprof prune examples/user_net.py:build --table tables/<device>.parquet --target-ratio 0.6 --compare

It holds the parts a user's network tends to have: a squeeze-and-excitation block, a grouped
conv, a concatenation of two branches, a depthwise conv, a channel shuffle between two grouped
1x1 convs (as in ShuffleNet) and a Linear classifier. latprof prices every conv and Linear at
the channels it really receives (the concatenation's consumer at the sum of both branches) and
prunes each coupled group together (the SE block with the channels it scales, the grouped conv
in multiples of its 4 groups); the channels that pass through the shuffle are kept whole.
"""

import torch
import torch.nn as nn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(s))))


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UserNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 32, stride=2)
        self.grouped = conv_bn(32, 64, groups=4)                 # 4 groups of 8 -> 16 channels each
        self.se = SqueezeExcite(64, 16)
        self.branch_a = conv_bn(64, 48, k=1)
        self.branch_b = nn.Sequential(conv_bn(64, 32, k=1), conv_bn(32, 32, groups=32))   # depthwise
        self.fuse = conv_bn(48 + 32, 128, stride=2)              # reads the concatenation: 80 channels
        self.squeeze = conv_bn(128, 64, k=1, groups=4)
        self.mix = conv_bn(64, 128, k=1, groups=4)               # reads squeeze's channels shuffled
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        x = self.se(self.grouped(self.stem(x)))
        x = self.fuse(torch.cat([self.branch_a(x), self.branch_b(x)], dim=1))
        x = self.mix(channel_shuffle(self.squeeze(x), 4))
        return self.head(x.mean((2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def build() -> nn.Module:
    model = UserNet()
    model.latprof_input_size = (3, 64, 64)
    return model
