"""Model registry: `build_model(name, num_classes, **kw)` over a dict of architectures."""
from torch import nn

from models.blocks import BasicBlock, DownSamplingBlock
from models.resnet import MultiStageResNet, SingleStageResNet


def _single_stage(num_classes: int, blocks_per_stage: int = 2) -> nn.Module:
    # blocks_per_stage configures the multi-stage net only; the tutorial net always has six blocks.
    return SingleStageResNet(n_blocks=6, num_classes=num_classes)


def _multi_stage(num_classes: int, blocks_per_stage: int = 2) -> nn.Module:
    return MultiStageResNet(blocks_per_stage=blocks_per_stage, num_classes=num_classes)


ARCHITECTURES = {"singlestage": _single_stage, "multistage": _multi_stage}


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the architecture registered as `name` (see `ARCHITECTURES`)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "ARCHITECTURES", "BasicBlock", "DownSamplingBlock", "MultiStageResNet", "SingleStageResNet",
    "build_model", "count_parameters",
]
