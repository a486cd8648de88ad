"""Checkpoint at the end of every epoch with Ignite's `Checkpoint` + atomic `DiskSaver`."""
from __future__ import annotations

import errno
import glob
import math
import os
import re

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from core.errors import no_space_left
from handlers.epoch_loss import EPOCH_LOSS

# The names of the files below: `checkpoint_<epoch>.pt` at the end of an epoch, `interrupted_<iteration>.pt` when a
# run is stopped in the middle of one.
CHECKPOINT_NAME = re.compile(r"(checkpoint|interrupted)_(\d+)\.pt")


def epoch_checkpoints(run_dir: str) -> dict[int, str]:
    """The end-of-epoch checkpoints of `run_dir`: epoch -> path."""
    found = {}
    for path in glob.glob(os.path.join(glob.escape(run_dir), "checkpoint_*.pt")):
        match = CHECKPOINT_NAME.fullmatch(os.path.basename(path))
        if match and match.group(1) == "checkpoint":
            found[int(match.group(2))] = path
    return found


class AtomicSaver(DiskSaver):
    """Ignite's atomic DiskSaver (temp file + rename), whose full-disk error names the checkpoint it was writing."""

    def __init__(self, run_dir: str):
        super().__init__(run_dir, require_empty=False, atomic=True)

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        try:
            super().__call__(checkpoint, filename, metadata)
        except Exception as exc:
            full = no_space_left(exc)
            if full is None:
                raise
            raise OSError(errno.ENOSPC, full.strerror, os.path.join(self.dirname, filename)) from exc


def attach(trainer: Engine, to_save: dict, run_dir: str, n_saved: int = 2) -> Checkpoint:
    """Save `to_save` (the same dict a resume loads) as `checkpoint_<epoch>.pt`, keeping the last `n_saved`.

    An epoch whose mean loss is not finite is never saved, so the last good checkpoint survives a NaN. A resumed
    run counts the epoch checkpoints already there, so that it too keeps only the last `n_saved`.
    """
    handler = Checkpoint(
        to_save,
        AtomicSaver(run_dir),
        filename_prefix="",
        n_saved=n_saved,
        global_step_transform=lambda engine, _: engine.state.epoch,
    )
    existing = sorted(epoch_checkpoints(run_dir).items())
    handler.load_state_dict({"_saved": [(epoch, os.path.basename(path)) for epoch, path in existing]})

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
        AtomicSaver(run_dir),
        filename_pattern="interrupted_{global_step}.{ext}",
        global_step_transform=lambda engine, _: engine.state.iteration,
    )(trainer)
