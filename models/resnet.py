"""The two networks the assignment compares, and the variants that take them apart."""
from torch import nn

from models.blocks import BasicBlock, ConstantWidthDownSampling, DownSamplingBlock, conv3x3


def stem(dim: int) -> nn.Sequential:
    """3x3 conv 3->dim, BN, ReLU: the input layer both nets share."""
    return nn.Sequential(conv3x3(3, dim), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))


def classifier(dim: int, num_classes: int) -> nn.Sequential:
    """Global average pool and a linear layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, num_classes))


class SingleStageResNet(nn.Module):
    """The CIFAR-10 tutorial net: stem 3->32, `n_blocks` 32-channel blocks at 32x32, pool, linear. `dilations` (one per
    block, default all 1) widens the receptive field without changing parameters, MACs or resolution."""

    def __init__(self, n_blocks: int = 6, num_classes: int = 100, width: int = 32, dilations: tuple[int, ...] = ()):
        super().__init__()
        dilations = dilations or (1,) * n_blocks
        if len(dilations) != n_blocks:
            raise ValueError(f"one dilation per block: {n_blocks} blocks, {len(dilations)} dilations")
        self.stem = stem(width)
        self.stage1 = nn.Sequential(*[BasicBlock(width, dilation) for dilation in dilations])
        self.head = classifier(width, num_classes)

    def forward(self, x):
        return self.head(self.stage1(self.stem(x)))


def transition(dim_in: int, dim: int) -> nn.Module:
    """The block that opens a stage at half the resolution: the assignment's DownSamplingBlock where the channels
    double, ConstantWidthDownSampling where they stay."""
    return ConstantWidthDownSampling(dim) if dim == dim_in else DownSamplingBlock(dim_in, dim)


class MultiStageResNet(nn.Module):
    """Three stages at 32x32, 16x16 and 8x8 with `widths` channels (the assignment's 16, 32, 64), each later stage
    opened by a stride-2 transition.

    `blocks_per_stage` counts every residual block of a stage, the transition included, so the default 2 gives the
    same six blocks as the single-stage net and 3 gives the paper's ResNet-20.
    """

    def __init__(self, blocks_per_stage: int = 2, num_classes: int = 100, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be at least 1, got {blocks_per_stage}")
        repeat = blocks_per_stage - 1
        w1, w2, w3 = widths
        self.stem = stem(w1)
        self.stage1 = nn.Sequential(*[BasicBlock(w1) for _ in range(blocks_per_stage)])
        self.stage2 = nn.Sequential(transition(w1, w2), *[BasicBlock(w2) for _ in range(repeat)])
        self.stage3 = nn.Sequential(transition(w2, w3), *[BasicBlock(w3) for _ in range(repeat)])
        self.head = classifier(w3, num_classes)

    def forward(self, x):
        return self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))
