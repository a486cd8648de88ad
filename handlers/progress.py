"""What the user watches: a progress bar while training and one plain line per epoch."""
from __future__ import annotations

import sys
import warnings

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from core.history_file import (ACCURACY, EPOCH, IMAGES_PER_S, METRICS, SKIPPED_STEPS, TEST, TEST_EMA, TEST_FLIP,
                               TRAIN_EVAL_ACCURACY, TRAIN_LOSS, TRAIN_SECONDS, VAL_ACCURACY, VAL_LOSS, is_loss, metric)
from core.numbers import counted, loss, percent
from handlers.history import History

def epoch_line_keys() -> list[tuple[str, str]]:
    """What the epoch line shows, in order: a record key and its label (left out where a record lacks the key): the
    train loss, every test metric (core/history_file.METRICS), the validation accuracy and loss, then the train-eval,
    EMA and flipped test accuracies."""
    return [(TRAIN_LOSS, "train loss"), *((metric(TEST, name), line) for name, (_words, line) in METRICS.items()),
            (VAL_ACCURACY, "val acc"), (VAL_LOSS, "val loss"), (TRAIN_EVAL_ACCURACY, "train-eval acc"),
            (metric(TEST_EMA, ACCURACY), "EMA"), (metric(TEST_FLIP, ACCURACY), "flip")]


def format_epoch(record: dict, max_epochs: int) -> str:
    """One line: epoch, the numbers of `epoch_line_keys` that the record holds (a loss as a loss, anything else as a
    percentage), seconds, images per second."""
    shown = [f"{label} {loss(record[key]) if is_loss(key) else percent(record[key])}"
             for key, label in epoch_line_keys() if key in record]
    line = f"Epoch {record[EPOCH]:>3}/{max_epochs}  " + "  ".join(shown)
    if record.get(SKIPPED_STEPS):
        line += f"  fp16 skipped {counted(record[SKIPPED_STEPS], 'step')}"
    return line + f"  {record[TRAIN_SECONDS]:.1f}s  {record[IMAGES_PER_S]:.0f} img/s"


def in_a_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Jupyter, Colab): its output is no terminal, yet shows a bar."""
    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    return shell is not None and hasattr(shell, "kernel")


def attach(trainer: Engine, history: History, show_bar: bool, log_every: int = 1) -> None:
    """Print each epoch's line after `history` has recorded it; show a bar only on a terminal or in a notebook (a
    bar in a file or a pipe would fill it with carriage returns)."""
    if show_bar and (sys.stdout.isatty() or in_a_notebook()):
        with warnings.catch_warnings():  # tqdm's "notebook mode" notice: a notebook is where that mode belongs
            warnings.filterwarnings("ignore", message=".*tqdm.autonotebook.*")
            bar = ProgressBar(persist=False)
        bar.attach(
            trainer, output_transform=lambda out: {"loss": out["loss"]}, event_name=Events.ITERATION_COMPLETED(every=log_every)
        )

    @trainer.on(Events.EPOCH_COMPLETED)
    def print_epoch(engine: Engine) -> None:
        print(format_epoch(history.epochs[-1], engine.state.max_epochs), flush=True)
