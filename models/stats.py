"""Measured facts about a network: parameters, multiply-accumulates per image, receptive field."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


# The side of CIFAR's images: what every net here takes, and what its measurements feed it.
IMAGE_SIZE = 32


def macs_per_image(model: nn.Module, image_size: int = IMAGE_SIZE) -> int:
    """Multiply-accumulates of one forward pass on one image, counted by torch.utils.flop_counter."""
    # imported here: it loads triton's runtime, which every start of run.py would pay and only reports use
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def main_path_convolutions(model: nn.Module, image_size: int = IMAGE_SIZE) -> list[tuple[nn.Conv2d, torch.Size]]:
    """The convolutions on the main path (shortcut 1x1 convolutions excluded) in the order one forward pass calls
    them, each with the shape of its output."""
    calls = []
    hooks = [
        module.register_forward_hook(lambda mod, inp, out: calls.append((mod, out.shape)))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and "shortcut" not in name
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return calls


def receptive_field(model: nn.Module, image_size: int = IMAGE_SIZE) -> int:
    """Receptive field in pixels of one output position of the last convolution: along the main path (shortcut
    1x1 convolutions never widen it), r += (kernel - 1) * dilation * jump, jump *= stride."""
    field, jump = 1, 1
    for conv, _shape in main_path_convolutions(model, image_size):
        field += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
        jump *= conv.stride[0]
    return field


def feature_maps(model: nn.Module, image_size: int = IMAGE_SIZE) -> list[tuple[int, int]]:
    """(channels, size in px) of the feature maps the main path produces, in forward order, each distinct stretch
    once: the single-stage net gives [(32, 32)], the multi-stage net [(16, 32), (32, 16), (64, 8)]."""
    shapes = [(shape[1], shape[-1]) for _conv, shape in main_path_convolutions(model, image_size)]
    return [shape for index, shape in enumerate(shapes) if index == 0 or shape != shapes[index - 1]]


# Input sizes tried, smallest first, until one output position's field lies inside the image.
PROBE_SIZES = tuple(IMAGE_SIZE * factor for factor in (1, 2, 4, 8))
# Layers through which a gradient reaches one input of several, or mixes the whole image: no exact extent.
_ONE_INPUT_WINS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                   nn.AdaptiveMaxPool3d, nn.FractionalMaxPool2d)
_POOLED_TO_A_POINT = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


@dataclass(frozen=True)
class MeasuredField:
    """A receptive field measured by gradient: `pixels`, or None and `why` not."""

    pixels: int | None
    why: str | None = None


def measured_receptive_field(model: nn.Module) -> MeasuredField:
    """The receptive field of any network, measured: the gradient of one central position of the last feature map
    (the last 4-D output wider than 1x1) with respect to the input, whose non-zero rows span the field. On a copy in
    float64 with every weight positive (1 / fan-in), BatchNorm in eval mode as the identity and a positive input,
    no path cancels or dies, so the extent is exact; the input grows until the field lies inside it."""
    if any(isinstance(module, _ONE_INPUT_WINS) for module in model.modules()):
        return MeasuredField(None, "max pooling passes the gradient to one input of each window")
    probe = _positive_copy(model)
    for size in PROBE_SIZES:
        try:
            feature_map = _last_feature_map(probe, size)
        except Exception:  # noqa: BLE001 - a net that takes only 32x32 images, or other sizes it cannot handle
            return MeasuredField(None, f"its field reaches past a {PROBE_SIZES[PROBE_SIZES.index(size) - 1]}-px image, "
                                       f"and it takes no {size}-px image")
        if feature_map is None:
            return MeasuredField(None, "no output of it is a feature map wider than 1x1")
        image, output = feature_map
        height, width = output.shape[-2:]
        output[0, :, height // 2, width // 2].sum().backward()
        rows = image.grad[0].abs().sum(dim=(0, 2)).nonzero().flatten()
        if rows.numel() == 0:
            return MeasuredField(None, "its last feature map does not depend on the input")
        first, last = int(rows.min()), int(rows.max())
        if first > 0 and last < size - 1:
            return MeasuredField(last - first + 1)
    return MeasuredField(None, f"one output depends on the whole image even at {PROBE_SIZES[-1]} px: a global operation")


def _positive_copy(model: nn.Module) -> nn.Module:
    probe = copy.deepcopy(model).to(torch.float64).eval()
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()  # mean 0, variance 1: the identity, up to its epsilon
            for name, parameter in module.named_parameters(recurse=False):
                if parameter.dim() > 1:
                    parameter.fill_(1.0 / parameter[0].numel())
                else:
                    parameter.fill_(1.0 if name == "weight" else 0.0)
    return probe


def _last_feature_map(model: nn.Module, size: int):
    """(the input, the last 4-D output wider than 1x1) of one forward pass, with the graph between them kept."""
    outputs = []
    hooks = [module.register_forward_hook(lambda mod, inp, out: outputs.append(out))
             for module in model.modules() if not isinstance(module, _POOLED_TO_A_POINT)]
    image = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    try:
        model(image)
    finally:
        for hook in hooks:
            hook.remove()
    maps = [out for out in outputs if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] > 1
            and out.shape[-2] > 1 and out.requires_grad]
    return (image, maps[-1]) if maps else None
