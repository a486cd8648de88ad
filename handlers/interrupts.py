"""Ctrl-C / SIGTERM: finish the current iteration, write a checkpoint, stop; a second signal exits at once.

Under torchrun the processes must stop at the same iteration (or they wait on each other forever), so they agree,
with one all-reduce, on whether any of them got a signal or a NaN loss: every `log_every` iterations (the cadence of
every other look at the loss, since the look waits for the GPU) and at the end of every epoch. A signal then stops
the run within `log_every` iterations.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _exit_now(signum, _frame):
    """The second signal: Ctrl-C raises KeyboardInterrupt (run.py: "interrupted", exit 130); SIGTERM terminates."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


class GracefulStop:
    """Turns the first SIGINT/SIGTERM into `trainer.terminate()`; `signum` tells which one came, if any."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._handle = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1)

    def attach(self, trainer: Engine, save: Callable[[Engine], None], log_every: int = 1) -> None:
        """Install the signal handlers while `trainer` runs; on a stop, call `save(trainer)` once. Under torchrun the
        processes agree every `log_every` iterations inside an epoch and once more after its end-of-epoch handlers
        (attach this after them: an epoch's last iteration is never cut off from its evaluation and checkpoint)."""
        trainer.add_event_handler(Events.STARTED, self._install, trainer)
        if idist.get_world_size() > 1:
            def inside_an_epoch(engine: Engine, iteration: int) -> bool:
                return iteration % log_every == 0 and iteration % engine.state.epoch_length != 0

            trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=inside_an_epoch), self._agree)
            trainer.add_event_handler(Events.EPOCH_COMPLETED, self._agree)
        else:  # a signal in an epoch's last iteration stops after that epoch's evaluation and checkpoint
            trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_ended)
        trainer.add_event_handler(Events.TERMINATE, lambda engine: self.signum is not None and save(engine))
        trainer.add_event_handler(Events.COMPLETED, self.restore)

    def _epoch_ended(self, trainer: Engine) -> None:
        self._ended_at = trainer.state.iteration
        if self.signum:
            self._stop(trainer)

    def _install(self, trainer: Engine) -> None:
        # The iteration whose epoch's end was handled: a resumed run starts from one. Only an epoch's last iteration
        # before its end-of-epoch handlers waits for them; after them (the next batch being fetched) the stop is now.
        self._ended_at = trainer.state.iteration

        def handle(signum, _frame):
            self.signum = signum
            # A second signal ends the process at once, whatever the inherited handlers were (a process started
            # in the background inherits SIGINT ignored). Checkpoints are written atomically, so nothing is left
            # half-written.
            for second in EXIT_CODES:
                signal.signal(second, _exit_now)
            iteration = trainer.state.iteration
            inside_an_epoch = iteration % trainer.state.epoch_length != 0 or iteration == self._ended_at
            if idist.get_world_size() == 1 and inside_an_epoch:
                trainer.terminate()

        self._handle = handle
        for signum in EXIT_CODES:
            self._previous[signum] = signal.signal(signum, handle)

    def _agree(self, trainer: Engine) -> None:
        loss_is_bad = not torch.isfinite(trainer.state.output["loss"]).item()
        flags = torch.tensor([float(self.signum or 0), float(loss_is_bad)], device=idist.device())
        flags = idist.all_reduce(flags, op="MAX")
        if flags.any():
            self.signum = int(flags[0]) or None  # None: stopped for a NaN loss, reported by the trainer
            if self.signum is None or trainer.last_event_name != Events.EPOCH_COMPLETED:
                trainer.terminate()
            else:
                self._stop(trainer)

    @staticmethod
    def _stop(trainer: Engine) -> None:
        """Stop after an epoch's end, unless it was the last: then the run is complete, and ends as such (the caller
        still sees `signum`)."""
        if trainer.state.epoch < trainer.state.max_epochs:
            trainer.terminate()

    def restore(self) -> None:
        """Put back the signal handlers that were there before, where they are still this stop's: a process that has
        chosen otherwise since (engine/devices.process_lost) keeps its choice."""
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) in (self._handle, _exit_now):
                signal.signal(signum, previous)
        self._previous.clear()
