"""Exact mean training loss of each epoch.

Not `RunningAverage` (an exponential moving average): the mean over every sample of the epoch, each batch
weighted by its size, accumulated on the device in float64 and reduced across processes under torchrun.
"""
import torch
from ignite.engine import Engine
from ignite.metrics import Average, MetricsLambda

EPOCH_LOSS = "loss_epoch"  # the trainer metric holding the epoch's mean training loss


def attach(trainer: Engine, device: torch.device, name: str = EPOCH_LOSS) -> Average:
    """Put the epoch's mean per-sample training loss into `trainer.state.metrics[name]` (a float).

    Returns the accumulating metric: a checkpoint written mid-epoch saves its state, so that a resumed
    epoch's mean still covers every sample of the epoch.
    """
    # Per-sample losses as a column: Average then counts rows, i.e. samples, not batches.
    per_sample = Average(output_transform=lambda output: output["sample_losses"].unsqueeze(1), device=device)
    MetricsLambda(lambda total: total.item(), per_sample).attach(trainer, name)
    return per_sample
