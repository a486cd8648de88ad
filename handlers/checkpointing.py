"""Checkpoint at the end of every epoch with Ignite's `Checkpoint` + atomic `DiskSaver`; what a checkpoint is
named, which exist, and loading one back into a run's objects."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import re

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from core.errors import UserError, no_space_left
from core.recipe import Recipe
from core.history_file import temp_path
from handlers.epoch_loss import EPOCH_LOSS

# The names of the files below, as Ignite's Checkpoint formats them: `checkpoint_<epoch>.pt` at the end of an epoch,
# `interrupted_<iteration>.pt` when a run is stopped in the middle of one. Every reader derives from these.
EPOCH, INTERRUPTED = "checkpoint", "interrupted"
EXTENSION = "pt"  # the one Ignite's Checkpoint gives torch.save's files
FILENAME_PATTERN = "{kind}_{{global_step}}.{{ext}}"
CHECKPOINT_NAME = re.compile(rf"({EPOCH}|{INTERRUPTED})_(\d+)\.{EXTENSION}")
EPOCH_CHECKPOINT = FILENAME_PATTERN.format(kind=EPOCH).format(global_step="<epoch>", ext=EXTENSION)  # for messages
EPOCH_LOSS_KEY = "epoch_loss"  # the key under which a checkpoint keeps the epoch-loss accumulator's partial sums


def checkpoints(run_dir: str, kind: str | None = None) -> list[tuple[str, int, str]]:
    """The checkpoint files of `run_dir` (of one `kind`, EPOCH or INTERRUPTED, if given): (kind, number, path), the
    number being the epoch or the iteration it was written at."""
    if not os.path.isdir(run_dir):
        return []
    found = [(match.group(1), int(match.group(2)), os.path.join(run_dir, name))
             for name in sorted(os.listdir(run_dir)) if (match := CHECKPOINT_NAME.fullmatch(name))]
    return [entry for entry in found if kind is None or entry[0] == kind]


def epoch_checkpoints(run_dir: str) -> dict[int, str]:
    """The end-of-epoch checkpoints of `run_dir`: epoch -> path."""
    return {epoch: path for _kind, epoch, path in checkpoints(run_dir, EPOCH)}


class AtomicSaver(DiskSaver):
    """Ignite's DiskSaver, writing atomically as every file of a run is written: to `<name>.tmp`, then renamed
    (core/history_file.temp_path), so that a kill leaves no half-written checkpoint under its name and a temp file
    whose name says what it is. A full disk's error names the checkpoint it was writing."""

    def __init__(self, run_dir: str):
        super().__init__(run_dir, require_empty=False, atomic=False)

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        if idist.get_rank() != self.save_on_rank:
            return
        path = os.path.join(self.dirname, filename)
        temp = temp_path(path)
        try:
            with open(temp, "wb") as f:
                torch.save(checkpoint, f)
            os.replace(temp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.remove(temp)
            full = no_space_left(exc)
            if full is None:
                raise
            raise OSError(errno.ENOSPC, full.strerror, path) from exc


def attach(trainer: Engine, to_save: dict, run_dir: str, n_saved: int = 2) -> Checkpoint:
    """Save `to_save` (the same dict a resume loads) as `checkpoint_<epoch>.pt`, keeping the last `n_saved`.

    An epoch whose mean loss is not finite is never saved, so the last good checkpoint survives a NaN. A resumed
    run counts the epoch checkpoints already there, so that it too keeps only the last `n_saved`.
    """
    handler = Checkpoint(
        to_save,
        AtomicSaver(run_dir),
        filename_pattern=FILENAME_PATTERN.format(kind=EPOCH),
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
    for _kind, _iteration, path in checkpoints(run_dir, INTERRUPTED):
        os.remove(path)


def save_interrupted(trainer: Engine, to_save: dict, run_dir: str) -> None:
    """Checkpoint a run stopped mid-epoch as `interrupted_<iteration>.pt` (atomic, like the epoch ones)."""
    Checkpoint(
        to_save,
        AtomicSaver(run_dir),
        filename_pattern=FILENAME_PATTERN.format(kind=INTERRUPTED),
        global_step_transform=lambda engine, _: engine.state.iteration,
    )(trainer)


class RunIdentity:
    """The recipe, stored in every checkpoint so that loading one into another run is refused. A stored
    configuration is compared in its recipe fields only (a checkpoint may hold the whole configuration)."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def state_dict(self) -> dict:
        return dataclasses.asdict(self.recipe)

    def load_state_dict(self, stored: dict) -> None:
        difference = self.recipe.difference(stored, ignore=self.recipe.resumable())
        if difference:
            raise UserError(f"checkpoint belongs to a different run: {difference}")


def restore(to_save: dict, state: dict, epoch_length: int) -> None:
    """Load a checkpoint's `state` into the objects of `to_save`, the dict that wrote it. Mid-epoch, the epoch-loss
    accumulator is reset on EPOCH_STARTED like every epoch; its saved partial sums are put back right after, once."""
    Checkpoint.load_objects(to_load={key: obj for key, obj in to_save.items() if key != EPOCH_LOSS_KEY}, checkpoint=state)
    trainer = to_save["trainer"]
    if trainer.state.iteration % epoch_length:
        def put_back(engine: Engine) -> None:
            to_save[EPOCH_LOSS_KEY].load_state_dict(state[EPOCH_LOSS_KEY])
            engine.remove_event_handler(put_back, Events.EPOCH_STARTED)

        trainer.add_event_handler(Events.EPOCH_STARTED, put_back)
