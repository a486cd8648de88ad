import pytest
import torch
from torch import nn

from models import ARCHITECTURES, DownSamplingBlock, MultiStageResNet, SingleStageResNet, build_model, count_parameters


def stage_shapes(model: nn.Module, image_size: int = 32) -> dict:
    """Output shape of every stage, captured with forward hooks."""
    shapes = {}
    for name, module in model.named_children():
        module.register_forward_hook(lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, image_size, image_size))
    return shapes


def test_multistage_stage_shapes():
    shapes = stage_shapes(MultiStageResNet(num_classes=100))
    assert shapes == {
        "stem": (2, 16, 32, 32),
        "stage1": (2, 16, 32, 32),
        "stage2": (2, 32, 16, 16),
        "stage3": (2, 64, 8, 8),
        "head": (2, 100),
    }


def test_singlestage_stage_shapes():
    shapes = stage_shapes(SingleStageResNet(num_classes=10))
    assert shapes == {"stem": (2, 32, 32, 32), "stage1": (2, 32, 32, 32), "head": (2, 10)}


@pytest.mark.parametrize(
    "arch, blocks, expected",
    [("singlestage", 2, 116_004), ("multistage", 2, 181_572), ("multistage", 3, 279_012)],
)
def test_parameter_counts_for_100_classes(arch, blocks, expected):
    assert count_parameters(build_model(arch, 100, blocks_per_stage=blocks)) == expected


def test_default_multistage_has_six_residual_blocks_like_singlestage():
    def residual_blocks(model):
        return [m for m in model.modules() if type(m).__name__ in ("BasicBlock", "DownSamplingBlock")]

    assert len(residual_blocks(build_model("multistage", 100))) == 6
    assert len(residual_blocks(build_model("singlestage", 100))) == 6
    assert len(residual_blocks(build_model("multistage", 100, blocks_per_stage=3))) == 9


def test_downsampling_block_shortcut_is_strided_1x1_conv_without_bias_and_bn():
    block = DownSamplingBlock(16, 32)
    conv, bn = block.shortcut
    assert (conv.kernel_size, conv.stride, conv.bias) == ((1, 1), (2, 2), None)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 32
    assert block.conv1.stride == (2, 2) and block.conv1.bias is not None
    assert block(torch.randn(1, 16, 32, 32)).shape == (1, 32, 16, 16)


def test_downsampling_block_rejects_channels_that_do_not_double():
    with pytest.raises(ValueError, match=r"dim must be 2 \* dim_in = 32"):
        DownSamplingBlock(16, 48)


def test_build_model_unknown_name():
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'"):
        build_model("resnet50", 10)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_overfits_a_tiny_batch(arch):
    """Proof that the net learns: 8 random images with fixed labels are memorised."""
    torch.manual_seed(0)
    model = build_model(arch, 100)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(images), labels)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = nn.functional.cross_entropy(model(images), labels).item()
        predictions = model(images).argmax(1)
    assert first > 4.0  # ln(100) = 4.6 at the start
    assert final < 0.05
    assert torch.equal(predictions, labels)
