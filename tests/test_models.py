import pytest
import torch
from torch import nn

from models import (ARCHITECTURES, BONUS_PAIR, ConstantWidthDownSampling, DownSamplingBlock, MultiStageResNet, SingleStageResNet,
                    build_model, count_parameters)
from models.stats import macs_per_image, receptive_field


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


@pytest.mark.slow
@pytest.mark.parametrize("arch", BONUS_PAIR)
def test_overfits_a_tiny_batch(arch):
    """Proof that the net learns: 8 random images with fixed labels are memorised. (The variants are built from the
    same blocks; their layouts are checked above, and the comparison tests train one.)"""
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


# Parameter counts by hand: a 3x3 conv with bias has 9 * c_in * c_out + c_out, a BatchNorm 2 * c.
def basic_block(d):
    return 2 * (9 * d * d + d) + 2 * 2 * d


def transition(c_in, c_out):
    return (9 * c_in * c_out + c_out) + 2 * c_out + (9 * c_out * c_out + c_out) + 2 * c_out + c_in * c_out + 2 * c_out


def multi_stage(w1, w2, w3, classes=100):
    stem, head = 27 * w1 + w1 + 2 * w1, w3 * classes + classes
    return stem + 2 * basic_block(w1) + transition(w1, w2) + basic_block(w2) + transition(w2, w3) + basic_block(w3) + head


@pytest.mark.parametrize("arch, widths", [("multistage", (16, 32, 64)), ("multistage-constwidth", (32, 32, 32)),
                                          ("multistage-narrow", (8, 16, 32))])
def test_multi_stage_variants_have_the_layout_and_parameters_of_their_widths(arch, widths):
    model = build_model(arch, 100)
    assert count_parameters(model) == multi_stage(*widths)
    shapes = stage_shapes(model)
    assert [shapes[f"stage{i}"] for i in (1, 2, 3)] == [(2, widths[0], 32, 32), (2, widths[1], 16, 16), (2, widths[2], 8, 8)]
    assert receptive_field(model) >= 32  # one output sees the whole image


def test_the_constant_width_transition_is_a_block_of_its_own_and_downsampling_block_stays_as_specified():
    model = build_model("multistage-constwidth", 100)
    transitions = [model.stage2[0], model.stage3[0]]
    assert all(isinstance(block, ConstantWidthDownSampling) for block in transitions)
    assert not any(isinstance(m, DownSamplingBlock) for m in model.modules())
    conv, bn = transitions[0].shortcut
    assert (conv.kernel_size, conv.stride, conv.bias, bn.num_features) == ((1, 1), (2, 2), None, 32)
    assert transitions[0](torch.randn(1, 32, 32, 32)).shape == (1, 32, 16, 16)
    with pytest.raises(ValueError, match="dim must be 2 \\* dim_in"):
        DownSamplingBlock(32, 32)


def test_the_constant_width_and_narrow_nets_bracket_the_single_stage_net():
    single = build_model("singlestage", 100)
    constant, narrow = build_model("multistage-constwidth", 100), build_model("multistage-narrow", 100)
    assert abs(count_parameters(constant) - count_parameters(single)) < 0.05 * count_parameters(single)
    assert macs_per_image(constant) < macs_per_image(single)
    assert count_parameters(narrow) < 0.5 * count_parameters(single)


def test_the_dilated_single_stage_net_sees_the_whole_image_at_the_same_cost_and_resolution():
    tutorial, dilated = build_model("singlestage", 100), build_model("singlestage-dilated", 100)
    assert count_parameters(dilated) == count_parameters(tutorial)
    assert macs_per_image(dilated) == macs_per_image(tutorial)
    assert stage_shapes(dilated) == stage_shapes(tutorial)  # full 32x32 resolution throughout
    assert receptive_field(tutorial) == 27
    assert receptive_field(dilated) == 3 + 2 * 2 * sum((1, 2, 4, 1, 2, 4)) >= 32  # 59 px


def test_every_architecture_has_a_label_and_a_description():
    assert all(entry.label and entry.description for entry in ARCHITECTURES.values())
    assert ARCHITECTURES["multistage"].noun == "the multi-stage net"
