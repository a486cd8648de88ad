"""TensorBoard: iteration-level loss and learning rate indexed by iteration; epoch-level numbers (from the
history record of the epoch) indexed by epoch.

Ordering keeps a resumed run's event stream free of repeats and gaps: the iteration points are flushed
before the epoch's checkpoint is written, the epoch points after it. So epoch points exist only for
epochs that have a checkpoint; a resume purges iteration points beyond its checkpoint (`purge_step`) and
re-writes the epoch points of its checkpoint's epoch if the kill came before they reached the disk. A resume
that goes on from an older checkpoint than the newest (a damaged one) removes the points of the epochs it
redoes from the older event files, which TensorBoard's purge, by step across all tags, cannot reach.
"""
from __future__ import annotations

import os
import time

import torch
from ignite.engine import Engine, Events
from ignite.handlers.tensorboard_logger import OutputHandler, TensorboardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.history_file import (EPOCH, IMAGES_PER_S, LOSS_SCALING_KEYS, TEMP_SUFFIX, TEST, TRAIN_EVAL, TRAIN_LOSS, VAL,
                               TRAIN_SECONDS, is_seconds, temp_path)
from handlers.history import History

EPOCH_TAG = "train/loss_epoch"
ITERATION_TAGS = ("train/loss_iter", "train/lr")  # attach_iteration_logging: step = iteration; any other: epoch


def epoch_scalars(record: dict) -> dict[str, float]:
    """TensorBoard tag -> value for one history record: `train/loss_epoch`, `test/accuracy`, `val/accuracy`,
    `train_eval/loss`, `perf/images_per_s`, (fp16) `train/skipped_steps`, ..."""
    scalars = {EPOCH_TAG: record[TRAIN_LOSS], "perf/images_per_s": record[IMAGES_PER_S],
               "perf/train_seconds": record[TRAIN_SECONDS]}
    scalars.update({f"train/{key}": record[key] for key in LOSS_SCALING_KEYS if key in record})
    for key, value in record.items():
        for prefix in (TEST, TRAIN_EVAL, VAL):
            if key.startswith(prefix + "_") and not is_seconds(key):
                scalars[f"{prefix}/{key[len(prefix) + 1:]}"] = value
    return scalars


def write_epoch(logger: TensorboardLogger, record: dict) -> None:
    """Write one epoch's scalars at step = epoch and flush them to disk."""
    for tag, value in epoch_scalars(record).items():
        logger.writer.add_scalar(tag, value, record[EPOCH])
    logger.writer.flush()


def logged_epochs(log_dir: str) -> set[int]:
    """Epochs whose points are already in the event files of `log_dir`. (Not purging what a resume's `purge_step`
    hides keeps the reader from warning of a "TensorFlow restart" on the console; it hides iterations, never epochs.)"""
    events = EventAccumulator(log_dir, size_guidance={"scalars": 0}, purge_orphaned_data=False)
    events.Reload()
    return {event.step for event in events.Scalars(EPOCH_TAG)} if EPOCH_TAG in events.Tags()["scalars"] else set()


# TensorBoard's event files: events.out.tfevents.<creation second>.<host>.<pid>.<n>
EVENT_FILE_PREFIX = "events.out.tfevents."


def is_event_file(name: str) -> bool:
    return name.startswith(EVENT_FILE_PREFIX)


def replace_text(log_dir: str, tag: str, text: str, step: int) -> None:
    """The one text entry of `tag` in `log_dir`, in an event file of its own named after the tag (`0` where the others
    have their time, so that it sorts first): written again, it replaces what that file held (written under a temp
    name, then renamed over it, as every file of a run is written); unchanged, nothing is written."""
    from torch.utils.tensorboard import SummaryWriter

    path = os.path.join(log_dir, f"{EVENT_FILE_PREFIX}0.{tag.replace('/', '-')}")
    if [(step_, text_) for _, step_, text_ in text_entries(path)] == [(step, text)]:
        return
    suffix = f".{os.getpid()}{TEMP_SUFFIX}"
    with SummaryWriter(log_dir, filename_suffix=suffix) as writer:
        writer.add_text(tag, text, step)
    (written,) = [name for name in os.listdir(log_dir) if is_event_file(name) and name.endswith(suffix)]
    os.replace(os.path.join(log_dir, written), path)


def text_entries(path: str) -> list[tuple[str, int, str]]:
    """The entries of TensorBoard's TEXT tab in an event file: (tag, step, text); none where there is no such file."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    if not os.path.isfile(path):
        return []
    return [(value.tag, event.step, value.tensor.string_val[0].decode()) for event in EventFileLoader(path).Load()
            for value in event.summary.value if value.metadata.plugin_data.plugin_name == "text"]


def drop_epoch_points_after(log_dir: str, epoch: int) -> None:
    """Remove the points at steps after `epoch`, but the iteration points (which `purge_step` hides), from the event
    files of `log_dir`, each file rewritten atomically."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    def redone(record: bytes) -> bool:
        event = Event.FromString(record)
        return (event.step > epoch and event.HasField("summary")
                and not any(value.tag in ITERATION_TAGS for value in event.summary.value))

    for name in sorted(filter(is_event_file, os.listdir(log_dir))):
        path = os.path.join(log_dir, name)
        records = list(RawEventFileLoader(path).Load())
        kept = [record for record in records if not redone(record)]
        if len(kept) < len(records):
            with open(temp_path(path), "wb") as f:
                writer = RecordWriter(f)
                for record in kept:
                    writer.write(record)
            os.replace(temp_path(path), path)


def create_logger(log_dir: str, purge_step: int | None = None, resumed: History | None = None) -> TensorboardLogger:
    """The run's TensorBoard logger (the caller closes it). A resume's `purge_step` hides points from that iteration
    on in older event files. Its `resumed` history's last epoch gets its points if a kill came between its checkpoint
    and them; the points of later epochs, which the resume redoes (it went on from an older checkpoint than a
    damaged newest one), are removed from the older files.

    TensorBoard reads a folder's event files in name order, and a name starts with its creation second, then
    the host and the process id: a resume within the same second as the killed run, by a process with a
    smaller id, would sort first and scramble the stream. So a resumed logger waits for the next second."""
    logged = logged_epochs(log_dir) if resumed is not None else set()
    last = resumed.epochs[-1][EPOCH] if resumed is not None and resumed.epochs else 0
    if max(logged, default=0) > last:
        drop_epoch_points_after(log_dir, last)
    if purge_step is not None:
        seconds = (name[len(EVENT_FILE_PREFIX):].split(".")[0] for name in os.listdir(log_dir) if is_event_file(name))
        newest = max((int(second) for second in seconds if second.isdigit()), default=0)
        while int(time.time()) <= newest:
            time.sleep(0.05)
    logger = TensorboardLogger(log_dir=log_dir, purge_step=purge_step)
    if last and last not in logged:
        write_epoch(logger, resumed.epochs[-1])
    return logger


def attach_iteration_logging(trainer: Engine, logger: TensorboardLogger, optimizer: torch.optim.Optimizer,
                             log_every: int = 1) -> None:
    """Per-iteration `train/loss_iter` and `train/lr` (flushed by `attach_flush`)."""
    every = Events.ITERATION_COMPLETED(every=log_every)
    logger.attach(trainer, OutputHandler(tag="train", output_transform=lambda out: {"loss_iter": out["loss"]}), every)
    # OptimizerParamsHandler would name it "train/lr/group_0"; one parameter group here, so plain "train/lr".
    trainer.add_event_handler(
        every, lambda engine: logger.writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], engine.state.iteration)
    )


def attach_flush(trainer: Engine, logger: TensorboardLogger) -> None:
    """Write the epoch's iteration points to disk at its end (attach before the checkpoint handler)."""
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: logger.writer.flush())


def attach_epoch_logging(trainer: Engine, logger: TensorboardLogger, history: History) -> None:
    """Write each epoch's record once it is in the history (attach after the checkpoint handler)."""
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: write_epoch(logger, history.epochs[-1]))
