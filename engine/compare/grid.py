"""Training a plan of several runs (engine/compare/plan.py): `--bonus`, `--compare A B ...`, `--seeds K1 K2 ...` and
both together, by one member loop; and `--report`, the reports alone.

Every member is an ordinary run trained by engine/session.py, one after another, on one loaded dataset. A resume keeps
a finished member, continues an interrupted one and starts afresh, in place, one killed before its first checkpoint.
Once a seed's nets have run, its comparison report is written (report.json, report.md, curves.png in the seed's
folder), and once every seed has, the study's summary; both after each run's own TensorBoard writer is closed, and
both rebuilt by `--report` from the runs' histories.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import ignite.distributed as idist

from core.errors import UserError
from core.history_file import RunHistory, read_history
from core.recipe import BONUS_TRAIN_EVAL, Recipe, Setup
from engine.compare.plan import COMPARISON, RECORD_FILES, STUDY, Plan, existing_runs, net_dir, read_plan
from engine.compare.report import Retester, check_comparable, write_report, write_study
from engine.console import say
from engine.data.datasets import hold_out
from engine.resume import FINISHED, INTERRUPTED, UNSTARTED, member_state, restore_history
from engine.run_lock import hold, write_on_rank_0
from engine.rundir import (clear_unstarted_run, continue_or_claim, create_run_dir, default_comparison_dir,
                           default_report_dir, default_study_dir)
from engine.session import continuing_with, load_data, train
from models import BONUS_PAIR


def comparison_recipe(recipe: Recipe) -> Recipe:
    """The recipe nets are compared with: train-eval on 10,000 fixed training images unless set otherwise."""
    return dataclasses.replace(recipe, train_eval=recipe.train_eval or BONUS_TRAIN_EVAL)


def train_plan(recipe: Recipe, setup: Setup, nets: tuple[str, ...] | None = None, seeds: list[int] | None = None,
               resume_dir: str | None = None) -> str:
    """Train `nets` (compared with the first) × `seeds` with one recipe, in a new directory (`--output-dir`, else one
    under RUNS_ROOT) or in `resume_dir`, then write the reports. Returns the directory."""
    if nets is not None and (len(nets) < 2 or len(set(nets)) != len(nets)):
        raise UserError(f"a comparison needs at least two different architectures, got {' '.join(nets)}")
    if seeds and len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct, got {seeds}")
    recipe = comparison_recipe(recipe) if nets else recipe
    plan = Plan(STUDY if seeds else COMPARISON, tuple(nets) if nets else None, tuple(seeds) if seeds else None,
                dataclasses.asdict(recipe), setup.data_dir, setup.amp)
    default = (default_study_dir(setup.runs_root, recipe, seeds, nets) if seeds
               else default_comparison_dir(setup.runs_root, recipe, nets))
    resuming = resume_dir is not None
    data = load_data(recipe, setup)  # one dataset for every member and re-test, checked before anything is written
    hold_out(data, recipe.val_split)
    with opened(plan, resume_dir, setup.output_dir, default) as directory:
        say(f"Study directory: {directory} (seeds {', '.join(map(str, seeds))})" if seeds else comparison_heading(directory, nets))
        retester = Retester(setup, data)
        with continuing_with(plan.command(directory), directory):
            for seed, folder in plan.folders(directory):
                seed_recipe = recipe if seed is None else dataclasses.replace(recipe, seed=seed)
                if seed is not None:
                    say(f"=== seed {seed} ===")
                if not nets:
                    train_member(seed_recipe, setup, retester.data, folder, resuming, name=f"seed {seed}")
                elif seed is None:
                    train_comparison(seed_recipe, setup, nets, folder, resuming, retester)
                else:  # each seed's folder is an ordinary comparison, with its own plan and lock
                    seed_plan = dataclasses.replace(plan, kind=COMPARISON, seeds=None, recipe=dataclasses.asdict(seed_recipe))
                    exists = resuming and os.path.isdir(folder)
                    with opened(seed_plan, folder if exists else None, folder) as folder:
                        say(comparison_heading(folder, nets))
                        train_comparison(seed_recipe, setup, nets, folder, exists, retester)
            if seeds:
                write_on_rank_0(lambda: write_study(directory, retester))
    return directory


@contextlib.contextmanager
def opened(plan: Plan, resume_dir: str | None, output_dir: str | None, default: str | None = None):
    """Continue `resume_dir`, or claim `output_dir` (else `default`, numbered); hold its lock (its runs that exist
    must be free) and write its plan first, unless it has one. Yields the directory."""
    directory = continue_or_claim(resume_dir, output_dir, default)
    runs = [path for path in (*(folder for _seed, folder in plan.folders(directory)), *plan.runs(directory))
            if path != directory and os.path.isdir(path)]
    with hold(directory, members=runs):
        recorded = read_plan(directory)
        if resume_dir is not None and recorded is not None and recorded.kind == plan.kind == COMPARISON \
                and recorded.nets != plan.nets:
            raise UserError(f"cannot resume {directory}: it compares {' '.join(recorded.nets)}, "
                            f"not {' '.join(plan.nets)}")
        if (recorded is None or not recorded.recorded) and idist.get_rank() == 0:  # rank 0 alone writes files
            plan.write(directory)
        yield directory


def train_comparison(recipe: Recipe, setup: Setup, nets: tuple[str, ...], directory: str, resuming: bool,
                     retester: Retester) -> None:
    """Train each net of a comparison in `directory/<net>/`, then write its report."""
    for arch in nets:
        train_member(dataclasses.replace(recipe, arch=arch), setup, retester.data, net_dir(directory, arch), resuming,
                     name=arch, heading=f"== {arch} ==")
    write_on_rank_0(lambda: write_report(directory, comparison_histories(directory), retester))


def comparison_heading(directory: str, nets: tuple[str, ...]) -> str:
    return f"{'Bonus' if nets == BONUS_PAIR else 'Comparison'} directory: {directory}"


def train_member(recipe: Recipe, setup: Setup, data, member_dir: str, resuming: bool, name: str,
                 heading: str | None = None) -> None:
    """Train one run of a plan in `member_dir` on `data`. When `resuming`, a finished run is kept (said under `name`),
    an interrupted one continues, and one killed before its first checkpoint starts afresh in place; `heading` is
    printed before training."""
    if resuming:
        write_on_rank_0(lambda: restore_history(member_dir))  # a lost history.json comes back from a checkpoint
    state = member_state(recipe, member_dir) if resuming else UNSTARTED
    if state == FINISHED:
        say(f"{name}: already trained in {member_dir}, not training again")
        return
    if resuming and state == UNSTARTED:
        clear_unstarted_run(member_dir)
    if heading:
        say(heading)
    train(recipe, setup, data=data, resume=member_dir if state == INTERRUPTED else None, into=member_dir)


def comparison_histories(directory: str) -> dict[str, RunHistory]:
    """The histories of a comparison directory's nets, baseline first."""
    plan = read_plan(directory)
    if plan is None or plan.kind != COMPARISON:
        raise UserError(f"{directory} is not a comparison: it has no {RECORD_FILES[COMPARISON]} and no "
                        f"{'/, '.join(BONUS_PAIR)}/")
    return {arch: read_history(net_dir(directory, arch)) for arch in plan.nets}


def report_only(directories: list[str], setup: Setup) -> str:
    """`--report`: rebuild the report of a comparison or the summary of a study directory, or compare single-run
    directories (one per architecture; the bonus pair in its order, otherwise the first named is the baseline) into
    `setup.output_dir` (default `<runs_root>/<dataset>-report-<time>`). Returns where. The final checkpoints are
    re-tested class by class on the dataset under `setup.data_dir`, if it is there. Refused while the directory or
    one of its runs is in use."""
    if len(directories) == 1:
        directory = directories[0]
        plan = read_plan(directory)
        if plan is None or plan.kind != STUDY:
            comparison_histories(directory)  # said before the lock: nothing is written into what is no comparison
        with hold(directory, members=existing_runs(directory)):
            if plan.kind == STUDY:
                return write_study(directory, Retester(setup))
            write_report(directory, comparison_histories(directory), Retester(setup))
        return directory
    histories = {}
    for run_dir in directories:
        history = read_history(run_dir)
        arch = history.recipe.arch
        if arch in histories:
            raise UserError(f"--report needs one run per architecture, but two of {', '.join(directories)} are {arch}")
        histories[arch] = history
    if set(histories) == set(BONUS_PAIR):
        histories = {arch: histories[arch] for arch in BONUS_PAIR}
    check_comparable(histories)
    with contextlib.ExitStack() as held:
        for run_dir in directories:  # the verdicts go into the judged runs' TensorBoard streams
            held.enter_context(hold(run_dir))
        dataset = next(iter(histories.values())).recipe.dataset
        directory = create_run_dir(setup.output_dir or default_report_dir(setup.runs_root, dataset),
                                   numbered=setup.output_dir is None)
        write_report(directory, histories, Retester(setup))
    return directory
