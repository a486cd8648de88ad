"""Debugging aid (hidden flag --dump-samples DIR): each process writes, per epoch, which training samples it
used and their losses, so that tests can check the sharding and the all-process epoch mean independently."""
from __future__ import annotations

import os

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from engine.loader import DeviceBatches


def attach(trainer: Engine, batches: DeviceBatches, directory: str) -> None:
    """Write `directory/rank<r>_epoch<e>.pt` = {"index": sample indices, "loss": per-sample losses}."""
    os.makedirs(directory, exist_ok=True)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def collect(engine: Engine) -> None:
        seen.append((batches.last_index.cpu(), engine.state.output["sample_losses"].cpu()))

    @trainer.on(Events.EPOCH_COMPLETED)
    def write(engine: Engine) -> None:
        path = os.path.join(directory, f"rank{idist.get_rank()}_epoch{engine.state.epoch}.pt")
        torch.save({"index": torch.cat([i for i, _ in seen]), "loss": torch.cat([l for _, l in seen])}, path)
        seen.clear()
