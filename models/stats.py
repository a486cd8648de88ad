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


def receptive_field(model: nn.Module, image_size: int = 32) -> int:
    """Receptive field in pixels of one output position of the last convolution.

    Follows the convolutions on the main path in the order the forward pass calls them (shortcut 1x1
    convolutions never widen it): r += (kernel - 1) * jump, jump *= stride.
    """
    convs = []
    hooks = [
        module.register_forward_hook(lambda mod, inp, out: convs.append(mod))
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
    field, jump = 1, 1
    for conv in convs:
        field += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
        jump *= conv.stride[0]
    return field
