"""What the user watches: a progress bar while training and one plain line per epoch."""
from __future__ import annotations

import sys

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from handlers.history import History


def format_epoch(record: dict, max_epochs: int) -> str:
    """One line: epoch, mean train loss, test accuracy (top-1/top-5), seconds, images per second."""
    line = (
        f"Epoch {record['epoch']:>3}/{max_epochs}  train loss {record['train_loss']:.4f}  "
        f"test acc {100 * record['test_accuracy']:.2f}%  top-5 {100 * record['test_top5']:.2f}%  "
        f"test loss {record['test_loss']:.4f}"
    )
    if "test_superclass_accuracy" in record:
        line += f"  superclass {100 * record['test_superclass_accuracy']:.2f}%"
    if "train_eval_accuracy" in record:
        line += f"  train-eval acc {100 * record['train_eval_accuracy']:.2f}%"
    return line + f"  {record['train_seconds']:.1f}s  {record['images_per_s']:.0f} img/s"


def attach(trainer: Engine, history: History, show_bar: bool, log_every: int = 1) -> None:
    """Print each epoch's line after `history` has recorded it; show a bar only on a terminal."""
    if show_bar and sys.stdout.isatty():
        bar = ProgressBar(persist=False)
        bar.attach(
            trainer, output_transform=lambda out: {"loss": out["loss"]}, event_name=Events.ITERATION_COMPLETED(every=log_every)
        )

    @trainer.on(Events.EPOCH_COMPLETED)
    def print_epoch(engine: Engine) -> None:
        print(format_epoch(history.epochs[-1], engine.state.max_epochs), flush=True)
