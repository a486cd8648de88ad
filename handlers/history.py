"""The run's record: `history.json` with the configuration and one entry per epoch, rewritten after each epoch."""
from __future__ import annotations

import json
import os
import time

from ignite.engine import Engine, Events

from core.history_file import (COMPLETED, EPOCH, EPOCHS, EPOCHS_TRAINED, FINAL, HISTORY_FILE, RUNNING, STATUS, IMAGES_PER_S, LOSS_SCALING_KEYS, SECONDS, TRAIN_LOSS,
                               TRAIN_SECONDS, metric, write_json)
from handlers.epoch_loss import EPOCH_LOSS


class History:
    """Per-epoch numbers of a run; also a stateful object for the checkpoint's `to_save` (plain lists/floats)."""

    def __init__(self, run_dir: str, header: dict, num_train: int):
        self.path = os.path.join(run_dir, HISTORY_FILE)
        self.header = header
        self.num_train = num_train
        self.epochs: list[dict] = []
        self.final: dict = {}
        self.status = RUNNING
        # Training seconds of the current epoch before a mid-epoch interruption (restored from its checkpoint),
        # so that a resumed epoch's train_seconds cover the whole epoch, not only the part after the resume.
        self._seconds_before_resume = 0.0
        self._epoch_started: float | None = None

    def attach(self, trainer: Engine, evaluators: dict[str, Engine]) -> None:
        """Record an epoch once the trainer's epoch metrics and every evaluator's metrics are in; an
        evaluator's metrics are stored as `<its name>_<metric>`, e.g. `test_accuracy`."""
        trainer.add_event_handler(Events.EPOCH_STARTED, self._start_epoch)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._record, evaluators)
        trainer.add_event_handler(Events.COMPLETED, self._completed)

    def _completed(self, trainer: Engine) -> None:
        # COMPLETED also follows a terminate(); whoever stopped the run records why.
        if not trainer.should_terminate:
            self.finish(COMPLETED)

    def _start_epoch(self) -> None:
        self._epoch_started = time.perf_counter()

    def _record(self, trainer: Engine, evaluators: dict[str, Engine]) -> None:
        train_seconds = trainer.state.times["EPOCH_COMPLETED"] + self._seconds_before_resume
        self._seconds_before_resume, self._epoch_started = 0.0, None
        record = {EPOCH: trainer.state.epoch, TRAIN_LOSS: trainer.state.metrics[EPOCH_LOSS]}
        record.update({key: trainer.state.metrics[key] for key in LOSS_SCALING_KEYS if key in trainer.state.metrics})
        for split, evaluator in evaluators.items():
            record.update({metric(split, name): value for name, value in evaluator.state.metrics.items()})
        record[TRAIN_SECONDS] = train_seconds
        record.update({metric(split, SECONDS): evaluator.state.times["COMPLETED"] for split, evaluator in evaluators.items()})
        record[IMAGES_PER_S] = self.num_train / train_seconds
        self.epochs.append(record)
        self.save()

    def finish(self, status: str) -> None:
        """Mark the run finished (`completed`, `stopped: ...`) and store the final test numbers."""
        self.status = status
        if self.epochs:
            last = self.epochs[-1]
            self.final = {key: value for key, value in last.items() if key != EPOCH}
            self.final[EPOCHS_TRAINED] = last[EPOCH]
        self.save()

    def as_dict(self) -> dict:
        return {**self.header, STATUS: self.status, EPOCHS: self.epochs, FINAL: self.final}

    def save(self) -> None:
        write_json(self.path, self.as_dict())

    def state_dict(self) -> dict:
        in_epoch = self._epoch_started is not None  # saved mid-epoch (Ctrl-C): keep the time trained so far
        partial = self._seconds_before_resume + (time.perf_counter() - self._epoch_started if in_epoch else 0.0)
        # The header too, as history.json holds it (plain JSON types, which a weights_only load accepts), so that a
        # lost history.json can be rebuilt from any checkpoint (engine/resume.py: restore_history).
        return {"header": json.loads(json.dumps(self.header)), "epochs": self.epochs, "partial_train_seconds": partial}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = list(state["epochs"])
        self._seconds_before_resume = float(state.get("partial_train_seconds", 0.0))
