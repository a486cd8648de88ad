"""The report of any plan of nets × seeds with one recipe: one layout, one writer. A comparison (report.json, report.md,
curves.png) is its one-seed case, a study (study.json, study.md, study.png) has K seeds; each net is judged against
the first-named one (the baseline) by engine/compare/verdict.py, by the window rule for one seed and by paired
differences for more. Built from the runs' history.json files, so `--report` can rebuild it; only "where the gain
comes from" re-tests the final checkpoints class by class (and says why when it cannot)."""
from __future__ import annotations

import dataclasses
import os

from core.errors import UserError
from core.history_file import (BEST_BY_VAL_TEST_ACCURACY, BEST_TEST_ACCURACY, DEVICE, EPOCH, GAP_ACCURACY, GAP_LOSS,
                               HISTORY_FILE, IMAGES_PER_S, TEST_ACCURACY, TRAIN_SECONDS, VAL_ACCURACY, RunHistory,
                               best_epoch, chosen_by, gap_accuracy, gap_loss, has_train_eval, is_result, read_history,
                               write_json)
from core.numbers import millions
from core.recipe import COMPARED, Recipe
from core.stats import interval
from engine.compare.ablation import ablation, run_facts
from engine.compare.plan import COMPARISON, RECORD_FILES, STUDY, read_plan, seed_dir
from engine.compare.render import REPORT_FIGURE, STUDY_FIGURE, console_summary, missing_words, plot, render
from engine.compare.verdict import compare_classes, judge
from engine.console import say
from engine.devices import machine_in_words
from engine.evaluate import Retester
from engine.rundir import continuing_command
from handlers.tensorboard_logging import replace_text
from models import BONUS_PAIR, build_model, field_phrase, noun
from models.stats import IMAGE_SIZE, feature_maps

# What write_report writes beside a comparison's runs, and beside a study's seeds.
REPORT_JSON, REPORT_MARKDOWN, STUDY_JSON, STUDY_MARKDOWN = "report.json", "report.md", "study.json", "study.md"
VERDICT_TAG = "bonus/verdict"  # TensorBoard's TEXT tab, in each judged net's folder


def planned_histories(directory: str) -> tuple[dict[str, list[RunHistory]], dict[str, list[str]]]:
    """The runs a comparison or study directory's report is built from, as {net: [its run of each seed]} (baseline
    first, seeds in order), and the planned seeds left out because their runs are not all there ({seed: [what is
    gone]}: a paired comparison needs every net of a seed, and a seed is never dropped silently)."""
    plan = read_plan(directory)
    if plan is None or plan.kind not in (COMPARISON, STUDY):
        raise UserError(f"{directory} is not a comparison: it has no {RECORD_FILES[COMPARISON]} and no "
                        f"{'/, '.join(BONUS_PAIR)}/")
    if plan.kind == COMPARISON:
        return {member.arch: [read_history(member.run_dir)] for member in plan.members(directory)}, {}
    runs_of = {seed: [member.run_dir for member in plan.members(directory) if member.seed == seed] for seed in plan.seeds}
    recorded = lambda run: os.path.isfile(os.path.join(run, HISTORY_FILE))  # noqa: E731
    seeds = [s for s in sorted(plan.seeds) if all(map(recorded, runs_of[s]))]
    missing = {str(s): [os.path.relpath(seed_dir(directory, s), directory) + "/"] if not os.path.isdir(seed_dir(directory, s))
               else [os.path.relpath(run, directory) for run in runs_of[s] if not recorded(run)]
               for s in sorted(plan.seeds) if s not in seeds}
    if not seeds:
        raise UserError(f"{directory} holds no finished seed of its plan (seeds {' '.join(map(str, sorted(plan.seeds)))}); "
                        f"train them with: {plan.command(directory)}")
    runs = {seed: [read_history(run) for run in runs_of[seed]] for seed in seeds}
    names = plan.nets or (runs[seeds[0]][0].recipe.arch,)
    return {arch: [runs[seed][index] for seed in seeds] for index, arch in enumerate(names)}, missing


def check_comparable(histories: dict[str, list[RunHistory]], study: str | None = None) -> None:
    """Refuse, naming the field, runs whose recipes differ in more than the architecture (and the seed, between
    seeds), or that did not finish, with the command that finishes them: the study's (`study`, its directory), else
    their comparison's."""
    (base_name, (base, *_)), *others = histories.items()
    for name, (run, *_) in others:
        field = Recipe.from_dict(run.config).differing_field(base.config, ignore=COMPARED)
        if field:
            raise UserError(f"the runs are not comparable: '{field}' differs "
                            f"({base_name}: {base.config.get(field)!r}, {name}: {run.config.get(field)!r})")
    for arch, runs in histories.items():
        if len({dataclasses.replace(h.recipe, seed=0) for h in runs}) != 1:
            raise UserError(f"the seeds of {study} were trained with different recipes")
        unfinished = [h for h in runs if not h.completed]
        if unfinished and study is not None:
            seeds = [str(h.recipe.seed) for h in unfinished]
            raise UserError(f"the study is not finished: {arch} of seed{'s' if len(seeds) > 1 else ''} "
                            f"{' '.join(seeds)} has not completed; finish it with: {read_plan(study).command(study)}")
        if unfinished:
            holder = os.path.dirname(unfinished[0].run_dir)
            plan = read_plan(holder)
            command = (plan.command(holder) if plan is not None and plan.kind == COMPARISON
                       else continuing_command(unfinished[0].run_dir))
            raise UserError(f"the {arch} run has not completed (status: {unfinished[0].status}); finish it with: {command}")


def where_the_gain_comes_from(histories: dict[str, list[RunHistory]], retester: Retester | None) -> dict:
    """Per-class (and per-superclass) test accuracy of the final checkpoints of a baseline and a candidate (the two
    keys of `histories`, in order), compared by engine/compare/verdict.compare_classes; `histories[arch][k]` is seed k's run.
    Without a `retester`, or when a checkpoint or the dataset is missing, {"unavailable": why}."""
    if retester is None:
        return {"unavailable": "no dataset was given to re-test the final checkpoints"}
    try:
        accuracy = {arch: [retester.class_accuracy(h) for h in runs] for arch, runs in histories.items()}
    except UserError as exc:
        return {"unavailable": str(exc)}
    except OSError as exc:
        return {"unavailable": f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"}
    names = tuple(histories)
    gain = {"classes": compare_classes(*([a["classes"] for a in accuracy[arch]] for arch in names), nets=names)}
    if "superclasses" in accuracy[names[1]][0]:
        gain["superclasses"] = compare_classes(*([a["superclasses"] for a in accuracy[arch]] for arch in names),
                                               nets=names)
    return gain


def run_summary(history: RunHistory) -> dict:
    """One run as a report shows it: where it is, its epochs, the final numbers with the gap, its model's facts."""
    epochs = history.epochs
    last = epochs[-1]
    final = {key: last[key] for key in last if key != EPOCH}
    if has_train_eval(last):
        final[GAP_ACCURACY] = gap_accuracy(last)
        final[GAP_LOSS] = gap_loss(last)
    return {
        "run_dir": history.run_dir,  # where it is now (a copied or moved run's config names its old place)
        "epochs": epochs,
        "final": final,
        "best_epoch": {**{key: best_epoch(epochs)[key] for key in (EPOCH, TEST_ACCURACY)}, "chosen_by": chosen_by(epochs)},
        "model": run_facts(history),
        # as far as the history recorded them (a study's histories are summarised too, however old)
        **{name: sum(e[key] for e in epochs) / len(epochs) if all(key in e for e in epochs) else None
           for name, key in (("seconds_per_epoch", TRAIN_SECONDS), ("images_per_s", IMAGES_PER_S))},
        "device": history.data.get(DEVICE),
        "machine": machine_in_words(history.machine) if history.machine else None,
        "precision": history.precision,
        "train_eval_images": history.train_eval_images,
    }


def build_report(histories: dict[str, list[RunHistory]], retester: Retester | None = None) -> dict:
    """The one report of any plan, as a JSON-able dict, from {net: [its run of each seed]} (baseline first): the
    seeds, the shared recipe, per net each run as it ended and every number across seeds, and per net against the
    baseline one contrast (the rule that decided it, `decided_by`: the window rule for one seed, paired differences
    across seeds for more), with where the gain comes from when a `retester` can re-test the final checkpoints."""
    names, first = list(histories), next(iter(histories.values()))
    report = {"seeds": [h.recipe.seed for h in first],  # the recipe as far as the runs recorded it
              "recipe": {k: v for k, v in first[0].config.items()
                         if k in Recipe.__dataclass_fields__ and k not in COMPARED and k != "seed"},
              "train_eval_images": min(h.train_eval_images for runs in histories.values() for h in runs),
              "nets": {arch: {"runs": [run_summary(h) for h in runs], **across_seeds(runs)}
                       for arch, runs in histories.items()}}
    precisions = sorted({h.precision for runs in histories.values() for h in runs} - {None})
    if precisions:  # what the runs computed in, as far as they recorded it
        report["precision"] = " and ".join(precisions)
    if len(names) > 1:
        report["baseline"], report["contrasts"] = names[0], {}
    for name in names[1:]:
        pair = (names[0], name)
        contrast = judge(*([h.epochs for h in histories[arch]] for arch in pair), names=pair)
        contrast["explanation"] = explanation(contrast["verdict"], report["nets"], pair)
        contrast["where_the_gain_comes_from"] = where_the_gain_comes_from({arch: histories[arch] for arch in pair},
                                                                          retester)
        report["contrasts"][name] = contrast
    if len(names) > 2 and len(first) >= 2:  # what explains the second net's gain needs an interval across seeds
        report["ablation"] = ablation(histories)
    return report


def explanation(verdict: dict, nets: dict, names: tuple[str, str] = BONUS_PAIR) -> str:
    """The plain-words paragraph under the verdict: the verdict, its reason, and the two nets' facts."""
    base, cand = (nets[name]["runs"][0]["model"] for name in names)
    text = f"Verdict: {verdict['verdict']} (confidence: {verdict['confidence']}): {verdict['reason']}. "
    if tuple(names) != BONUS_PAIR:
        return text + "".join(
            f"{subject[0].upper() + subject[1:]} has {facts['parameters']:,} parameters, "
            f"{millions(facts['macs_per_image'], 0)} multiply-accumulates per image and {field_phrase(facts)}. "
            for subject, facts in ((noun(names[1]), cand), (noun(names[0]), base))).rstrip()
    single, multi = base, cand
    ((channels, size),) = feature_maps(build_model(names[0], num_classes=1))  # one stage; classes do not change it
    text += (f"Why this is plausible: the single-stage net keeps {channels} channels at full {size}x{size} resolution, "
             f"so each of its outputs sees only a {single['receptive_field']}-pixel window, smaller than the "
             f"{IMAGE_SIZE}-pixel image, and it "
             f"spends {millions(single['macs_per_image'], 0)} multiply-accumulates per image on that. The multi-stage net "
             f"halves the resolution twice while doubling the channels: its receptive field grows to "
             f"{multi['receptive_field']} pixels, covering the whole image, its deeper stages have more channels "
             f"({multi['parameters']:,} vs {single['parameters']:,} parameters) to combine what they see, and it needs "
             f"only {millions(multi['macs_per_image'], 0)} multiply-accumulates per image.")
    if verdict["verdict"] == "reducing underfitting":
        text += (" Its extra capacity and global view let it fit the training images better, and that better fit "
                 "carries over to the test images; the problem it solves is underfitting, not overfitting.")
    elif verdict["verdict"] == "reducing overfitting":
        text += (" It does not fit the training images better, but what it learns transfers better to the test "
                 "images: the problem it solves is overfitting.")
    return text


def write_verdict_text(report: dict) -> None:
    """Each verdict paragraph of a one-seed report in TensorBoard's TEXT tab, in the folder of the run it judges (a
    report written again replaces it); across seeds, each seed's own report has put its verdict there."""
    if len(report["seeds"]) > 1:
        return
    for name, contrast in report.get("contrasts", {}).items():
        run_dir = report["nets"][name]["runs"][0]["run_dir"]
        if run_dir and os.path.isdir(run_dir):
            replace_text(run_dir, VERDICT_TAG, contrast["explanation"], report["recipe"]["epochs"])


def write_report(directory: str, retester: Retester | None = None,
                 histories: dict[str, list[RunHistory]] | None = None, summary: bool = True) -> dict:
    """Write the report of `directory` (which exists) from `histories` ({net: [run of each seed]}, baseline first),
    by default its own runs (planned_histories): a study's study.json, study.md and study.png, any other directory's
    report.json, report.md and curves.png. Print its summary (unless `summary` is False) and where it is; return the
    report. With a `retester`, the final checkpoints are re-tested class by class."""
    plan = read_plan(directory)
    study = directory if plan is not None and plan.kind == STUDY else None
    missing = {}
    if histories is None:
        histories, missing = planned_histories(directory)
    check_comparable(histories, study)  # before any re-test
    report = build_report(histories, retester)
    if missing:  # planned seeds without their runs: named in the JSON, the Markdown and the console
        report["missing"] = missing
    json_name, markdown_name, figure_name = (STUDY_JSON, STUDY_MARKDOWN, STUDY_FIGURE) if study else (
        REPORT_JSON, REPORT_MARKDOWN, REPORT_FIGURE)
    write_json(os.path.join(directory, json_name), report)
    with open(os.path.join(directory, markdown_name), "w") as f:
        f.write(render(report, figure_name))
    plot(report, os.path.join(directory, figure_name))
    write_verdict_text(report)
    if missing:
        say(f"{missing_words(report)}; train {'it' if len(missing) == 1 else 'them'} again with: {plan.command(directory)}")
    if summary:
        say(console_summary(report))
    say(f"{'Study report' if study else 'Report'}: {os.path.join(directory, markdown_name)}")
    return report


def across_seeds(histories: list) -> dict:
    """Per epoch and for the final epoch: mean, sd and 95 % t-interval across seeds of every recorded number."""
    epochs = min(len(h.epochs) for h in histories)
    keys = [key for key in histories[0].epochs[-1] if is_result(key) and all(key in h.epochs[-1] for h in histories)]
    if has_train_eval(histories[0].epochs[-1]):
        keys.append(GAP_ACCURACY)

    def value(record: dict, key: str) -> float:
        return gap_accuracy(record) if key == GAP_ACCURACY else record[key]

    per_epoch = [{key: interval([value(h.epochs[i], key) for h in histories]) for key in keys} for i in range(epochs)]
    by_val = all(chosen_by(h.epochs) == VAL_ACCURACY for h in histories)
    best_key = BEST_BY_VAL_TEST_ACCURACY if by_val else BEST_TEST_ACCURACY
    final = {**per_epoch[-1],
             best_key: interval([best_epoch(h.epochs[:epochs])[TEST_ACCURACY] for h in histories])}
    return {"epochs": epochs, "per_epoch": per_epoch, "final": final}
