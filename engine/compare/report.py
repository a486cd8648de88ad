"""The comparison report: report.json, report.md and curves.png for runs of several architectures with one recipe,
each judged against the first-named one (the baseline) by engine/compare/verdict.py; for a pair (the bonus: single-
vs multi-stage) one verdict. Built from the runs' history.json files, so `--report` can rebuild it; only
"where the gain comes from" re-tests the final checkpoints class by class (and says why when it cannot)."""
from __future__ import annotations

import dataclasses
import os

from core.errors import UserError
from core.history_file import (BEST_BY_VAL_TEST_ACCURACY, BEST_TEST_ACCURACY, VAL_ACCURACY, chosen_by, DEVICE, EPOCH, GAP_ACCURACY, GAP_LOSS, IMAGES_PER_S, TEST_ACCURACY,
                               TRAIN_LOSS, TRAIN_SECONDS, RunHistory, best_epoch, gap_accuracy, gap_loss,
                               has_train_eval, HISTORY_FILE, is_result, read_history, write_json)
from core.numbers import counted, loss, millions, percent, points
from core.recipe import COMPARED, Recipe
from core.stats import interval
from engine.compare.ablation import ablation, ablation_summary, run_facts
from engine.compare.plan import COMPARISON, STUDY, net_dir, read_plan, seed_dir
from engine.compare.render import (REPORT_FIGURE, STUDY_FIGURE, console_table, missing_words, plot_curves, plot_study,
                                   render_report, render_study, verdict_lines)
from engine.compare.verdict import compare_classes, judge
from engine.console import say
from engine.devices import machine_in_words
from engine.evaluate import Retester
from engine.rundir import continuing_command
from handlers.tensorboard_logging import replace_text
from models import BONUS_PAIR, build_model, field_phrase, noun
from models.stats import IMAGE_SIZE, feature_maps

# What a comparison directory holds beside its runs, written by write_report; and a study beside its seeds, by
# write_study.
REPORT_JSON, REPORT_MARKDOWN, STUDY_JSON, STUDY_MARKDOWN = "report.json", "report.md", "study.json", "study.md"
VERDICT_TAG = "bonus/verdict"  # TensorBoard's TEXT tab, in each judged net's folder


def check_comparable(histories: dict[str, RunHistory]) -> None:
    """Refuse, naming the field, runs whose recipes differ in more than the architecture, or that did not finish (with
    the command that finishes it: its comparison's, where it is a comparison's run)."""
    (base_name, base), *others = ((arch, history.config) for arch, history in histories.items())
    for name, config in others:
        field = Recipe.from_dict(config).differing_field(base, ignore=COMPARED)
        if field:
            raise UserError(f"the runs are not comparable: '{field}' differs "
                            f"({base_name}: {base.get(field)!r}, {name}: {config.get(field)!r})")
    for arch, history in histories.items():
        if not history.completed:
            holder = os.path.dirname(history.run_dir)
            plan = read_plan(holder)
            command = (plan.command(holder) if plan is not None and plan.kind == COMPARISON
                       else continuing_command(history.run_dir))
            raise UserError(f"the {arch} run has not completed (status: {history.status}); finish it with: {command}")


def where_the_gain_comes_from(histories: dict[str, list[RunHistory]], retester: Retester | None) -> dict:
    """Per-class (and per-superclass) test accuracy of the final checkpoints of a baseline and a candidate (the two
    keys of `histories`, in order), compared by engine/compare/verdict.compare_classes; `histories[arch][k]` is seed k's run.
    Without a `retester`, or when a checkpoint or the dataset is missing, {"unavailable": why}."""
    if retester is None:
        return {"unavailable": "no dataset was given to re-test the final checkpoints"}
    try:
        accuracy = {arch: [retester.class_accuracy(h.run_dir) for h in runs] for arch, runs in histories.items()}
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
        "seconds_per_epoch": sum(e[TRAIN_SECONDS] for e in epochs) / len(epochs),
        "images_per_s": sum(e[IMAGES_PER_S] for e in epochs) / len(epochs),
        "device": history.data[DEVICE],
        "machine": machine_in_words(history.machine) if history.machine else None,
        "precision": history.precision,
        "train_eval_images": history.train_eval_images,
    }


def build_report(histories: dict[str, RunHistory]) -> dict:
    """Everything the report shows from the histories (baseline first), as one JSON-able dict: one contrast (verdict,
    rule and explanation) per network against the baseline, under "contrasts", for a pair as for more networks."""
    check_comparable(histories)
    names = list(histories)
    runs = {arch: run_summary(history) for arch, history in histories.items()}
    recipe = {k: v for k, v in histories[names[-1]].config.items() if k in Recipe.__dataclass_fields__ and k not in COMPARED}
    contrasts = {}
    for name in names[1:]:
        pair = (names[0], name)
        contrasts[name] = judge([histories[pair[0]].epochs], [histories[name].epochs], names=pair)
        contrasts[name]["explanation"] = explanation(contrasts[name]["verdict"], runs, pair)
    return {"config": recipe, "runs": runs, "baseline": names[0], "contrasts": contrasts}


def explanation(verdict: dict, runs: dict, names: tuple[str, str] = BONUS_PAIR) -> str:
    """The plain-words paragraph under the verdict."""
    base, cand = (runs[name]["model"] for name in names)
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
    """Each verdict paragraph in TensorBoard's TEXT tab, in the folder of the network it judges: one per net, the
    current one (a report written again replaces it)."""
    for name, contrast in report["contrasts"].items():
        run_dir = report["runs"][name]["run_dir"]
        if run_dir and os.path.isdir(run_dir):
            replace_text(run_dir, VERDICT_TAG, contrast["explanation"], report["config"]["epochs"])


def write_report(directory: str, histories: dict[str, RunHistory], retester: Retester | None = None) -> dict:
    """Write report.json, report.md and curves.png (REPORT_JSON, REPORT_MARKDOWN, REPORT_FIGURE) into `directory` (which exists), print the table, return the
    report. With a `retester`, the final checkpoints are re-tested class by class."""
    report = build_report(histories)  # checks first that the runs are comparable, before any re-test
    base = list(histories)[0]
    for name, contrast in report["contrasts"].items():
        contrast["where_the_gain_comes_from"] = where_the_gain_comes_from(
            {base: [histories[base]], name: [histories[name]]}, retester)
    write_json(os.path.join(directory, REPORT_JSON), report)
    with open(os.path.join(directory, REPORT_MARKDOWN), "w") as f:
        f.write(render_report(report))
    plot_curves(report, os.path.join(directory, REPORT_FIGURE))
    write_verdict_text(report)
    print(console_table(report))
    print(f"Report: {os.path.join(directory, REPORT_MARKDOWN)}", flush=True)
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


def write_study(study_dir: str, retester: Retester | None = None) -> str:
    """study.json, study.md and study.png from the seeds' history files (so `--report STUDY` rebuilds them); for a
    study of comparisons with a `retester`, also where the gain comes from, by re-testing the final checkpoints per
    class (those it has not re-tested already)."""
    plan = read_plan(study_dir)
    compared = plan.nets if plan is not None and plan.kind == STUDY else None
    # A seed whose runs are not all there (a folder deleted, a copy cut short) is left out and named, never dropped
    # silently: a paired comparison needs every net of a seed.
    planned = sorted(plan.seeds) if plan is not None and plan.kind == STUDY else []
    runs_of = {seed: [net_dir(folder, arch) for arch in compared] if compared else [folder]
               for seed, folder in plan.folders(study_dir) if seed is not None} if planned else {}
    seeds = [s for s in planned if all(os.path.isfile(os.path.join(run, HISTORY_FILE)) for run in runs_of[s])]
    missing = {s: [os.path.relpath(seed_dir(study_dir, s), study_dir) + "/"] if not os.path.isdir(seed_dir(study_dir, s))
               else [os.path.relpath(run, study_dir) for run in runs_of[s]
                     if not os.path.isfile(os.path.join(run, HISTORY_FILE))] for s in planned if s not in seeds}
    if not seeds:
        raise UserError(f"{study_dir} holds no finished seed of its plan{' (seeds ' + ' '.join(map(str, planned)) + ')' if planned else ''}; "
                        f"{'train them with: ' + plan.command(study_dir) if planned else 'it is no study directory'}")
    if compared:
        histories = {arch: [read_history(net_dir(seed_dir(study_dir, s), arch)) for s in seeds] for arch in compared}
    else:
        runs = [read_history(seed_dir(study_dir, s)) for s in seeds]
        histories = {runs[0].recipe.arch: runs}
    for arch, runs in histories.items():
        unfinished = [s for s, h in zip(seeds, runs) if not h.completed]
        if unfinished:
            raise UserError(f"the study is not finished: {arch} of seed{'s' if len(unfinished) > 1 else ''} "
                            f"{' '.join(map(str, unfinished))} has not completed; finish it with: "
                            f"{plan.command(study_dir)}")
        recipes = {dataclasses.replace(h.recipe, seed=0) for h in runs}
        if len(recipes) != 1:
            raise UserError(f"the seeds of {study_dir} were trained with different recipes")
    recipe = dataclasses.asdict(next(iter(histories.values()))[0].recipe)
    study = {"seeds": seeds, "recipe": {k: v for k, v in recipe.items() if k not in ("seed", "arch")},
             "train_eval_images": min(h.train_eval_images for runs in histories.values() for h in runs),
             "nets": {arch: across_seeds(runs) for arch, runs in histories.items()}}
    if missing:  # planned seeds without their runs: named in study.json, study.md and the console
        study["missing"] = {str(seed): runs for seed, runs in missing.items()}
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
    if missing:
        say(f"{missing_words(study)}; train {'it' if len(missing) == 1 else 'them'} again with: {plan.command(study_dir)}")
    say(f"Across {counted(len(seeds), 'seed')}: {final}; mean train loss of the last epoch "
        + ", ".join(loss(s['final'][TRAIN_LOSS]['mean']) for s in study["nets"].values()))
    for line in verdict_lines(study, "Verdict across seeds"):
        say(line)
    for row in study.get("ablation", {}).get("contrasts", []):
        say(f"Ablation: {ablation_summary(row)}")
    say(f"Study report: {os.path.join(study_dir, STUDY_MARKDOWN)}")
    return study_dir

