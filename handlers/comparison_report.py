"""The bonus comparison: report.md, report.json and curves.png for a single-stage vs multi-stage pair of runs."""
from __future__ import annotations

import json
import os

from ignite.engine import Engine, Events

from engine.errors import UserError
from engine.resume import RUN_CIRCUMSTANCES
from engine.verdict import RULE, decide
from handlers.history import write_json
from models import build_model, count_parameters
from models.stats import macs_per_image, receptive_field

ARCH_ORDER = ("singlestage", "multistage")
# Config fields that may differ between the two runs of a comparison: the architecture, and what does not
# change what a run learns.
PER_RUN_FIELDS = RUN_CIRCUMSTANCES | {"arch"}


def read_history(run_dir: str) -> dict:
    """history.json of a run directory, with a clear error if it is missing or unreadable."""
    path = os.path.join(run_dir, "history.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run directory: it has no history.json") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def check_comparable(histories: dict[str, dict]) -> None:
    """Refuse, naming the field, runs whose configurations differ in more than the architecture."""
    single, multi = (histories[arch]["config"] for arch in ARCH_ORDER)
    for field in sorted(set(single) | set(multi)):
        if field not in PER_RUN_FIELDS and single.get(field) != multi.get(field):
            raise UserError(f"the runs are not comparable: '{field}' differs "
                            f"(singlestage: {single.get(field)!r}, multistage: {multi.get(field)!r})")
    for arch, history in histories.items():
        if history.get("status") != "completed":
            raise UserError(f"the {arch} run has not completed (status: {history.get('status')})")


def model_facts(history: dict) -> dict:
    """Parameters, MACs per image and receptive field of the run's architecture, measured on a fresh model."""
    config = history["config"]
    model = build_model(config["arch"], len(history["class_names"]), blocks_per_stage=config["blocks_per_stage"])
    return {"parameters": count_parameters(model), "macs_per_image": macs_per_image(model),
            "receptive_field": receptive_field(model)}


def build_report(histories: dict[str, dict], window: int = 3) -> dict:
    """Everything the report shows, as one JSON-able dict."""
    check_comparable(histories)
    runs = {}
    for arch in ARCH_ORDER:
        history = histories[arch]
        epochs = history["epochs"]
        last = epochs[-1]
        final = {key: last[key] for key in last if key != "epoch"}
        if "train_eval_accuracy" in last:
            final["gap_accuracy"] = last["train_eval_accuracy"] - last["test_accuracy"]
            final["gap_loss"] = last["test_loss"] - last["train_eval_loss"]
        runs[arch] = {
            "run_dir": history["config"]["output_dir"],
            "epochs": epochs,
            "final": final,
            "model": model_facts(history),
            "seconds_per_epoch": sum(e["train_seconds"] for e in epochs) / len(epochs),
            "images_per_s": sum(e["images_per_s"] for e in epochs) / len(epochs),
            "device": history["device"],
        }
    config = {k: v for k, v in histories["multistage"]["config"].items() if k not in PER_RUN_FIELDS}
    verdict = decide(histories["singlestage"]["epochs"], histories["multistage"]["epochs"], window)
    return {"config": config, "runs": runs, "verdict": verdict, "rule": RULE,
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


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _cell(record: dict, key: str) -> str:
    if key not in record:
        return "-"
    return f"{record[key]:.4f}" if key.endswith("loss") else _pct(record[key])


def render_markdown(report: dict) -> str:
    """report.md: per-epoch tables, final numbers side by side, the rule, the verdict and its explanation."""
    runs, verdict, config = report["runs"], report["verdict"], report["config"]
    has_train_eval = "train_eval_accuracy" in runs["multistage"]["final"]
    lines = [f"# Single-stage vs multi-stage ResNet on {config['dataset']}", "",
             f"Both runs: {config['epochs']} epochs, batch {config['batch_size']}, Adam lr {config['lr']}, seed "
             f"{config['seed']}, augmentation {'on' if config['augment'] else 'off'}, "
             f"blocks per stage {config['blocks_per_stage']}, device {runs['multistage']['device']}"
             + (f", train-eval on {config['train_eval']} fixed training images." if has_train_eval else "."), ""]
    lines += ["## Per epoch", ""]
    header = "| epoch | net | mean train loss | train-eval acc | train-eval loss | test acc | test top-5 | test loss |"
    lines += [header, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for index in range(max(len(r["epochs"]) for r in runs.values())):
        for arch in ARCH_ORDER:
            if index < len(runs[arch]["epochs"]):
                e = runs[arch]["epochs"][index]
                lines.append(f"| {e['epoch']} | {arch} | {e['train_loss']:.4f} | {_cell(e, 'train_eval_accuracy')} | "
                             f"{_cell(e, 'train_eval_loss')} | {_pct(e['test_accuracy'])} | {_pct(e['test_top5'])} | "
                             f"{e['test_loss']:.4f} |")
    lines += ["", "## Final numbers (last epoch)", "", "| | singlestage | multistage |", "| --- | ---: | ---: |"]
    rows = [("mean train loss (last epoch)", lambda r: f"{r['final']['train_loss']:.4f}")]
    if has_train_eval:
        rows += [("train-eval accuracy", lambda r: _pct(r["final"]["train_eval_accuracy"])),
                 ("train-eval loss", lambda r: f"{r['final']['train_eval_loss']:.4f}")]
    rows += [("test accuracy", lambda r: _pct(r["final"]["test_accuracy"])),
             ("test top-5", lambda r: _pct(r["final"]["test_top5"])),
             ("test loss", lambda r: f"{r['final']['test_loss']:.4f}")]
    if has_train_eval:
        rows += [("gap: train-eval acc - test acc", lambda r: f"{100 * r['final']['gap_accuracy']:.2f} pts"),
                 ("gap: test loss - train-eval loss", lambda r: f"{r['final']['gap_loss']:.4f}")]
    rows += [("parameters", lambda r: f"{r['model']['parameters']:,}"),
             ("MACs per image", lambda r: f"{r['model']['macs_per_image'] / 1e6:.1f} M"),
             ("receptive field", lambda r: f"{r['model']['receptive_field']} px"),
             ("seconds per epoch (training)", lambda r: f"{r['seconds_per_epoch']:.1f}"),
             ("images per second (training)", lambda r: f"{r['images_per_s']:.0f}")]
    lines += [f"| {name} | {cell(runs['singlestage'])} | {cell(runs['multistage'])} |" for name, cell in rows]
    lines += ["", f"## Verdict: {verdict['verdict']} (confidence: {verdict['confidence']})", "",
              report["explanation"], ""]
    if "differences" in verdict:
        lines += [f"Numbers that decided (means over the last {verdict['window']} epochs, multi-stage minus "
                  "single-stage, signed so that positive favours the multi-stage net):", "",
                  "| quantity | difference | margin | clear |", "| --- | ---: | ---: | --- |"]
        for key, d in verdict["differences"].items():
            unit = "" if "loss" in key else " pts"
            scale = 1 if "loss" in key else 100
            lines.append(f"| {key.replace('_', ' ')} | {scale * d['value']:+.3f}{unit} | {scale * d['margin']:.3f}{unit} | "
                         f"{'yes' if d['clear'] else 'no'} |")
        lines += ["", f"Test accuracy over the window: singlestage "
                  f"{', '.join(_pct(v) for v in verdict['window_stats']['singlestage']['test_accuracy']['values'])}; "
                  f"multistage {', '.join(_pct(v) for v in verdict['window_stats']['multistage']['test_accuracy']['values'])}"
                  f" ({'ranges do not overlap' if verdict['test_ranges_separated'] else 'ranges overlap'}).", ""]
    lines += ["## The rule", "", "```", report["rule"], "```", "", "![curves](curves.png)", ""]
    return "\n".join(lines)


def plot_curves(report: dict, path: str) -> None:
    """curves.png: mean train loss per epoch; train-eval (dashed) and test (solid) accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"singlestage": "tab:orange", "multistage": "tab:blue"}
    for arch in ARCH_ORDER:
        epochs = report["runs"][arch]["epochs"]
        x = [e["epoch"] for e in epochs]
        loss_axes.plot(x, [e["train_loss"] for e in epochs], "o-", color=colors[arch], label=arch)
        accuracy_axes.plot(x, [100 * e["test_accuracy"] for e in epochs], "o-", color=colors[arch], label=f"{arch} test")
        if "train_eval_accuracy" in epochs[0]:
            accuracy_axes.plot(x, [100 * e["train_eval_accuracy"] for e in epochs], "s--", color=colors[arch],
                               label=f"{arch} train-eval")
    loss_axes.set(title="Mean training loss per epoch", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axes.set(title="Accuracy per epoch", xlabel="epoch", ylabel="accuracy (%)")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(f"{report['config']['dataset']}: single-stage vs multi-stage ResNet — {report['verdict']['verdict']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
    keys = [("train loss", "train_loss", 1, "{:.4f}"), ("train-eval acc %", "train_eval_accuracy", 100, "{:.2f}"),
            ("test acc %", "test_accuracy", 100, "{:.2f}"), ("test loss", "test_loss", 1, "{:.4f}"),
            ("gap acc (pts)", "gap_accuracy", 100, "{:.2f}")]
    for label, key, scale, fmt in keys:
        if key in report["runs"]["multistage"]["final"]:
            cells = [fmt.format(scale * report["runs"][arch]["final"][key]) for arch in ARCH_ORDER]
            lines.append(f"{label:<22}{cells[0]:>14}{cells[1]:>14}")
    lines.append(f"Verdict: {report['verdict']['verdict']} (confidence: {report['verdict']['confidence']})")
    return "\n".join(lines)


def write_report(directory: str, histories: dict[str, dict]) -> dict:
    """Write report.json, report.md and curves.png into `directory`, print the table, return the report."""
    report = build_report(histories)
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, "report.json"), report)
    with open(os.path.join(directory, "report.md"), "w") as f:
        f.write(render_markdown(report))
    plot_curves(report, os.path.join(directory, "curves.png"))
    write_verdict_text(report)
    print(console_table(report))
    print(f"Report: {os.path.join(directory, 'report.md')}", flush=True)
    return report


def read_bonus_histories(bonus_dir: str) -> dict[str, dict]:
    """The two histories of a bonus directory (`<dir>/singlestage/`, `<dir>/multistage/`)."""
    return {arch: read_history(os.path.join(bonus_dir, arch)) for arch in ARCH_ORDER}


def attach(trainer: Engine, bonus_dir: str) -> None:
    """Write the comparison report when `trainer` (the last of the bonus runs) completes."""
    def finished_normally(engine: Engine, _event: int) -> bool:
        return not engine.should_terminate  # a NaN stop is reported by the trainer, not compared

    trainer.add_event_handler(
        Events.COMPLETED(event_filter=finished_normally), lambda: write_report(bonus_dir, read_bonus_histories(bonus_dir))
    )
