"""The bonus comparison: report.json, report.md and curves.png for a single-stage vs multi-stage pair of runs,
with the verdict of core/verdict.py. Built from the runs' history.json files, so `--report` can rebuild it; only
"where the gain comes from" re-tests the final checkpoints class by class (and says why when it cannot)."""
from __future__ import annotations

import dataclasses
import os

from core.class_gain import compare_classes
from core.errors import UserError
from core.history_file import (EPOCH, GAP_ACCURACY, GAP_LOSS, IMAGES_PER_S, TEST_ACCURACY, TEST_LOSS,
                               TRAIN_EVAL_ACCURACY, TRAIN_LOSS, TRAIN_SECONDS, RunHistory, gap_accuracy, gap_loss,
                               has_train_eval, read_history, write_json)
from core.recipe import COMPARED, Recipe, Setup
from core.verdict import RULE, decide
from engine.datasets import CifarData
from engine.evaluate import class_accuracy
from engine.report_views import ARCH_ORDER, plot_curves, render_markdown
from models import build_model, count_parameters
from models.stats import macs_per_image, receptive_field


def check_comparable(histories: dict[str, RunHistory]) -> None:
    """Refuse, naming the field, runs whose recipes differ in more than the architecture, or that did not finish."""
    single, multi = (histories[arch].config for arch in ARCH_ORDER)
    difference = Recipe.from_dict(multi).difference(single, ignore=COMPARED)
    if difference:
        field = difference.split("'")[1]
        raise UserError(f"the runs are not comparable: '{field}' differs "
                        f"(singlestage: {single.get(field)!r}, multistage: {multi.get(field)!r})")
    for arch, history in histories.items():
        if not history.completed:
            raise UserError(f"the {arch} run has not completed (status: {history.status})")


def model_facts(history: RunHistory) -> dict:
    """Parameters, MACs per image and receptive field of the run's architecture, measured on a fresh model."""
    recipe = history.recipe
    model = build_model(recipe.arch, history.num_classes, blocks_per_stage=recipe.blocks_per_stage)
    return {"parameters": count_parameters(model), "macs_per_image": macs_per_image(model),
            "receptive_field": receptive_field(model)}


def where_the_gain_comes_from(histories: dict[str, list[RunHistory]], setup: Setup | None,
                              data: CifarData | None = None, retested: dict | None = None) -> dict:
    """Per-class (and per-superclass) test accuracy of each net's final checkpoint, compared by core/class_gain.py;
    `histories[arch][k]` is seed k's run. Without `setup`, or when a checkpoint or the dataset is missing,
    {"unavailable": why}. `retested` (run directory -> its class accuracies) keeps the re-tests of one process,
    so that a study does not re-test the runs its seeds' reports already re-tested."""
    if setup is None:
        return {"unavailable": "no dataset was given to re-test the final checkpoints"}
    retested = {} if retested is None else retested

    def accuracy_of(history: RunHistory) -> dict:
        key = os.path.realpath(history.run_dir)
        if key not in retested:
            retested[key] = class_accuracy(history.run_dir, setup, data)
        return retested[key]

    try:
        accuracy = {arch: [accuracy_of(h) for h in runs] for arch, runs in histories.items()}
    except UserError as exc:
        return {"unavailable": str(exc)}
    except OSError as exc:
        return {"unavailable": f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"}
    gain = {"classes": compare_classes(*([a["classes"] for a in accuracy[arch]] for arch in ARCH_ORDER))}
    if "superclasses" in accuracy["multistage"][0]:
        gain["superclasses"] = compare_classes(*([a["superclasses"] for a in accuracy[arch]] for arch in ARCH_ORDER))
    return gain


def offline(setup: Setup) -> Setup:
    """A report re-tests models on data that is there; it never downloads a dataset."""
    return dataclasses.replace(setup, download=False)


def build_report(histories: dict[str, RunHistory], window: int = 3) -> dict:
    """Everything the report shows from the histories, as one JSON-able dict."""
    check_comparable(histories)
    runs = {}
    for arch in ARCH_ORDER:
        history = histories[arch]
        epochs = history.epochs
        last = epochs[-1]
        final = {key: last[key] for key in last if key != EPOCH}
        if has_train_eval(last):
            final[GAP_ACCURACY] = gap_accuracy(last)
            final[GAP_LOSS] = gap_loss(last)
        runs[arch] = {
            "run_dir": history.run_dir,  # where it is now (a copied or moved run's config names its old place)
            "epochs": epochs,
            "final": final,
            "model": model_facts(history),
            "seconds_per_epoch": sum(e[TRAIN_SECONDS] for e in epochs) / len(epochs),
            "images_per_s": sum(e[IMAGES_PER_S] for e in epochs) / len(epochs),
            "device": history.data["device"],
        }
    recipe = {k: v for k, v in histories["multistage"].config.items() if k in Recipe.__dataclass_fields__ and k not in COMPARED}
    verdict = decide(histories["singlestage"].epochs, histories["multistage"].epochs, window)
    return {"config": recipe, "runs": runs, "verdict": verdict, "rule": RULE,
            "explanation": explanation(verdict, runs)}


def explanation(verdict: dict, runs: dict) -> str:
    """The plain-words paragraph under the verdict."""
    single, multi = runs["singlestage"]["model"], runs["multistage"]["model"]
    text = (f"Verdict: {verdict['verdict']} (confidence: {verdict['confidence']}): {verdict['reason']}. "
            f"Why this is plausible: the single-stage net keeps 32 channels at full 32x32 resolution, so each of its "
            f"outputs sees only a {single['receptive_field']}-pixel window, smaller than the 32-pixel image, and it "
            f"spends {single['macs_per_image'] / 1e6:.0f} M multiply-accumulates per image on that. The multi-stage net "
            f"halves the resolution twice while doubling the channels: its receptive field grows to "
            f"{multi['receptive_field']} pixels, covering the whole image, its deeper stages have more channels "
            f"({multi['parameters']:,} vs {single['parameters']:,} parameters) to combine what they see, and it needs "
            f"only {multi['macs_per_image'] / 1e6:.0f} M multiply-accumulates per image.")
    if verdict["verdict"] == "reducing underfitting":
        text += (" Its extra capacity and global view let it fit the training images better, and that better fit "
                 "carries over to the test images; the problem it solves is underfitting, not overfitting.")
    elif verdict["verdict"] == "reducing overfitting":
        text += (" It does not fit the training images better, but what it learns transfers better to the test "
                 "images: the problem it solves is overfitting.")
    return text


def write_verdict_text(report: dict) -> None:
    """The verdict paragraph in TensorBoard's TEXT tab, in the multi-stage run's folder."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = report["runs"]["multistage"]["run_dir"]
    if run_dir and os.path.isdir(run_dir):
        with SummaryWriter(run_dir) as writer:
            writer.add_text("bonus/verdict", report["explanation"], report["config"]["epochs"])


def console_table(report: dict) -> str:
    """A compact table for the terminal: final numbers and the verdict."""
    lines = [f"{'':<22}{'singlestage':>14}{'multistage':>14}"]
    keys = [("train loss", TRAIN_LOSS, 1, "{:.4f}"), ("train-eval acc %", TRAIN_EVAL_ACCURACY, 100, "{:.2f}"),
            ("test acc %", TEST_ACCURACY, 100, "{:.2f}"), ("test loss", TEST_LOSS, 1, "{:.4f}"),
            ("gap acc (pts)", GAP_ACCURACY, 100, "{:.2f}")]
    for label, key, scale, fmt in keys:
        if key in report["runs"]["multistage"]["final"]:
            cells = [fmt.format(scale * report["runs"][arch]["final"][key]) for arch in ARCH_ORDER]
            lines.append(f"{label:<22}{cells[0]:>14}{cells[1]:>14}")
    lines.append(f"Verdict: {report['verdict']['verdict']} (confidence: {report['verdict']['confidence']})")
    gain = report.get("where_the_gain_comes_from", {})
    if "classes" in gain:
        lines.append(f"Where the gain comes from: {gain['classes']['summary']}")
    return "\n".join(lines)


def write_report(directory: str, histories: dict[str, RunHistory], setup: Setup | None = None,
                 data: CifarData | None = None, retested: dict | None = None) -> dict:
    """Write report.json, report.md and curves.png into `directory` (which exists), print the table, return the
    report. With `setup` (and `data`, if loaded), the final checkpoints are re-tested class by class (see
    `where_the_gain_comes_from` for `retested`)."""
    report = build_report(histories)  # checks first that the runs are comparable, before any re-test
    report["where_the_gain_comes_from"] = where_the_gain_comes_from({arch: [h] for arch, h in histories.items()},
                                                                    setup, data, retested)
    write_json(os.path.join(directory, "report.json"), report)
    with open(os.path.join(directory, "report.md"), "w") as f:
        f.write(render_markdown(report))
    plot_curves(report, os.path.join(directory, "curves.png"))
    write_verdict_text(report)
    print(console_table(report))
    print(f"Report: {os.path.join(directory, 'report.md')}", flush=True)
    return report


def read_bonus_histories(bonus_dir: str) -> dict[str, RunHistory]:
    """The two histories of a bonus directory (`<dir>/singlestage/`, `<dir>/multistage/`)."""
    return {arch: read_history(os.path.join(bonus_dir, arch)) for arch in ARCH_ORDER}
