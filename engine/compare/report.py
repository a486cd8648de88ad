"""The comparison report: report.json, report.md and curves.png for runs of several architectures with one recipe,
each judged against the first-named one (the baseline) by engine/compare/verdict.py; for a pair (the bonus: single-
vs multi-stage) one verdict. Built from the runs' history.json files, so `--report` can rebuild it; only
"where the gain comes from" re-tests the final checkpoints class by class (and says why when it cannot)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch

from core.errors import UserError
from core.history_file import (DEVICE, EPOCH, GAP_ACCURACY, GAP_LOSS, IMAGES_PER_S, TEST_ACCURACY, TEST_LOSS,
                               TRAIN_EVAL_ACCURACY, TRAIN_LOSS, TRAIN_SECONDS, RunHistory, best_epoch, gap_accuracy,
                               gap_loss, has_train_eval, write_json)
from core.numbers import loss, millions, points
from core.recipe import COMPARED, Recipe, Setup
from engine.compare.ablation import field_phrase, run_facts
from engine.compare.class_gain import compare_classes
from engine.compare.render import plot_curves, render_report
from engine.compare.verdict import judge, verdict_lines
from engine.data.datasets import CifarData
from engine.devices import machine_in_words
from engine.evaluate import confusion, per_class_accuracy, retest
from handlers.tensorboard_logging import replace_text
from models import BONUS_PAIR, build_model, dir_name, noun
from models.stats import IMAGE_SIZE, feature_maps

# What a comparison directory holds beside its runs, written by write_report.
REPORT_JSON, REPORT_MARKDOWN, REPORT_FIGURE = "report.json", "report.md", "curves.png"
VERDICT_TAG = "bonus/verdict"  # TensorBoard's TEXT tab, in each judged net's folder


def check_comparable(histories: dict[str, RunHistory]) -> None:
    """Refuse, naming the field, runs whose recipes differ in more than the architecture, or that did not finish."""
    (base_name, base), *others = ((arch, history.config) for arch, history in histories.items())
    for name, config in others:
        field = Recipe.from_dict(config).differing_field(base, ignore=COMPARED)
        if field:
            raise UserError(f"the runs are not comparable: '{field}' differs "
                            f"({base_name}: {base.get(field)!r}, {name}: {config.get(field)!r})")
    for arch, history in histories.items():
        if not history.completed:
            raise UserError(f"the {arch} run has not completed (status: {history.status})")


@dataclass
class Retester:
    """Re-tests final models class by class for the reports: on `setup`'s device, on `data` when loaded (else the
    dataset each run names), each run directory once per process, so that a study reuses what its comparisons'
    reports re-tested."""

    setup: Setup
    data: CifarData | None = None
    done: dict = field(default_factory=dict)  # real path of a run directory -> its class accuracies

    def __post_init__(self):
        self.setup = dataclasses.replace(self.setup, download=False)  # a report re-tests on data there is

    def class_accuracy(self, run_dir: str) -> dict:
        key = os.path.realpath(run_dir)
        if key not in self.done:
            self.done[key] = class_accuracy(run_dir, self.setup, self.data)
        return self.done[key]


def class_accuracy(run_dir: str, setup: Setup, data: CifarData | None = None) -> dict:
    """Test accuracy per class name (and per superclass name on CIFAR-100) of the run's newest checkpoint, which
    must be its last epoch's: what the reports' "where the gain comes from" compares."""
    tested = retest(run_dir, setup, data, with_metrics=False)
    last_epoch = tested.history.epochs[-1][EPOCH] if tested.history.epochs else None
    if tested.epoch != last_epoch:
        raise UserError(f"{run_dir}: its newest checkpoint is of epoch {tested.epoch}, not of its last epoch {last_epoch}")

    def by_name(matrix: torch.Tensor, names: list[str]) -> dict[str, float]:
        return {row["class"]: row["accuracy"] for row in per_class_accuracy(matrix, names) if row["accuracy"] is not None}

    result = {"epoch": tested.epoch,
              "classes": by_name(confusion(tested.true, tested.predicted, tested.data.num_classes), tested.data.class_names)}
    lookup = tested.fine_to_coarse
    if lookup is not None:
        coarse = confusion(lookup[tested.true], lookup[tested.predicted], tested.data.num_coarse)
        result["superclasses"] = by_name(coarse, tested.data.coarse_class_names)
    return result


def where_the_gain_comes_from(histories: dict[str, list[RunHistory]], retester: Retester | None) -> dict:
    """Per-class (and per-superclass) test accuracy of the final checkpoints of a baseline and a candidate (the two
    keys of `histories`, in order), compared by engine/compare/class_gain.py; `histories[arch][k]` is seed k's run.
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
        "best_epoch": {key: best_epoch(epochs)[key] for key in (EPOCH, TEST_ACCURACY)},
        "model": run_facts(history),
        "seconds_per_epoch": sum(e[TRAIN_SECONDS] for e in epochs) / len(epochs),
        "images_per_s": sum(e[IMAGES_PER_S] for e in epochs) / len(epochs),
        "device": history.data[DEVICE],
        "machine": machine_in_words(history.machine) if history.machine else None,
        "precision": history.precision,
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


def console_table(report: dict) -> str:
    """A compact table for the terminal: final numbers and the verdict(s)."""
    names = list(report["runs"])
    lines = [f"{'':<22}" + "".join(f"{dir_name(name):>14}" for name in names)]
    keys = [("train loss", TRAIN_LOSS, loss), ("train-eval acc %", TRAIN_EVAL_ACCURACY, points),
            ("test acc %", TEST_ACCURACY, points), ("test loss", TEST_LOSS, loss), ("gap acc (pts)", GAP_ACCURACY, points)]
    for label, key, written in keys:
        if key in report["runs"][names[-1]]["final"]:
            lines.append(f"{label:<22}" + "".join(f"{written(report['runs'][arch]['final'][key]):>14}" for arch in names))
    return "\n".join(lines + verdict_lines(report))


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
