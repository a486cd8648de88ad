"""A network of one's own: python run.py --compare singlestage multistage examples/se_resnet.py:SEResNet"""
from torch import nn


def conv_bn(dim_in, dim, kernel=3, stride=1):
    return nn.Sequential(nn.Conv2d(dim_in, dim, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(dim))


class SEBlock(nn.Module):
    """A residual block whose channels squeeze-and-excitation reweighs: one gate per channel, from the whole map."""

    def __init__(self, dim_in, dim, stride=1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(dim_in, dim, stride=stride), nn.ReLU(), conv_bn(dim, dim))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // 4, 1), nn.ReLU(),
                                  nn.Conv2d(dim // 4, dim, 1), nn.Sigmoid())
        self.shortcut = nn.Identity() if dim == dim_in else conv_bn(dim_in, dim, kernel=1, stride=stride)

    def forward(self, x):
        out = self.body(x)
        return (out * self.gate(out) + self.shortcut(x)).relu()


def SEResNet(num_classes, blocks_per_stage=2):
    """the multi-stage net with squeeze-and-excitation: every block reweighs its channels from the whole image"""
    dims = [16] + [dim for dim in (16, 32, 64) for _ in range(blocks_per_stage)]
    blocks = [SEBlock(dim_in, dim, stride=2 if dim > dim_in else 1) for dim_in, dim in zip(dims, dims[1:])]
    return nn.Sequential(conv_bn(3, 16), nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, num_classes))
