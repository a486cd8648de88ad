"""Residual blocks of the CIFAR ResNets: one short class per block, the shortcut as a module."""
from torch import nn


def conv3x3(dim_in: int, dim_out: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution that keeps the size (padding = dilation); keeps PyTorch's default bias, as the assignment's
    code does."""
    return nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=stride, padding=dilation, dilation=dilation)


class BasicBlock(nn.Module):
    """The tutorial block: 3x3 conv-BN-ReLU, 3x3 conv-BN, identity shortcut, add, ReLU (both convolutions dilated
    by `dilation`, 1 in the tutorial)."""

    def __init__(self, dim: int, dilation: int = 1):
        super().__init__()
        self.conv1 = conv3x3(dim, dim, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = conv3x3(dim, dim, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(dim)
        self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class DownSamplingBlock(nn.Module):
    """Halves the resolution and doubles the channels.

    3x3 stride-2 conv-BN-ReLU, 3x3 conv-BN; the shortcut is a 1x1 stride-2 conv without bias
    (BatchNorm follows, so a bias would be redundant) + BatchNorm; add; ReLU.
    """

    def __init__(self, dim_in: int, dim: int):
        super().__init__()
        if dim != 2 * dim_in:
            raise ValueError(
                f"DownSamplingBlock({dim_in}, {dim}): dim must be 2 * dim_in = {2 * dim_in}, because the block "
                "halves the resolution and doubles the channels"
            )
        self.conv1 = conv3x3(dim_in, dim, stride=2)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = conv3x3(dim, dim)
        self.bn2 = nn.BatchNorm2d(dim)
        self.shortcut = nn.Sequential(
            nn.Conv2d(dim_in, dim, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(dim),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ConstantWidthDownSampling(nn.Module):
    """Halves the resolution and keeps the channels: DownSamplingBlock's layout (3x3 stride-2 conv-BN-ReLU, 3x3
    conv-BN, shortcut 1x1 stride-2 conv without bias + BatchNorm, add, ReLU) for a net whose stages are equally wide."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = conv3x3(dim, dim, stride=2)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = conv3x3(dim, dim)
        self.bn2 = nn.BatchNorm2d(dim)
        self.shortcut = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=1, stride=2, bias=False), nn.BatchNorm2d(dim))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))
