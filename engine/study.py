"""`--seeds K1 K2 ...`: one recipe trained once per seed, and a summary across seeds that says how sure it is.

A study directory holds one ordinary run directory per seed (`seed<k>/`), or with `--bonus` one ordinary bonus
directory per seed (`seed<k>/{singlestage,multistage}`, paired: seed k gives both nets the same data order),
and `study.json`, `study.md`, `study.png`. Every run in it is a normal run for resume, `--report` and
TensorBoard (`tensorboard --logdir STUDY` names each run `seed<k>/<net>`).
"""
from __future__ import annotations

import dataclasses
import os

import handlers.comparison_report
from core.errors import UserError
from core.history_file import (EPOCH, GAP_ACCURACY, HISTORY_FILE, TEST_ACCURACY, TRAIN_LOSS, gap_accuracy,
                               has_train_eval, read_history, write_json)
from core.recipe import Recipe, Setup
from core.stats import interval
from core.verdict import RULE, RULE_PAIRED, decide, decide_paired
from engine.bonus import run_bonus
from engine.console import say
from engine.datasets import CifarData
from engine.report import where_the_gain_comes_from
from engine.report_views import ARCH_ORDER
from engine.resume import has_checkpoint
from engine.rundir import claim_run_dir, hold, timestamp
from engine.session import Interrupted, load_data, train
from engine.study_views import plot_study, render_markdown

STUDY_FILE = "study.json"


def seed_dir(study_dir: str, seed: int) -> str:
    return os.path.join(study_dir, f"seed{seed}")


def default_study_dir(recipe: Recipe, setup: Setup, seeds: list[int], bonus: bool) -> str:
    what = "bonus" if bonus else recipe.arch + (f"-{recipe.blocks_per_stage}bps" if recipe.arch == "multistage" else "")
    return os.path.join(setup.runs_root, f"{recipe.dataset}-{what}-seeds{'-'.join(map(str, seeds))}-{timestamp()}")


def run_study(recipe: Recipe, setup: Setup, seeds: list[int], bonus: bool, resume_dir: str | None = None) -> str:
    """Train the recipe (or the bonus pair) once per seed under one study directory, then summarise; with
    `resume_dir`, finished runs are kept and unfinished ones continue. Returns the study directory."""
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct, got {seeds}")
    if resume_dir is None:
        study_dir = claim_run_dir(setup.output_dir or default_study_dir(recipe, setup, seeds, bonus),
                                  numbered=setup.output_dir is None)
    elif os.path.isdir(resume_dir):
        study_dir = resume_dir
    else:
        raise UserError(f"cannot resume: {resume_dir} is not a directory")
    # One process per study; its runs (and bonuses) hold their own locks while they train.
    with hold(study_dir, members=member_runs(study_dir)):
        say(f"Study directory: {study_dir} (seeds {', '.join(map(str, seeds))})")
        data = load_data(recipe, setup)
        retested = {}  # the seeds' reports re-test each final checkpoint per class; the summary reuses those
        try:
            train_seeds(recipe, setup, seeds, bonus, study_dir, resuming=resume_dir is not None, data=data,
                        retested=retested)
        except Interrupted as exc:  # the printed command continues the whole study
            seed_list = " ".join(map(str, seeds))
            raise exc.continued_by(f"python run.py --seeds {seed_list}{' --bonus' if bonus else ''} "
                                   f"--resume {study_dir}") from None
        # Rank 0 writes the summary; under torchrun the other processes wait (two writers would race on one file).
        handlers.comparison_report.write_on_rank_0(lambda: write_study(study_dir, setup, data, retested))
    return study_dir


def member_runs(study_dir: str) -> list[str]:
    """The seed folders of a study and the runs of their bonuses, as far as they exist."""
    seeds = [seed_dir(study_dir, seed) for seed in study_seeds(study_dir)] if is_study(study_dir) else []
    return [run for folder in seeds for run in (folder, *(os.path.join(folder, arch) for arch in ARCH_ORDER))
            if os.path.isdir(run)]


def train_seeds(recipe: Recipe, setup: Setup, seeds: list[int], bonus: bool, study_dir: str, resuming: bool,
                data: CifarData, retested: dict) -> None:
    """Train each seed's run (or bonus pair) in its folder of the study; when `resuming`, finished runs are kept.
    Each bonus's report puts its per-class re-tests into `retested`."""
    for seed in seeds:
        seed_recipe = dataclasses.replace(recipe, seed=seed)
        directory = seed_dir(study_dir, seed)
        say(f"=== seed {seed} ===")
        if bonus:
            exists = resuming and os.path.isdir(directory)
            run_bonus(seed_recipe, dataclasses.replace(setup, output_dir=directory), resume_dir=directory if exists else None,
                      data=data, retested=retested)
        elif resuming and has_checkpoint(directory) and read_history(directory).completed:
            say(f"seed {seed}: already trained in {directory}, not training again")
        else:
            resume = directory if resuming and has_checkpoint(directory) else None
            train(seed_recipe, dataclasses.replace(setup, output_dir=directory), data=data, resume=resume)


def study_seeds(study_dir: str) -> list[int]:
    """The seeds whose folders a study directory holds, in order."""
    names = [name for name in os.listdir(study_dir) if name.startswith("seed") and name[4:].isdigit()]
    if not names:
        raise UserError(f"{study_dir} is not a study directory: it has no seed<k>/ folders")
    return sorted(int(name[4:]) for name in names)


def is_study(directory: str) -> bool:
    return os.path.isdir(directory) and any(name.startswith("seed") and name[4:].isdigit() for name in os.listdir(directory))


def recorded_run(directory: str) -> str | None:
    """The run whose record a resume of `directory` takes its flags from: the run itself, or the first run a bonus
    or study directory holds (their runs share one recipe but for the architecture and the seed, which the bonus
    and the study set themselves). None where there is none."""
    folders = [seed_dir(directory, seed) for seed in study_seeds(directory)] if is_study(directory) else [directory]
    candidates = [run for folder in folders for run in (folder, *(os.path.join(folder, arch) for arch in ARCH_ORDER))]
    return next((run for run in candidates if os.path.isfile(os.path.join(run, HISTORY_FILE))), None)


def across_seeds(histories: list) -> dict:
    """Per epoch and for the final epoch: mean, sd and 95 % t-interval across seeds of every recorded number."""
    epochs = min(len(h.epochs) for h in histories)
    keys = [key for key in histories[0].epochs[-1] if key != EPOCH and not key.endswith("seconds")
            and key != "images_per_s" and all(key in h.epochs[-1] for h in histories)]
    if has_train_eval(histories[0].epochs[-1]):
        keys.append(GAP_ACCURACY)

    def value(record: dict, key: str) -> float:
        return gap_accuracy(record) if key == GAP_ACCURACY else record[key]

    per_epoch = [{key: interval([value(h.epochs[i], key) for h in histories]) for key in keys} for i in range(epochs)]
    return {"epochs": epochs, "per_epoch": per_epoch, "final": per_epoch[-1]}


def report_study(study_dir: str, setup: Setup) -> str:
    """`--report STUDY`: rebuild the summary, refused while the study or one of its runs is in use."""
    with hold(study_dir, members=member_runs(study_dir)):
        return write_study(study_dir, setup)


def write_study(study_dir: str, setup: Setup | None = None, data: CifarData | None = None,
                retested: dict | None = None) -> str:
    """study.json, study.md and study.png from the seeds' history files (so `--report STUDY` rebuilds them); for a
    bonus study with `setup`, also where the gain comes from, by re-testing the final checkpoints per class (those
    not in `retested` already)."""
    seeds = study_seeds(study_dir)
    bonus = all(os.path.isdir(os.path.join(seed_dir(study_dir, s), arch)) for s in seeds for arch in ARCH_ORDER)
    if bonus:
        histories = {arch: [read_history(os.path.join(seed_dir(study_dir, s), arch)) for s in seeds] for arch in ARCH_ORDER}
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
    if bonus and len(seeds) >= 2:
        study["verdict"] = decide_paired([h.epochs for h in histories["singlestage"]],
                                         [h.epochs for h in histories["multistage"]])
        study["rule"] = RULE_PAIRED
    elif bonus:  # one seed: the window rule of a single bonus
        study["verdict"] = decide(histories["singlestage"][0].epochs, histories["multistage"][0].epochs)
        study["rule"] = RULE
    if bonus:
        study["where_the_gain_comes_from"] = where_the_gain_comes_from(histories, setup, data, retested)
    write_json(os.path.join(study_dir, STUDY_FILE), study)
    with open(os.path.join(study_dir, "study.md"), "w") as f:
        f.write(render_markdown(study))
    plot_study(study, os.path.join(study_dir, "study.png"))
    final = ", ".join(f"{arch} test accuracy {100 * s['final'][TEST_ACCURACY]['mean']:.2f}%"
                      + (f" ± {100 * s['final'][TEST_ACCURACY]['sd']:.2f}" if s["final"][TEST_ACCURACY]["sd"] is not None else "")
                      for arch, s in study["nets"].items())
    say(f"Across {len(seeds)} seed(s): {final}; mean train loss of the last epoch "
        + ", ".join(f"{s['final'][TRAIN_LOSS]['mean']:.4f}" for s in study["nets"].values()))
    if "verdict" in study:
        say(f"Verdict across seeds: {study['verdict']['verdict']} (confidence: {study['verdict']['confidence']})")
    if "classes" in study.get("where_the_gain_comes_from", {}):
        say(f"Where the gain comes from: {study['where_the_gain_comes_from']['classes']['summary']}")
    say(f"Study report: {os.path.join(study_dir, 'study.md')}")
    return study_dir

