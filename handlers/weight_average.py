"""An exponential moving average of the weights (`--ema DECAY`), with Ignite's EMAHandler, updated after every
optimizer step: ema = decay * ema + (1 - decay) * weights, for the parameters and the BatchNorm statistics alike."""
from __future__ import annotations

from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn


def attach(trainer: Engine, model: nn.Module, decay: float) -> nn.Module:
    """Average `model`'s weights after every iteration of `trainer`; return the averaged model (a copy of `model`,
    in eval mode: the checkpoint saves it, an evaluator tests it)."""
    # Ignite's momentum is the weight of the new value: 1 - decay.
    handler = EMAHandler(model, momentum=1.0 - decay, handle_buffers="update")
    handler.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    return handler.ema_model
