"""Training a plan of several runs (engine/compare/plan.py): `--bonus`, `--compare A B ...`, `--seeds K1 K2 ...` and
both together, by one member loop; and `--report`, the reports alone.

Every member is an ordinary run trained by engine/session.py, on one loaded dataset: one after another, or dealt to
torchrun's processes (`--parallel members`). A resume keeps a finished member, continues an interrupted one and
starts afresh, in place, one killed before its first checkpoint. Each seed's comparison report (report.json,
report.md, curves.png in its folder) and the study's summary follow once their runs have, rebuilt by `--report`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import time

import ignite.distributed as idist

from core.errors import ProcessLost, UserError
from core.history_file import TEST_ACCURACY, read_history
from core.numbers import percent
from core.recipe import BONUS_TRAIN_EVAL, Recipe, Setup
from engine.compare.plan import COMPARISON, RUN, STUDY, Plan, existing_runs, net_dir, read_plan, seed_dir
from engine.compare.report import Retester, check_comparable, planned_histories, write_report
from engine.console import say
from engine.devices import launched_by_torchrun
from engine.resume import FINISHED, INTERRUPTED, UNSTARTED, member_state, restore_history
from engine.compare.dealing import Dealer
from engine.run_lock import hold, write_on_rank_0
from engine.rundir import (clear_unstarted_run, continue_or_claim, create_run_dir, default_comparison_dir,
                           default_report_dir, default_study_dir)
from engine.session import Interrupted, continuing_with, load_data, train
from models import BONUS_PAIR


class MemberFailed(UserError):
    """A member of a dealt plan failed: said by the process that trained it, whatever its rank."""


def train_plan(recipe: Recipe, setup: Setup, nets: tuple[str, ...] | None = None, seeds: list[int] | None = None,
               resume_dir: str | None = None) -> str:
    """Train `nets` (compared with the first) × `seeds` with one recipe, in a new directory (`--output-dir`, else one
    under RUNS_ROOT) or in `resume_dir`, then write the reports. Returns the directory."""
    if nets is not None and (len(nets) < 2 or len(set(nets)) != len(nets)):
        raise UserError(f"a comparison needs at least two different architectures, got {' '.join(nets)}")
    if seeds and len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct, got {seeds}")
    if nets:  # compared on train-eval too: 10,000 fixed training images unless set otherwise
        recipe = dataclasses.replace(recipe, train_eval=recipe.train_eval or BONUS_TRAIN_EVAL)
    plan = Plan(STUDY if seeds else COMPARISON, tuple(nets) if nets else None, tuple(seeds) if seeds else None,
                dataclasses.asdict(recipe), setup.data_dir, setup.amp)
    default = (default_study_dir(setup.runs_root, recipe, seeds, nets) if seeds
               else default_comparison_dir(setup.runs_root, recipe, nets))
    resuming = resume_dir is not None
    data = load_data(recipe, setup)  # one dataset for every member and re-test, checked before anything is written
    if setup.parallel == "members" and launched_by_torchrun():
        return train_dealt(plan, recipe, setup, data, resume_dir, default)
    with opened(plan, resume_dir, setup.output_dir, default) as directory:
        say(plan.heading(directory))
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
                    seed_plan, exists = plan.of_seed(seed), resuming and os.path.isdir(folder)
                    with opened(seed_plan, folder if exists else None, folder) as folder:
                        say(seed_plan.heading(folder))
                        train_comparison(seed_recipe, setup, nets, folder, exists, retester)
            if seeds:
                write_on_rank_0(lambda: write_report(directory, retester))
    return directory


def train_dealt(plan: Plan, recipe: Recipe, setup: Setup, data, resume_dir: str | None, default: str) -> str:
    """`--parallel members` under torchrun: the plan's members dealt to the processes in order (engine/compare/dealing.Dealer),
    each trained alone, quietly, by the process that took it; rank 0 opens the directory first, prints a line as each
    member finishes, and writes the reports once every process has stopped. Returns the directory."""
    members = [(seed, arch) for seed in plan.seeds or (None,) for arch in plan.nets or (None,)]
    dealer = Dealer(len(members))
    if dealer.rank != 0:
        directory = dealer.share("directory")
        if directory.startswith("\0"):
            raise SystemExit(1)  # rank 0 says why
        with dealer.watched(sys.stdout, plan.command(directory)):
            return deal(dealer, members, plan, recipe, setup, data, directory, resume_dir is not None)
    try:
        with opened(plan, resume_dir, setup.output_dir, default) as directory:
            for seed, folder in plan.folders(directory) if plan.seeds and plan.nets else ():
                with opened(plan.of_seed(seed), folder if os.path.isdir(folder) else None, folder):
                    pass  # each seed's folder is an ordinary comparison: claimed, with its plan, before any member
            dealer.share("directory", directory)
            say(plan.heading(directory))
            say(f"{len(members)} runs dealt to {dealer.world} processes, each trained alone")
            with dealer.watched(sys.stdout, plan.command(directory)):  # each member's line, the last before the reports
                deal(dealer, members, plan, recipe, setup, data, directory, resume_dir is not None)
            if dealer.store.check(["failed"]):
                raise SystemExit(1)  # the process whose member failed says which, and how to continue
            retester = Retester(setup, data)
            with continuing_with(plan.command(directory), directory):
                for _seed, folder in plan.folders(directory) if plan.nets else ():
                    write_report(folder, retester)
                if plan.seeds:
                    write_report(directory, retester)
    except BaseException as exc:
        if not dealer.store.check(["directory"]):
            dealer.share("directory", "\0" + str(exc))
        raise
    return directory


def deal(dealer: Dealer, members: list[tuple[int | None, str | None]], plan: Plan, recipe: Recipe, setup: Setup, data,
         directory: str, resuming: bool) -> str:
    """Train the members this process takes, one after another, each alone and quietly; a failure stops the dealing
    and is one line naming the member and the command that continues the plan."""
    continuing = plan.command(directory)
    try:
        while (index := dealer.take()) is not None:
            seed, arch = members[index]
            folder = directory if seed is None else seed_dir(directory, seed)
            member_dir = folder if arch is None else net_dir(folder, arch)
            member = dataclasses.replace(recipe, **({} if seed is None else {"seed": seed}),
                                         **({} if arch is None else {"arch": arch}))
            name = " ".join(part for part in (arch, None if seed is None else f"seed {seed}") if part)
            started = time.perf_counter()
            dealer.training(f"{name} (in {member_dir})")
            try:
                with continuing_with(continuing, directory), contextlib.redirect_stdout(io.StringIO()):
                    train_member(member, setup, data, member_dir, resuming, name=name)
            except Interrupted:  # torchrun stops the others when one process dies: the lowest survivor says which
                dealer.fail(name)
                lost = dealer.lost(continuing)
                if lost is not None:
                    raise lost from None
                raise  # every process was interrupted: rank 0 says so, with the command that continues the plan
            except (UserError, KeyboardInterrupt) as exc:
                dealer.fail(name)
                raise MemberFailed(f"{name} (in {member_dir}): {exc}; the rest continues with: {continuing}") from None
            accuracy = read_history(member_dir).epochs[-1][TEST_ACCURACY]
            dealer.finished(f"{name}: test accuracy {percent(accuracy)}, {time.perf_counter() - started:.0f}s "
                            f"(process {dealer.rank})")
    except (Interrupted, ProcessLost):
        raise  # nothing more is written: waiting for a process that is gone would never end
    except BaseException:
        dealer.wait_for_all(continuing)
        raise
    dealer.wait_for_all(continuing)
    return directory


@contextlib.contextmanager
def opened(plan: Plan, resume_dir: str | None, output_dir: str | None, default: str | None = None):
    """Continue `resume_dir`, or claim `output_dir` (else `default`, numbered); hold its lock (its runs that exist
    must be free) and write its plan first, unless it has one (then a resume's other --epochs go into it). Yields the
    directory."""
    directory = continue_or_claim(resume_dir, output_dir, default)
    runs = [path for path in (*(folder for _seed, folder in plan.folders(directory)), *plan.runs(directory))
            if path != directory and os.path.isdir(path)]
    with hold(directory, members=runs):
        recorded = read_plan(directory)
        if idist.get_rank() == 0:  # rank 0 alone writes files
            if recorded is None or not recorded.recorded:
                plan.write(directory)
            elif recorded.recipe and recorded.recipe.get("epochs") != plan.recipe["epochs"]:  # a resume's --epochs
                recipe = dict(recorded.recipe, epochs=plan.recipe["epochs"])
                dataclasses.replace(recorded, recipe=recipe).write(directory)
        yield directory


def train_comparison(recipe: Recipe, setup: Setup, nets: tuple[str, ...], directory: str, resuming: bool,
                     retester: Retester) -> None:
    """Train each net of a comparison in `directory/<net>/`, then write its report."""
    for arch in nets:
        train_member(dataclasses.replace(recipe, arch=arch), setup, retester.data, net_dir(directory, arch), resuming,
                     name=arch, heading=f"== {arch} ==")
    write_on_rank_0(lambda: write_report(directory, retester))


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


def report_only(directories: list[str], setup: Setup) -> str:
    """`--report`: rebuild the report of a comparison or the summary of a study directory, or compare single-run
    directories (one per architecture; the bonus pair in its order, otherwise the first named is the baseline) into
    `setup.output_dir` (default `<runs_root>/<dataset>-report-<time>`). Returns where. The final checkpoints are
    re-tested class by class on the dataset under `setup.data_dir`, if it is there. Refused while the directory or
    one of its runs is in use."""
    if len(directories) == 1:
        directory = directories[0]
        plan = read_plan(directory)
        if plan is not None and plan.kind == RUN:
            raise UserError(f"{directory} is a single run; --report compares runs: name two or more (--report RUN_A "
                            "RUN_B ...), or a bonus, comparison or study directory")
        if plan is None or plan.kind != STUDY:
            planned_histories(directory)  # said before the lock: nothing is written into what is no comparison
        with hold(directory, members=existing_runs(directory)):
            write_report(directory, Retester(setup))
        return directory
    histories = {}
    for run_dir in directories:
        history = read_history(run_dir)
        arch = history.recipe.arch
        if arch in histories:
            raise UserError(f"--report needs one run per architecture, but two of {', '.join(directories)} are {arch}")
        histories[arch] = [history]
    if set(histories) == set(BONUS_PAIR):
        histories = {arch: histories[arch] for arch in BONUS_PAIR}
    check_comparable(histories)
    with contextlib.ExitStack() as held:
        for run_dir in directories:  # the verdicts go into the judged runs' TensorBoard streams
            held.enter_context(hold(run_dir))
        dataset = next(iter(histories.values()))[0].recipe.dataset
        directory = create_run_dir(setup.output_dir or default_report_dir(setup.runs_root, dataset),
                                   numbered=setup.output_dir is None)
        write_report(directory, Retester(setup), histories)
    return directory
