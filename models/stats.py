"""Measured facts about a network: parameters, multiply-accumulates per image, receptive field."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def macs_per_image(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-accumulates of one forward pass on one image, counted by torch.utils.flop_counter."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def main_path_convolutions(model: nn.Module, image_size: int = 32) -> list[tuple[nn.Conv2d, torch.Size]]:
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


def receptive_field(model: nn.Module, image_size: int = 32) -> int:
    """Receptive field in pixels of one output position of the last convolution: along the main path (shortcut
    1x1 convolutions never widen it), r += (kernel - 1) * dilation * jump, jump *= stride."""
    field, jump = 1, 1
    for conv, _shape in main_path_convolutions(model, image_size):
        field += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
        jump *= conv.stride[0]
    return field


def feature_maps(model: nn.Module, image_size: int = 32) -> list[tuple[int, int]]:
    """(channels, size in px) of the feature maps the main path produces, in forward order, each distinct stretch
    once: the single-stage net gives [(32, 32)], the multi-stage net [(16, 32), (32, 16), (64, 8)]."""
    shapes = [(shape[1], shape[-1]) for _conv, shape in main_path_convolutions(model, image_size)]
    return [shape for index, shape in enumerate(shapes) if index == 0 or shape != shapes[index - 1]]
