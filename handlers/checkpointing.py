"""Checkpoint at the end of every epoch with Ignite's `Checkpoint` + atomic `DiskSaver`."""
from __future__ import annotations

import glob
import math
import os

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from handlers.epoch_loss import EPOCH_LOSS


def attach(trainer: Engine, to_save: dict, run_dir: str, n_saved: int = 2) -> Checkpoint:
    """Save `to_save` (the same dict a resume loads) as `checkpoint_<epoch>.pt`, keeping the last `n_saved`.

    An epoch whose mean loss is not finite is never saved, so the last good checkpoint survives a NaN.
    """
    handler = Checkpoint(
        to_save,
        DiskSaver(run_dir, require_empty=False, atomic=True),
        filename_prefix="",
        n_saved=n_saved,
        global_step_transform=lambda engine, _: engine.state.epoch,
    )

    def loss_is_finite(engine: Engine, _event: int) -> bool:
        return math.isfinite(engine.state.metrics[EPOCH_LOSS])

    trainer.add_event_handler(Events.EPOCH_COMPLETED(event_filter=loss_is_finite), handler)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(event_filter=loss_is_finite), _remove_interrupted, run_dir)
    return handler


def _remove_interrupted(_trainer: Engine, run_dir: str) -> None:
    # A mid-epoch checkpoint from an earlier Ctrl-C lies behind the epoch checkpoint just written.
    if idist.get_rank() != 0:
        return
    for path in glob.glob(os.path.join(glob.escape(run_dir), "interrupted_*.pt")):
        os.remove(path)


def save_interrupted(trainer: Engine, to_save: dict, run_dir: str) -> None:
    """Checkpoint a run stopped mid-epoch as `interrupted_<iteration>.pt` (atomic, like the epoch ones)."""
    Checkpoint(
        to_save,
        DiskSaver(run_dir, require_empty=False, atomic=True),
        filename_pattern="interrupted_{global_step}.{ext}",
        global_step_transform=lambda engine, _: engine.state.iteration,
    )(trainer)
