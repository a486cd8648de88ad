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
import itertools
import os
import sys
import time

import ignite.distributed as idist

from core.errors import ProcessLost, UserError
from core.history_file import TEST_ACCURACY, read_history
from core.numbers import percent
from core.recipe import BONUS_TRAIN_EVAL, Recipe, Setup
from engine.compare.plan import COMPARISON, RUN, STUDY, Plan, existing_runs, read_plan
from engine.compare.report import Retester, check_comparable, planned_histories, write_report
from engine.console import say
from engine.devices import launched_by_torchrun
from engine.resume import FINISHED, INTERRUPTED, UNSTARTED, member_state, restore_history
from engine.compare.dealing import Dealer
from engine.run_lock import hold, on_rank_0, write_on_rank_0
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
            for (seed, folder), members in itertools.groupby(plan.members(directory), lambda m: (m.seed, m.folder)):
                if seed is not None:
                    say(f"=== seed {seed} ===")
                with claimed(plan, seed, folder, resuming, say_heading=True):
                    for member in members:
                        train_member(member.recipe(recipe), setup, data, member.run_dir, resuming,
                                     name=member.arch or member.name, heading=member.arch and f"== {member.arch} ==")
                    write_reports(plan, directory, retester, [folder])
    return directory


def train_dealt(plan: Plan, recipe: Recipe, setup: Setup, data, resume_dir: str | None, default: str) -> str:
    """`--parallel members` under torchrun: the plan's members dealt to the processes in order (engine/compare/dealing.Dealer),
    each trained alone, quietly, by the process that took it; rank 0 opens the directory first, prints a line as each
    member finishes, and writes the reports once every process has stopped. Returns the directory."""
    dealer = Dealer(len(plan.members("")))  # how many there are: where they go is known once rank 0 has the directory
    if dealer.rank != 0:
        directory = dealer.share("directory")
        if directory.startswith("\0"):
            raise SystemExit(1)  # rank 0 says why
        with dealer.watched(sys.stdout, plan.command(directory)):
            return deal(dealer, plan, recipe, setup, data, directory, resume_dir is not None)
    try:
        with opened(plan, resume_dir, setup.output_dir, default) as directory:
            for seed, folder in plan.folders(directory):
                with claimed(plan, seed, folder, resume_dir is not None):
                    pass  # every seed's folder claimed, with its plan, before any member
            dealer.share("directory", directory)
            say(plan.heading(directory))
            say(f"{dealer.members} runs dealt to {dealer.world} processes, each trained alone")
            with dealer.watched(sys.stdout, plan.command(directory)):  # each member's line, the last before the reports
                deal(dealer, plan, recipe, setup, data, directory, resume_dir is not None)
            if dealer.store.check(["failed"]):
                raise SystemExit(1)  # the process whose member failed says which, and how to continue
            with continuing_with(plan.command(directory), directory):
                write_reports(plan, directory, Retester(setup, data), [folder for _seed, folder in plan.folders(directory)])
    except BaseException as exc:
        if not dealer.store.check(["directory"]):
            dealer.share("directory", "\0" + str(exc))
        raise
    return directory


def deal(dealer: Dealer, plan: Plan, recipe: Recipe, setup: Setup, data, directory: str, resuming: bool) -> str:
    """Train the members this process takes, one after another, each alone and quietly; a failure stops the dealing
    and is one line naming the member and the command that continues the plan."""
    continuing, members = plan.command(directory), plan.members(directory)
    try:
        while (index := dealer.take()) is not None:
            member, member_dir, name = members[index].recipe(recipe), members[index].run_dir, members[index].name
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


@contextlib.contextmanager
def claimed(plan: Plan, seed: int | None, folder: str, resuming: bool, say_heading: bool = False):
    """In a study of comparisons, a seed's folder is an ordinary comparison: continued where a resume finds it, else
    claimed, with its own plan and lock, while its members train (its heading said first where `say_heading`)."""
    if not (plan.seeds and plan.nets):
        yield folder
        return
    seed_plan = plan.of_seed(seed)
    # Rank 0 decides (a process that looked after it created the folder would take the other path and wait forever).
    found = on_rank_0(lambda: folder if resuming and os.path.isdir(folder) else "")()
    with opened(seed_plan, found or None, folder) as folder:
        if say_heading:
            say(seed_plan.heading(folder))
        yield folder


def write_reports(plan: Plan, directory: str, retester: Retester, folders: list[str]) -> None:
    """The reports due once the members in `folders` (seed folders of `directory`, or `directory` itself) have
    trained, written by rank 0: each one's comparison report where the plan compares nets, and the study's once its
    last seed is among them."""
    for folder in folders if plan.nets else ():
        write_on_rank_0(lambda: write_report(folder, retester))  # noqa: B023 (called at once)
    if plan.seeds and plan.folders(directory)[-1][1] in folders:
        # A study of one seed comparing nets sums up what its seed's report has just printed: said once.
        repeated = bool(plan.nets) and len(plan.seeds) == 1
        write_on_rank_0(lambda: write_report(directory, retester, summary=not repeated))


def train_member(recipe: Recipe, setup: Setup, data, member_dir: str, resuming: bool, name: str,
                 heading: str | None = None) -> None:
    """Train one run of a plan in `member_dir` on `data`. When `resuming`, a finished run is kept (said under `name`),
    an interrupted one continues, and one killed before its first checkpoint starts afresh in place; `heading` is
    printed before training."""
    state, history = UNSTARTED, None
    if resuming:  # a lost history.json comes back from a checkpoint first; what is read decides, and goes on with it
        state, history = member_state(recipe, member_dir, write_on_rank_0(lambda: restore_history(member_dir)))
    if state == FINISHED:
        say(f"{name}: already trained in {member_dir}, not training again")
        return
    if resuming and state == UNSTARTED:
        clear_unstarted_run(member_dir)
    if heading:
        say(heading)
    train(recipe, setup, data=data, resume=member_dir if state == INTERRUPTED else None, into=member_dir,
          recorded=history)


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
