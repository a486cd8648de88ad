"""The two networks the assignment compares."""
from torch import nn

from models.blocks import BasicBlock, DownSamplingBlock, conv3x3


def stem(dim: int) -> nn.Sequential:
    """3x3 conv 3->dim, BN, ReLU: the input layer both nets share."""
    return nn.Sequential(conv3x3(3, dim), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))


def classifier(dim: int, num_classes: int) -> nn.Sequential:
    """Global average pool and a linear layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, num_classes))


class SingleStageResNet(nn.Module):
    """The CIFAR-10 tutorial net: stem 3->32, `n_blocks` 32-channel blocks at 32x32, pool, linear."""

    def __init__(self, n_blocks: int = 6, num_classes: int = 100, width: int = 32):
        super().__init__()
        self.stem = stem(width)
        self.stage1 = nn.Sequential(*[BasicBlock(width) for _ in range(n_blocks)])
        self.head = classifier(width, num_classes)

    def forward(self, x):
        return self.head(self.stage1(self.stem(x)))


class MultiStageResNet(nn.Module):
    """Three stages: 32x32x16, 16x16x32, 8x8x64, joined by DownSamplingBlocks.

    `blocks_per_stage` counts every residual block of a stage, the DownSamplingBlock included, so the
    default 2 gives the same six blocks as the single-stage net and 3 gives the paper's ResNet-20.
    """

    def __init__(self, blocks_per_stage: int = 2, num_classes: int = 100, width: int = 16):
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be at least 1, got {blocks_per_stage}")
        repeat = blocks_per_stage - 1
        self.stem = stem(width)
        self.stage1 = nn.Sequential(*[BasicBlock(width) for _ in range(blocks_per_stage)])
        self.stage2 = nn.Sequential(DownSamplingBlock(width, 2 * width), *[BasicBlock(2 * width) for _ in range(repeat)])
        self.stage3 = nn.Sequential(
            DownSamplingBlock(2 * width, 4 * width), *[BasicBlock(4 * width) for _ in range(repeat)]
        )
        self.head = classifier(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))
