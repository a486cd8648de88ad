"""`run.py --bonus`: train both architectures with one recipe, then compare them; and `--report`, the comparison alone.

The bonus is itself an Ignite engine whose iterations are the architectures (single-stage first): each iteration
trains one net through engine/session.py, or skips it when a resumed bonus finds it finished. The comparison
report is a handler on that engine's COMPLETED event, so it is written once both nets have run, on one code path
whether or not anything trained, after each run's own TensorBoard writer is closed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

from ignite.engine import Engine

import handlers.comparison_report
from core.errors import UserError
from core.history_file import HISTORY_FILE, read_history
from core.recipe import Recipe, Setup
from engine.console import say
from engine.datasets import CifarData
from engine.report import check_comparable, offline, read_bonus_histories, write_report
from engine.report_views import ARCH_ORDER
from engine.resume import check_resumable, has_checkpoint
from engine.rundir import claim_run_dir, create_run_dir, hold, timestamp
from engine.session import Interrupted, load_data, train

TRAIN_EVAL_IMAGES = 10_000


def bonus_recipe(recipe: Recipe) -> Recipe:
    """The shared recipe: train-eval on 10,000 fixed training images unless set otherwise."""
    return dataclasses.replace(recipe, train_eval=recipe.train_eval or TRAIN_EVAL_IMAGES)


def run_bonus(recipe: Recipe, setup: Setup, resume_dir: str | None = None, data: CifarData | None = None,
              retested: dict | None = None) -> str:
    """Train single- then multi-stage under `<runs_root>/<dataset>-bonus-<time>/` (or continue `resume_dir`,
    skipping finished runs) and write the comparison report there. Returns the bonus directory. A study passes
    `data` to share one loaded dataset across seeds, and `retested` to keep the report's per-class re-tests for
    its own summary."""
    recipe = bonus_recipe(recipe)
    if resume_dir is None:
        default = os.path.join(setup.runs_root, f"{recipe.dataset}-bonus-{timestamp()}")
        bonus_dir = claim_run_dir(setup.output_dir or default, numbered=setup.output_dir is None)
    elif os.path.isdir(resume_dir):
        bonus_dir = resume_dir
    else:
        raise UserError(f"cannot resume: {resume_dir} is not a directory")
    # One process per bonus; each net's run holds its own lock while it trains.
    with hold(bonus_dir, members=[os.path.join(bonus_dir, arch) for arch in ARCH_ORDER]):
        return _run_bonus_in(bonus_dir, recipe, setup, resume_dir is not None, data, retested)


def _run_bonus_in(bonus_dir: str, recipe: Recipe, setup: Setup, resuming: bool, data: CifarData | None,
                  retested: dict | None) -> str:
    say(f"Bonus directory: {bonus_dir}")
    data = data or load_data(recipe, setup)

    def train_one(_engine: Engine, arch: str) -> None:
        arch_dir = os.path.join(bonus_dir, arch)
        arch_recipe = dataclasses.replace(recipe, arch=arch)
        resume = resuming and has_checkpoint(arch_dir)
        if resume:
            check_resumable(arch_recipe, arch_dir)
            if read_history(arch_dir).completed:
                say(f"{arch}: already trained in {arch_dir}, not training again")
                return
        elif resuming:
            _discard_unfinished_first_epoch(arch_dir)
        say(f"== {arch} ==")
        train(arch_recipe, dataclasses.replace(setup, output_dir=arch_dir), data=data, resume=arch_dir if resume else None)

    bonus = Engine(train_one)
    bonus.logger.disabled = True  # errors are reported in one line by run.py
    handlers.comparison_report.attach(bonus, lambda: write_report(bonus_dir, read_bonus_histories(bonus_dir), setup, data,
                                                                 retested))
    try:
        bonus.run(list(ARCH_ORDER), max_epochs=1)
    except Interrupted as exc:  # the printed command continues the bonus, not just the net it was training
        raise exc.continued_by(f"python run.py --bonus --resume {bonus_dir}") from None
    return bonus_dir


def _discard_unfinished_first_epoch(arch_dir: str) -> None:
    """A run killed before its first checkpoint leaves only an event file and an empty history: remove those
    (nothing of value) and the then empty folder, so the run can start afresh. Anything else is left alone,
    and the run refuses to start over it."""
    if not os.path.isdir(arch_dir):
        return
    for name in os.listdir(arch_dir):
        if name.startswith("events.out.tfevents.") or name in (HISTORY_FILE, f"{HISTORY_FILE}.tmp"):
            os.remove(os.path.join(arch_dir, name))
    if not os.listdir(arch_dir):
        os.rmdir(arch_dir)


def report_only(run_dirs: list[str], setup: Setup) -> str:
    """`--report`: rebuild the comparison from a bonus directory, or from two single-run directories (one
    per architecture) into `setup.output_dir` (default `<runs_root>/<dataset>-report-<time>`). Returns where.
    The final checkpoints are re-tested class by class on the dataset under `setup.data_dir`, if it is there."""
    if len(run_dirs) == 1:
        # The report is written into the bonus directory and its runs.
        with hold(run_dirs[0], members=[os.path.join(run_dirs[0], arch) for arch in ARCH_ORDER]):
            write_report(run_dirs[0], read_bonus_histories(run_dirs[0]), offline(setup))
        return run_dirs[0]
    histories = {}
    for run_dir in run_dirs:
        history = read_history(run_dir)
        arch = history.recipe.arch
        if arch in histories:
            raise UserError(f"--report needs one run per architecture, but both {run_dirs[0]} and {run_dirs[1]} are {arch}")
        histories[arch] = history
    check_comparable(histories)
    with contextlib.ExitStack() as held:
        for run_dir in run_dirs:  # the verdict goes into the multi-stage run's TensorBoard stream
            held.enter_context(hold(run_dir))
        dataset = histories["multistage"].recipe.dataset
        directory = setup.output_dir or os.path.join(setup.runs_root, f"{dataset}-report-{timestamp()}")
        directory = create_run_dir(directory, numbered=setup.output_dir is None)
        write_report(directory, histories, offline(setup))
    return directory
