"""What a run is resumed from, checked and loaded: `checked_resume` decides before anything is loaded or built,
`resume_point` loads once the run is built; beside them, a plan member's state and a lost history.json rebuilt."""
from __future__ import annotations

import os

import ignite.distributed as idist
import torch

from core.errors import UserError
from core.history_file import (COMPLETED, CONFIG, EPOCHS, EPOCHS_TRAINED, FINAL, HISTORY_FILE, STATUS, RunHistory,
                               VAL_IMAGES, read_history, write_json)
from core.history_file import EPOCH as RECORD_EPOCH  # handlers.checkpointing's EPOCH is a checkpoint's kind
from core.numbers import counted
from core.recipe import Recipe, Setup
from engine.console import say
from engine.data.datasets import positions_hash
from engine.devices import machine, machine_in_words, resolve_device
from engine.precision import Precision, resolve_precision
from engine.run_lock import write_on_rank_0
from engine.rundir import remove_stale_temp_files
from handlers.checkpointing import EPOCH, EPOCH_CHECKPOINT, checkpoints
from models import user_nets


def checked_resume(recipe: Recipe, setup: Setup, run_dir: str, resume: str, recorded: RunHistory | None = None) -> RunHistory:
    """What a resume of `run_dir` (`resume`: it, or one of its checkpoints) decides before anything is loaded or
    built, from its history read once (rebuilt from a checkpoint first where it is lost; `recorded` where a plan has
    read and checked it): a run without a checkpoint, with another recipe or in another precision is refused at
    once. Returns the history."""
    if not os.path.isfile(resume) and not has_checkpoint(run_dir):
        raise UserError(f"cannot resume: {run_dir} holds no checkpoint ({EPOCH_CHECKPOINT})")
    record = recorded or check_resumable(recipe, run_dir, write_on_rank_0(lambda: restore_history(run_dir)))
    check_precision(record, resolve_precision(setup.amp, resolve_device(setup.device), setup.deterministic), setup.amp)
    return record


def resume_point(record: RunHistory, run_dir: str, resume: str, device: torch.device, epoch_length: int) -> tuple[str, dict]:
    """With the run built on `device`: the checkpoint it goes on from and what that holds (the file named, or the
    furthest checkpoint of the directory that loads), once a change of machine is said and what a kill left
    half-written is gone."""
    change = machine_change(record, device)
    if change:
        say(change)
    if idist.get_rank() == 0:
        remove_stale_temp_files(run_dir)
    if os.path.isfile(resume):
        return resume, load_checkpoint(resume, device)
    return load_newest_checkpoint(run_dir, epoch_length, device)


def has_checkpoint(run_dir: str) -> bool:
    """Whether `run_dir` holds any checkpoint file."""
    return bool(checkpoints(run_dir))


def check_resumable(recipe: Recipe, run_dir: str, history: RunHistory | None = None) -> RunHistory:
    """Refuse, naming the field, to resume a run whose history.json holds a different recipe (more epochs are fine
    where it can train on to them: `cannot_train_on`); return the history it checked (`history`, where the caller
    read it already: `restore_history`)."""
    try:
        history = history or recorded_history(run_dir)
    except UserError as exc:
        raise UserError(f"cannot resume {run_dir}: no readable {HISTORY_FILE} ({exc})") from None
    difference = recipe.difference(history.config, ignore=recipe.resumable()) or user_nets.change(history.network)
    why_not = cannot_train_on(history, recipe)
    if difference or why_not:
        raise UserError(f"cannot resume {run_dir}: {difference or 'it ' + why_not}")
    return history


def check_precision(history: RunHistory, precision: Precision, mode: str) -> None:
    """Refuse, as a changed recipe field is, to resume a run in another precision than the one it recorded (`mode`:
    the --amp mode that gave `precision`). A run resumed without --amp gets its own (engine/compare/plan.py: recorded_flags)."""
    if history.precision is not None and history.amp_dtype != precision.dtype_name:
        was = history.precision
        raise UserError(f"cannot resume {history.run_dir}: it was trained in {was}, now {precision.in_words()} (--amp {mode}); "
                        f"resume without --amp to continue in {was}")


def check_held_out(history: RunHistory, data) -> None:
    """Refuse to resume a run whose --val-split images, as recorded, are not the ones this training set gives (another
    copy of the dataset): it would train on images it held out."""
    recorded = history.data.get(VAL_IMAGES)
    if recorded is not None and (data.val_positions is None or positions_hash(data.val_positions) != recorded):
        raise UserError(f"cannot resume {history.run_dir}: its --val-split held out other training images than this data "
                        f"folder's would be (fingerprint {recorded}); resume with the data folder it trained on")


def machine_change(history: RunHistory, device: torch.device) -> str | None:
    """The line a resume says when the device's model, oneDNN's instruction-set level or the thread count differ from
    the ones the run recorded (its numbers then cannot repeat bit for bit); None when they are the same or were not
    recorded (a run recorded before the level was is compared on the rest)."""
    recorded, now = history.machine, machine(device)
    if recorded is None or recorded == {key: value for key, value in now.items() if key in recorded}:
        return None
    return (f"note: {history.run_dir} was trained on {machine_in_words(recorded)}, and continues on {machine_in_words(now)}: "
            "its numbers will not repeat bit for bit")


# Where a run inside a resumed comparison or study stands.
FINISHED, INTERRUPTED, UNSTARTED = "finished", "interrupted", "unstarted"


def cannot_train_on(history: RunHistory, recipe: Recipe) -> str | None:
    """Why a run cannot train on to `recipe.epochs`, or None: 'has trained 4 epochs, more than --epochs 2' (a resume
    cannot take an epoch back), or, for a finished run with fewer, that it holds no checkpoint to go on from."""
    trained = history.epochs[-1][RECORD_EPOCH] if history.epochs else 0
    if trained > recipe.epochs:
        return f"has trained {counted(trained, 'epoch')}, more than --epochs {recipe.epochs}"
    if history.completed and trained < recipe.epochs and not has_checkpoint(history.run_dir):
        return f"holds its {HISTORY_FILE} alone, no checkpoint to train on to {counted(recipe.epochs, 'epoch')} from"
    return None


def member_state(recipe: Recipe, run_dir: str, history: RunHistory | None = None) -> tuple[str, RunHistory | None]:
    """For a run inside a resumed comparison or study, from its `history` (as restore_history returned it; read here
    where not given): FINISHED when it completed the recipe's epochs (it is kept, with or without its checkpoints: a
    finished run copied in from elsewhere may bring its history alone), INTERRUPTED when it continues from its
    checkpoint (also a finished one that `--epochs` extends), UNSTARTED when it holds neither (it trains afresh); and
    the history it decided from. A changed recipe is refused."""
    if history is None:
        try:
            history = recorded_history(run_dir)
        except UserError:
            pass
    if not has_checkpoint(run_dir) and not (history is not None and history.completed):
        return UNSTARTED, None
    history = check_resumable(recipe, run_dir, history)  # also: a finished run that more epochs extend has a checkpoint
    return FINISHED if history.completed and history.epochs[-1][RECORD_EPOCH] == recipe.epochs else INTERRUPTED, history


# A checkpoint that does not load, renamed aside by a resume that goes on from an older one: kept, never read again.
DAMAGED_SUFFIX = ".damaged"


def load_newest_checkpoint(run_dir: str, epoch_length: int, device: torch.device, keep_aside: bool = True,
                           kind: str | None = None) -> tuple[str, dict]:
    """The checkpoint of `run_dir` (of one `kind`, if given) furthest into training that loads, and what it holds (an
    epoch checkpoint is numbered by its epoch, an interrupted one by its iteration; an epoch checkpoint wins a tie).
    Newer ones that do not load (cut short, corrupt) are skipped, each said in one line, and with `keep_aside` renamed
    to `<name>.damaged`, so that the run's next checkpoint of that name does not replace them. Where none loads, the
    newest one's error."""
    def position(entry: tuple[str, int, str]) -> tuple[int, bool]:
        kind, number, _path = entry
        return (number * epoch_length if kind == EPOCH else number), kind == EPOCH

    damaged = []
    for _kind, _number, path in sorted(checkpoints(run_dir, kind), key=position, reverse=True):
        try:
            state = load_checkpoint(path, device)
        except UnreadableCheckpoint as exc:
            damaged.append((path, exc))
            continue
        for skipped, exc in damaged:
            kept = ""
            if keep_aside and idist.get_rank() == 0:
                os.replace(skipped, skipped + DAMAGED_SUFFIX)
                kept = f"; kept as {os.path.basename(skipped) + DAMAGED_SUFFIX}"
            print(f"note: skipped {os.path.basename(skipped)}, which is {exc.damage}{kept}; going on from "
                  f"{os.path.basename(path)}", flush=True)
        return path, state
    if damaged:
        raise damaged[0][1]
    raise UserError(f"cannot resume: {run_dir} holds no checkpoint")


class UnreadableCheckpoint(UserError):
    """A checkpoint file that does not load; `damage` says how, in words."""

    def __init__(self, path: str, damage: str):
        super().__init__(f"cannot read checkpoint {path}: it is {damage}")
        self.damage = damage


def load_checkpoint(path: str, device: torch.device) -> dict:
    """Load a checkpoint safely (`weights_only=True`: tensors and primitives only)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableCheckpoint(path, f"truncated or corrupt ({reason})") from None


def history_in_checkpoint(run_dir: str) -> tuple[str, dict] | None:
    """history.json as the checkpoint furthest into training that loads holds it, and that checkpoint's path; None
    where none loads. A checkpoint holds the history's header and epochs (an older one: its recipe and epochs)."""
    newest = None
    for _kind, _number, path in checkpoints(run_dir):
        try:
            state = load_checkpoint(path, torch.device("cpu"))
        except UnreadableCheckpoint:
            continue
        if newest is None or state["trainer"]["iteration"] > newest[1]["trainer"]["iteration"]:
            newest = path, state
    if newest is None:
        return None
    path, state = newest
    trainer, epochs = state["trainer"], list(state["history"]["epochs"])
    data = {**state["history"].get("header", {CONFIG: dict(state["identity"])}), EPOCHS: epochs, FINAL: {}}
    if epochs and trainer["iteration"] >= trainer["max_epochs"] * trainer["epoch_length"]:
        data[STATUS] = COMPLETED
        last = epochs[-1]
        data[FINAL] = {key: value for key, value in last.items() if key != RECORD_EPOCH} | {EPOCHS_TRAINED: last[RECORD_EPOCH]}
    else:
        data[STATUS] = f"interrupted (history.json rebuilt from {os.path.basename(path)})"
    return path, data


def recorded_history(run_dir: str) -> RunHistory:
    """The run's history.json, or where it is missing or unreadable, the copy its newest checkpoint holds."""
    try:
        return read_history(run_dir)
    except UserError:
        found = history_in_checkpoint(run_dir)
        if found is None:
            raise
        return RunHistory(run_dir, found[1])


def restore_history(run_dir: str) -> RunHistory | None:
    """Before a resume: a history.json that is missing or unreadable while a checkpoint loads is rebuilt from the
    checkpoint's copy, the unreadable file kept as history.json.damaged, and said in one line. Returns the history
    read or rebuilt, None where there is nothing to rebuild it from."""
    path = os.path.join(run_dir, HISTORY_FILE)
    try:
        return read_history(run_dir)
    except UserError as exc:
        problem = f"unreadable ({exc})" if os.path.isfile(path) else "missing"
    found = history_in_checkpoint(run_dir)
    if found is None:
        return None  # nothing to rebuild it from: the resume says what is wrong
    checkpoint, data = found
    kept = ""
    if os.path.isfile(path):
        os.replace(path, path + DAMAGED_SUFFIX)
        kept = f"; the unreadable one is kept as {HISTORY_FILE + DAMAGED_SUFFIX}"
    write_json(path, data)
    epochs = len(data[EPOCHS])
    say(f"note: {path} was {problem}; rebuilt it from {os.path.basename(checkpoint)} "
        f"({counted(epochs, 'epoch')}){kept}")
    return RunHistory(run_dir, data)
