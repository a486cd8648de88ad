"""One training run, top to bottom: run directory and its lock, data, build, resume, outputs, signals, train.
`train` is the whole story of a run; a plan of several runs calls it once per member, the benchmarks use its parts.
"""
from __future__ import annotations

import contextlib
import glob
import os
from typing import Callable

import ignite.distributed as idist
import torch
from ignite.engine import Events

import handlers.checkpointing
from core.errors import DiskFull, ProcessLost, UserError, disk_full
from core.history_file import COMPLETED, HISTORY_FILE, RUNNING, TEST_ACCURACY, RunHistory, read_history
from core.numbers import counted, percent
from core.recipe import Recipe, Setup
from core.recipe_words import recipe_line
from engine import build
from engine.console import say, warn
from engine.data.cifar_archive import DATASETS
from engine.data.datasets import CifarData, hold_out, load_cifar
from engine.outputs import attach_outputs
from engine.devices import machine, machine_in_words, process_lost
from engine.resume import cannot_train_on, check_held_out, checked_resume, has_checkpoint, resume_point
from engine.run_lock import hold, in_use
from engine.rundir import continuing_command, create_run_dir, default_run_dir, run_dir_of
from handlers.checkpointing import epoch_checkpoints
from handlers.interrupts import GracefulStop
from handlers.loss_scaling import LossScaleCollapsed


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Interrupted(UserError):
    """Stopped by SIGINT/SIGTERM after writing a checkpoint; `exit_code` is 130 or 143. The message ends with the
    command that continues the work; a bonus or a study that was running the run names its own command instead
    (`continuing_with`), since resuming the run alone would not finish the comparison."""

    def __init__(self, exit_code: int, at: str, command: str):
        super().__init__(f"interrupted at {at}; checkpoint written. Continue with: {command}")
        self.exit_code, self.at, self.command = exit_code, at, command

    def continued_by(self, command: str) -> Interrupted:
        return Interrupted(self.exit_code, self.at, command)


@contextlib.contextmanager
def continuing_with(command: str, directory: str):
    """Inside a bonus or a study: an error that ends the work with the command that continues it (an interruption,
    a full disk, also while its report is written into `directory`) names `command`, not that of the run it was
    training."""
    try:
        yield
    except (Interrupted, DiskFull, ProcessLost) as exc:
        raise exc.continued_by(command) from None
    except OSError as exc:
        full = disk_full(exc, directory, command)
        if full is None:
            raise
        raise full from None


def load_data(recipe: Recipe, setup: Setup) -> CifarData:
    """Load (and if allowed, download) the recipe's dataset, its --val-split held out before anything sees it."""
    return hold_out(load_cifar(DATASETS[recipe.dataset], setup.data_dir, download=setup.download), recipe.val_split)


def find_auto_resume(recipe: Recipe, runs_root: str, skip: Callable[[str], bool]) -> str | None:
    """`--resume auto`: the newest run directory under `runs_root` whose recipe matches, that has a checkpoint, has
    can train on to the epochs `recipe` asks for, and that `skip` (e.g. "in use by another process") does not rule
    out; None if there is none."""
    candidates = []
    for history_path in glob.glob(os.path.join(glob.escape(runs_root), "*", HISTORY_FILE)):
        run_dir = os.path.dirname(history_path)
        try:
            history = read_history(run_dir)
        except UserError:
            continue  # not a run directory after all
        if (has_checkpoint(run_dir) and recipe.difference(history.config, ignore=recipe.resumable()) is None
                and cannot_train_on(history, recipe) is None):
            candidates.append((os.path.getmtime(history_path), run_dir))
    for _, run_dir in sorted(candidates, reverse=True):
        if not skip(run_dir):
            return run_dir
    return None


def resume_target(recipe: Recipe, setup: Setup, resume: str) -> str:
    """The run directory that `--resume auto | RUN_DIR | CHECKPOINT` names; `auto` skips runs in use, saying so."""
    if resume == "auto":
        skipped = []

        def skip_in_use(run_dir: str) -> bool:
            holder = in_use(run_dir)
            if holder:
                say(f"--resume auto: skipping {run_dir}, in use by {holder}")
                skipped.append(run_dir)
            return holder is not None

        run_dir = find_auto_resume(recipe, setup.runs_root, skip_in_use)
        if run_dir is None:
            busy = f" that is not in use ({len(skipped)} in use)" if skipped else ""
            raise UserError(f"--resume auto: no run under {setup.runs_root}/ with this configuration has a checkpoint{busy}")
        return run_dir
    if os.path.isfile(resume) or os.path.isdir(resume):
        return run_dir_of(resume)
    raise UserError(f"cannot resume: {resume} is neither a run directory nor a checkpoint file")


def train(recipe: Recipe, setup: Setup, data: CifarData | None = None, resume: str | None = None,
          into: str | None = None, recorded: RunHistory | None = None) -> dict:
    """Train `recipe.arch` on `recipe.dataset`, test after every epoch, and return the history dict.

    `data` may be passed in to share one loaded dataset between runs. `resume` ("auto", a run directory or a
    checkpoint file) continues a run from its checkpoint; otherwise the run directory is `into` (a comparison's or
    a study's member), else `setup.output_dir`, else a new one named after the recipe under `setup.runs_root`.
    `recorded`: the resumed run's history where the caller has read (restored) and checked it already.
    It holds the run directory's lock (engine/run_lock.py: hold): a resume of a run in use is refused at once.
    """
    with contextlib.ExitStack() as held:
        run_dir = None
        if resume is not None:
            run_dir = resume_target(recipe, setup, resume)
            held.enter_context(hold(run_dir))
            record = checked_resume(recipe, setup, run_dir, resume, recorded)  # before anything is loaded or built
        data = data or load_data(recipe, setup)
        run = build.build_run(recipe, setup, data)
        if resume is not None:
            check_held_out(record, run.data)  # the images its --val-split held out, or none
        opening = recipe_line(recipe)
        if opening:  # the first line: the named recipe, the flags given beside it, every value spelled out
            say(opening)
        # What the run computes on and in: its numbers depend on the device's model, the threads and the precision.
        say(f"Device: {run.device} ({machine_in_words(machine(run.device))}), {run.precision.describe()}")
        if run.precision.warning:
            warn(run.precision.warning)

        checkpoint = state = None
        if resume is not None:
            checkpoint, state = resume_point(record, run_dir, resume, run.device, len(run.train_batches))
        else:
            chosen = into or setup.output_dir
            run_dir = create_run_dir(chosen or default_run_dir(setup.runs_root, recipe), numbered=not chosen)
            held.enter_context(hold(run_dir))
        return _train_with_outputs(run, run_dir, checkpoint, state, ended=resume is not None and record.completed)


def _train_with_outputs(run: build.Run, run_dir: str, checkpoint: str | None, state: dict | None,
                        ended: bool = False) -> dict:
    """Attach the outputs, restore the checkpoint if any, train, and say how it ended; history.json's status says
    it too, on every way out. `ended`: a resumed run whose record says it completed."""
    recipe = run.recipe
    outputs = attach_outputs(run, run_dir, state)
    done = run.trainer.state.epoch
    resumed = (f" (resuming from {checkpoint}: {counted(done, 'epoch')} done, at iteration "
               f"{run.trainer.state.iteration})" if checkpoint else "")
    say(f"Run directory: {run_dir}{resumed}")

    stop = GracefulStop()
    stop.attach(run.trainer, lambda engine: handlers.checkpointing.save_interrupted(engine, outputs.to_save, run_dir),
                log_every=run.log_every)
    diverged = []
    run.trainer.add_event_handler(Events.TERMINATE, lambda engine: stop.signum is None and diverged.append(True))
    rank0 = idist.get_rank() == 0
    try:
        if run.trainer.state.iteration < recipe.epochs * len(run.train_batches):
            run.trainer.run(run.train_batches, max_epochs=recipe.epochs)
        elif not ended:  # killed after its last checkpoint, before its end was recorded: that end is all that is left
            run.trainer.fire_event(Events.COMPLETED)
    except torch.OutOfMemoryError:
        raise _failed(outputs, UserError(
            f"out of memory on {run.device} at epoch {run.trainer.state.epoch}, iteration {run.trainer.state.iteration}: "
            f"lower --batch-size (now {recipe.batch_size}) or --blocks-per-stage (now {recipe.blocks_per_stage}); "
            f"{what_is_saved(run_dir)}")) from None
    except LossScaleCollapsed as exc:
        raise _failed(outputs, LossScaleCollapsed(f"{exc}; {what_is_saved(run_dir)}")) from None
    except BaseException as exc:
        full = disk_full(exc, run_dir, continuing_command(run_dir))  # a checkpoint, history.json, TensorBoard
        if full is not None:
            raise _failed(outputs, full) from None
        if isinstance(exc, OSError):
            raise _failed(outputs, UserError(f"cannot write to {run_dir}: {exc.strerror or exc}")) from None
        if isinstance(exc, RuntimeError) and idist.get_world_size() > 1:  # a collective whose peer is gone
            lost = process_lost(f"training {run_dir} at epoch {run.trainer.state.epoch}, iteration "
                                f"{run.trainer.state.iteration}", what_is_saved(run_dir), continuing_command(run_dir))
            if lost is not None:
                raise _failed(outputs, lost) from None
        if isinstance(exc, RuntimeError) and "without overflow" in str(exc):  # a step beyond float32 (Adam, --lr 1e38)
            raise _failed(outputs, TrainingDiverged(
                f"training stopped: the optimizer's step overflowed float32 at epoch {run.trainer.state.epoch}, "
                f"iteration {run.trainer.state.iteration}; {what_is_saved(run_dir)}; train again with a lower --lr "
                f"(now {recipe.lr:g})")) from None
        raise _failed(outputs, exc)
    finally:
        stop.restore()
        with contextlib.suppress(OSError):  # a full disk: the error above says so
            outputs.close()

    at = f"epoch {run.trainer.state.epoch}, iteration {run.trainer.state.iteration}"
    if stop.signum is not None:
        if rank0 and outputs.history.status != COMPLETED:  # a signal at the very end: the run completed first
            outputs.history.finish(f"interrupted at {at}")
        raise Interrupted(stop.exit_code, at, continuing_command(run_dir))
    if diverged:
        if rank0:
            outputs.history.finish(f"stopped: loss became NaN or infinite at {at}")
        amp = " or with --amp off" if run.precision.amp else ""
        if run.trainer.state.iteration == 1:  # the first batch's loss came before any step: no rate made it
            raise TrainingDiverged(
                f"training stopped: the loss of the first batch is NaN or infinite, before any optimizer step, so the "
                f"network's output (or its loss) is not finite whatever the learning rate; {what_is_saved(run_dir)}; "
                f"check the network's forward pass{amp}")
        raise TrainingDiverged(f"training stopped: the loss became NaN or infinite at {at}; {what_is_saved(run_dir)}; "
                               f"train again with a lower --lr (now {recipe.lr:g}){amp}")
    if outputs.history.epochs:  # rank 0 holds the history
        say(f"Final test accuracy {percent(outputs.history.epochs[-1][TEST_ACCURACY])} after "
            f"{counted(recipe.epochs, 'epoch')}; run directory: {run_dir}")
    return outputs.history.as_dict()


def what_is_saved(run_dir: str) -> str:
    """What a stopped run leaves to go on from, in words: its newest epoch checkpoint, or that there is none yet."""
    saved = epoch_checkpoints(run_dir)
    if not saved:
        return f"no checkpoint was written yet in {run_dir}"
    epoch = max(saved)
    return f"the last good checkpoint is {os.path.basename(saved[epoch])} (epoch {epoch}) in {run_dir}"


def _failed(outputs, error: BaseException) -> BaseException:
    """Record in history.json (rank 0, where it was written at all) that the run ended with `error`; return it."""
    history = outputs.history
    if idist.get_rank() == 0 and os.path.isfile(history.path) and history.status == RUNNING:
        if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C: out at once, without a checkpoint of this point
            status = "interrupted (the last checkpoint holds the last finished epoch)"
        else:
            status = "failed: " + (str(error).splitlines()[0] if str(error).strip() else type(error).__name__)
        try:
            history.finish(status)
        except OSError:
            pass  # a full or vanished disk: the error itself says so
    return error
