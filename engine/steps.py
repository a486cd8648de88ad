"""The Ignite trainer and evaluator, with explicit `train_step` and `eval_step` (as Ignite's cifar10 example)."""
from __future__ import annotations

import torch
from ignite.engine import Engine
from torch import nn

from engine.precision import FP32, Precision
from handlers.loss_scaling import LossScaling


def create_trainer(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                   precision: Precision = FP32, label_smoothing: float = 0.0,
                   loss_scaling: LossScaling | None = None) -> Engine:
    """Trainer whose output per iteration is `{"loss": batch mean, "sample_losses": per-sample losses}`, both fp32
    and unscaled.

    Both stay on the device (no `.item()`), so the hot loop never waits for the GPU; the per-sample losses
    let the epoch-loss handler form the exact sample-weighted epoch mean. Under fp16, `loss_scaling` does the
    backward pass and the step.
    """
    criterion = nn.CrossEntropyLoss(reduction="none", label_smoothing=label_smoothing)

    def train_step(engine: Engine, batch) -> dict:
        model.train()
        images, labels, _index = batch
        with precision.autocast(device):
            logits = model(images)
        sample_losses = criterion(logits.float(), labels)
        loss = sample_losses.mean()
        optimizer.zero_grad(set_to_none=True)
        if loss_scaling is None:
            loss.backward()
            optimizer.step()
        else:
            loss_scaling.backward_and_step(loss, optimizer)
        return {"loss": loss.detach(), "sample_losses": sample_losses.detach()}

    return Engine(train_step)


def create_evaluator(model: nn.Module, device: torch.device, precision: Precision = FP32, flip: bool = False) -> Engine:
    """Evaluator whose output per iteration is `{"y_pred": logits (float32), "y": labels}`; with `flip`, the logits
    are the mean of those of each image and of its mirror image (test-time augmentation)."""

    @torch.inference_mode()
    def eval_step(engine: Engine, batch) -> dict:
        model.eval()
        images, labels, _index = batch
        with precision.autocast(device):
            logits = model(images).float()
            if flip:
                logits = (logits + model(torch.flip(images, dims=[3])).float()) / 2
        return {"y_pred": logits, "y": labels}

    return Engine(eval_step)
