"""`--seeds K1 K2 ...`: one recipe trained once per seed, and a summary across seeds that says how sure it is.

A study directory holds one ordinary run directory per seed (`seed<k>/`), or with `--bonus`/`--compare` one
ordinary comparison directory per seed (`seed<k>/<net>/`, paired: seed k gives every net the same data order),
and `study.json`, `study.md`, `study.png`. Every run in it is a normal run for resume, `--report` and
TensorBoard (`tensorboard --logdir STUDY` names each run `seed<k>/<net>`).
"""
from __future__ import annotations

import dataclasses
import os

import ignite.distributed as idist

from core.directory_record import STUDY, DirectoryRecord, read_record
from core.errors import UserError
from core.history_file import (BEST_TEST_ACCURACY, GAP_ACCURACY, HISTORY_FILE, TEST_ACCURACY, TRAIN_LOSS, best_epoch,
                               gap_accuracy, has_train_eval, is_result, read_history, write_json)
from core.numbers import loss, percent, points
from core.recipe import Recipe, Setup
from engine.compare.ablation import ablation, ablation_summary
from engine.compare.comparison import comparison_nets, comparison_recipe, net_dir, run_comparison, train_member
from engine.compare.report import Retester, where_the_gain_comes_from
from engine.compare.render import plot_study, render_study
from engine.compare.verdict import interval, judge, verdict_lines
from engine.console import say
from engine.run_lock import hold, write_on_rank_0
from engine.rundir import continue_or_claim, continuing_command, default_study_dir
from engine.session import continuing_with, load_data

# What a study directory holds beside its seeds, written by write_study.
STUDY_JSON, STUDY_MARKDOWN, STUDY_FIGURE = "study.json", "study.md", "study.png"


SEED_PREFIX = "seed"


def seed_dir(study_dir: str, seed: int) -> str:
    """Where a study keeps the run (or comparison) of `seed`: `seed<k>/`."""
    return os.path.join(study_dir, f"{SEED_PREFIX}{seed}")


def run_study(recipe: Recipe, setup: Setup, seeds: list[int], nets: tuple[str, ...] | None = None,
              resume_dir: str | None = None) -> str:
    """Train the recipe (or, with `nets`, the comparison of those nets) once per seed under one study directory,
    then summarise; with `resume_dir`, finished runs are kept and unfinished ones continue. Returns the directory."""
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct, got {seeds}")
    study_dir = continue_or_claim(resume_dir, setup.output_dir, default_study_dir(setup.runs_root, recipe, seeds, nets))
    # One process per study; its runs (and comparisons) hold their own locks while they train.
    with hold(study_dir, members=member_runs(study_dir)):
        if read_record(study_dir) is None and idist.get_rank() == 0:  # the record first; rank 0 alone writes files
            trained = comparison_recipe(recipe) if nets else recipe  # the recipe its runs train with
            DirectoryRecord(STUDY, tuple(nets) if nets else None, tuple(seeds), recipe=dataclasses.asdict(trained),
                            data_dir=setup.data_dir, amp=setup.amp).write(study_dir)
        say(f"Study directory: {study_dir} (seeds {', '.join(map(str, seeds))})")
        # One dataset for every seed; the seeds' reports re-test each final model per class, the summary reuses that.
        retester = Retester(setup, load_data(recipe, setup))
        with continuing_with(continuing_command(study_dir, nets, seeds), study_dir):
            train_seeds(recipe, setup, seeds, nets, study_dir, resuming=resume_dir is not None, retester=retester)
            # Rank 0 writes the summary; under torchrun the other processes wait (two writers would race on one file).
            write_on_rank_0(lambda: write_study(study_dir, retester))
    return study_dir


def member_runs(study_dir: str) -> list[str]:
    """The seed folders of a study and the runs of their comparisons, as far as they exist."""
    seeds = [seed_dir(study_dir, seed) for seed in study_seeds(study_dir)] if is_study(study_dir) else []
    return [run for folder in seeds
            for run in (folder, *(net_dir(folder, arch) for arch in comparison_nets(folder) or ()))
            if os.path.isdir(run)]


def train_seeds(recipe: Recipe, setup: Setup, seeds: list[int], nets: tuple[str, ...] | None, study_dir: str,
                resuming: bool, retester: Retester) -> None:
    """Train each seed's run (or comparison) in its folder of the study, on `retester`'s dataset; when `resuming`,
    finished runs are kept. Each comparison's report keeps its per-class re-tests in `retester`."""
    for seed in seeds:
        seed_recipe = dataclasses.replace(recipe, seed=seed)
        directory = seed_dir(study_dir, seed)
        say(f"=== seed {seed} ===")
        if nets:
            exists = resuming and os.path.isdir(directory)
            run_comparison(seed_recipe, setup, nets, resume_dir=directory if exists else None, retester=retester,
                           into=directory)
            continue
        train_member(seed_recipe, setup, retester.data, directory, resuming, name=f"seed {seed}")


def seed_of(folder_name: str) -> int | None:
    """k for a study's `seed<k>` folder name (`seed_dir`), else None."""
    number = folder_name.removeprefix(SEED_PREFIX)
    return int(number) if number != folder_name and number.isdigit() else None


def study_seeds(study_dir: str) -> list[int]:
    """The seeds whose folders a study directory holds, in order."""
    seeds = sorted(seed for seed in map(seed_of, os.listdir(study_dir)) if seed is not None)
    if not seeds:
        raise UserError(f"{study_dir} is not a study directory: it has no {SEED_PREFIX}<k>/ folders")
    return seeds


def is_study(directory: str) -> bool:
    return os.path.isdir(directory) and any(seed_of(name) is not None for name in os.listdir(directory))


def recorded_run(directory: str) -> str | None:
    """The run whose record a resume of `directory` takes its flags from: the run itself, or the first run a
    comparison or study directory holds (their runs share one recipe but for the architecture and the seed, which
    the comparison and the study set themselves). None where there is none."""
    folders = [seed_dir(directory, seed) for seed in study_seeds(directory)] if is_study(directory) else [directory]
    candidates = [run for folder in folders
                  for run in (folder, *(net_dir(folder, arch) for arch in comparison_nets(folder) or ()))]
    return next((run for run in candidates if os.path.isfile(os.path.join(run, HISTORY_FILE))), None)


def across_seeds(histories: list) -> dict:
    """Per epoch and for the final epoch: mean, sd and 95 % t-interval across seeds of every recorded number."""
    epochs = min(len(h.epochs) for h in histories)
    keys = [key for key in histories[0].epochs[-1] if is_result(key) and all(key in h.epochs[-1] for h in histories)]
    if has_train_eval(histories[0].epochs[-1]):
        keys.append(GAP_ACCURACY)

    def value(record: dict, key: str) -> float:
        return gap_accuracy(record) if key == GAP_ACCURACY else record[key]

    per_epoch = [{key: interval([value(h.epochs[i], key) for h in histories]) for key in keys} for i in range(epochs)]
    final = {**per_epoch[-1],
             BEST_TEST_ACCURACY: interval([best_epoch(h.epochs[:epochs])[TEST_ACCURACY] for h in histories])}
    return {"epochs": epochs, "per_epoch": per_epoch, "final": final}


def report_study(study_dir: str, setup: Setup) -> str:
    """`--report STUDY`: rebuild the summary, refused while the study or one of its runs is in use."""
    with hold(study_dir, members=member_runs(study_dir)):
        return write_study(study_dir, Retester(setup))


def write_study(study_dir: str, retester: Retester | None = None) -> str:
    """study.json, study.md and study.png from the seeds' history files (so `--report STUDY` rebuilds them); for a
    study of comparisons with a `retester`, also where the gain comes from, by re-testing the final checkpoints per
    class (those it has not re-tested already)."""
    seeds = study_seeds(study_dir)
    nets = [comparison_nets(seed_dir(study_dir, s)) for s in seeds]
    compared = nets[0] if nets[0] and all(n == nets[0] for n in nets) else None
    if compared:
        histories = {arch: [read_history(net_dir(seed_dir(study_dir, s), arch)) for s in seeds] for arch in compared}
    else:
        runs = [read_history(seed_dir(study_dir, s)) for s in seeds]
        histories = {runs[0].recipe.arch: runs}
    for arch, runs in histories.items():
        unfinished = [s for s, h in zip(seeds, runs) if not h.completed]
        if unfinished:
            raise UserError(f"the study is not finished: {arch} of seed(s) {unfinished} has not completed")
        recipes = {dataclasses.replace(h.recipe, seed=0) for h in runs}
        if len(recipes) != 1:
            raise UserError(f"the seeds of {study_dir} were trained with different recipes")
    recipe = dataclasses.asdict(next(iter(histories.values()))[0].recipe)
    study = {"seeds": seeds, "recipe": {k: v for k, v in recipe.items() if k not in ("seed", "arch")},
             "nets": {arch: across_seeds(runs) for arch, runs in histories.items()}}
    precisions = sorted({h.precision for runs in histories.values() for h in runs} - {None})
    if precisions:  # what the runs computed in, as far as they recorded it
        study["precision"] = " and ".join(precisions)
    if compared:
        contrasts = {}
        for name in compared[1:]:
            pair = (compared[0], name)
            contrast = judge(*([h.epochs for h in histories[arch]] for arch in pair), names=pair)
            contrast["where_the_gain_comes_from"] = where_the_gain_comes_from(
                {arch: histories[arch] for arch in pair}, retester)
            contrasts[name] = contrast
        study.update(baseline=compared[0], contrasts=contrasts)
        if len(compared) > 2 and len(seeds) >= 2:
            # What explains the second net's gain: its contrasts need an interval across seeds.
            study["ablation"] = ablation(histories)
    write_json(os.path.join(study_dir, STUDY_JSON), study)
    with open(os.path.join(study_dir, STUDY_MARKDOWN), "w") as f:
        f.write(render_study(study))
    plot_study(study, os.path.join(study_dir, STUDY_FIGURE))
    final = ", ".join(f"{arch} test accuracy {percent(s['final'][TEST_ACCURACY]['mean'])}"
                      + (f" ± {points(s['final'][TEST_ACCURACY]['sd'])}" if s["final"][TEST_ACCURACY]["sd"] is not None else "")
                      for arch, s in study["nets"].items())
    say(f"Across {len(seeds)} seed(s): {final}; mean train loss of the last epoch "
        + ", ".join(loss(s['final'][TRAIN_LOSS]['mean']) for s in study["nets"].values()))
    for line in verdict_lines(study, "Verdict across seeds"):
        say(line)
    for row in study.get("ablation", {}).get("contrasts", []):
        say(f"Ablation: {ablation_summary(row)}")
    say(f"Study report: {os.path.join(study_dir, STUDY_MARKDOWN)}")
    return study_dir

