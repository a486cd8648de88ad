"""`run.py --compare A B [C ...]` and `--bonus` (the pair singlestage, multistage): train every named architecture
with one recipe, then compare each with the first (the baseline); and `--report`, the comparison alone.

Each net is trained through engine/session.py by `train_member`, the one loop body of comparisons and studies, which
keeps a member a resume finds finished. The report follows once every net has run, on one code path whether or not
anything trained, after each run's own TensorBoard writer is closed. The directory holds one ordinary run per net
(`<dir>/<arch>/`) and `comparison.json`, which names the nets in order (a directory without it is a bonus: the
default pair).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import ignite.distributed as idist

from core.directory_record import COMPARISON, RECORD_FILES, DirectoryRecord, read_record
from core.errors import UserError
from core.history_file import RunHistory, read_history
from core.recipe import BONUS_TRAIN_EVAL, Recipe, Setup
from engine.compare.report import Retester, check_comparable, write_report
from engine.console import say
from engine.resume import FINISHED, INTERRUPTED, UNSTARTED, member_state
from engine.run_lock import hold, write_on_rank_0
from engine.rundir import (clear_unstarted_run, continue_or_claim, continuing_command, create_run_dir,
                           default_comparison_dir, default_report_dir)
from engine.session import continuing_with, load_data, train
from models import BONUS_PAIR, dir_name

COMPARISON_FILE = RECORD_FILES[COMPARISON]


def comparison_recipe(recipe: Recipe) -> Recipe:
    """The shared recipe: train-eval on 10,000 fixed training images unless set otherwise."""
    return dataclasses.replace(recipe, train_eval=recipe.train_eval or BONUS_TRAIN_EVAL)


def net_dir(directory: str, arch: str) -> str:
    """Where a comparison keeps the run of `arch`."""
    return os.path.join(directory, dir_name(arch))


def comparison_nets(directory: str) -> tuple[str, ...] | None:
    """The nets a comparison directory holds, baseline first: from its record (comparison.json), or the bonus pair
    for a directory without one; None where `directory` is no comparison."""
    record = read_record(directory) if os.path.isdir(directory) else None
    if record is not None and record.kind == COMPARISON:
        return record.nets
    if any(os.path.isdir(net_dir(directory, arch)) for arch in BONUS_PAIR):  # a bonus, perhaps not yet finished
        return BONUS_PAIR
    return None


def read_comparison(directory: str) -> dict[str, RunHistory]:
    """The histories of a comparison directory's nets, baseline first."""
    nets = comparison_nets(directory)
    if nets is None:
        raise UserError(f"{directory} is not a comparison: it has no {COMPARISON_FILE} and no {'/, '.join(BONUS_PAIR)}/")
    return {arch: read_history(net_dir(directory, arch)) for arch in nets}


def run_comparison(recipe: Recipe, setup: Setup, nets: tuple[str, ...] = BONUS_PAIR, resume_dir: str | None = None,
                   retester: Retester | None = None, into: str | None = None) -> str:
    """Train `nets` in order under one directory (`into`, else `--output-dir`, else a new one under RUNS_ROOT; or
    continue `resume_dir`, skipping finished runs) and write the comparison report there. Returns the directory.
    A study passes its `retester`: one loaded dataset for every seed's runs and re-tests, and the re-tests kept
    for its own summary."""
    nets = tuple(nets)
    if len(nets) < 2 or len(set(nets)) != len(nets):
        raise UserError(f"a comparison needs at least two different architectures, got {' '.join(nets)}")
    recipe = comparison_recipe(recipe)
    directory = continue_or_claim(resume_dir, into or setup.output_dir,
                                  default_comparison_dir(setup.runs_root, recipe, nets))
    # One process per comparison; each net's run holds its own lock while it trains.
    with hold(directory, members=[net_dir(directory, arch) for arch in nets]):
        recorded = comparison_nets(directory)
        if resume_dir is not None and recorded is not None and recorded != nets:
            raise UserError(f"cannot resume {directory}: it compares {' '.join(recorded)}, not {' '.join(nets)}")
        if read_record(directory) is None and idist.get_rank() == 0:  # the record first; rank 0 alone writes files
            DirectoryRecord(COMPARISON, nets, recipe=dataclasses.asdict(recipe), data_dir=setup.data_dir,
                            amp=setup.amp).write(directory)
        return _run_comparison_in(directory, nets, recipe, setup, resume_dir is not None, retester)


def _run_comparison_in(directory: str, nets: tuple[str, ...], recipe: Recipe, setup: Setup, resuming: bool,
                       retester: Retester | None) -> str:
    say(f"{'Bonus' if nets == BONUS_PAIR else 'Comparison'} directory: {directory}")
    retester = retester or Retester(setup, load_data(recipe, setup))
    with continuing_with(continuing_command(directory, nets), directory):
        for arch in nets:
            train_member(dataclasses.replace(recipe, arch=arch), setup, retester.data, net_dir(directory, arch),
                         resuming, name=arch, heading=f"== {arch} ==")
        write_on_rank_0(lambda: write_report(directory, read_comparison(directory), retester))
    return directory


def train_member(recipe: Recipe, setup: Setup, data, member_dir: str, resuming: bool, name: str,
                 heading: str | None = None) -> None:
    """Train one run of a comparison or study in `member_dir` on `data`. When `resuming`, a finished run is kept (said
    under `name`), an interrupted one continues, and one killed before its first checkpoint starts afresh in place;
    `heading` is printed before training."""
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
    """`--report`: rebuild the report of a comparison directory, or compare single-run directories (one per
    architecture; the bonus pair in its order, otherwise the first named is the baseline) into `setup.output_dir`
    (default `<runs_root>/<dataset>-report-<time>`). Returns where. The final checkpoints are re-tested class by
    class on the dataset under `setup.data_dir`, if it is there."""
    if len(directories) == 1:
        directory = directories[0]
        nets = comparison_nets(directory)
        if nets is None:  # said before the lock, so that nothing is written into a directory that is no comparison
            read_comparison(directory)
        # The report is written into the comparison directory and its runs.
        with hold(directory, members=[net_dir(directory, arch) for arch in nets]):
            write_report(directory, read_comparison(directory), Retester(setup))
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
