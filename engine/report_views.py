"""How a comparison report looks: report.md and curves.png, from the report dict that engine/report.py builds."""
from __future__ import annotations

from core.history_file import (EPOCH, GAP_ACCURACY, GAP_LOSS, TEST_ACCURACY, TEST_LOSS, TEST_TOP5, TRAIN_EVAL_ACCURACY,
                               TRAIN_EVAL_LOSS, TRAIN_LOSS)

from engine.gain_views import gain_markdown
from engine.study_views import more_seeds_note

ARCH_ORDER = ("singlestage", "multistage")  # the order of every table and legend: the baseline first


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _cell(record: dict, key: str) -> str:
    if key not in record:
        return "-"
    return f"{record[key]:.4f}" if key.endswith("loss") else _pct(record[key])


def render_markdown(report: dict) -> str:
    """report.md: per-epoch tables, final numbers side by side, the rule, the verdict and its explanation."""
    runs, verdict, config = report["runs"], report["verdict"], report["config"]
    has_train_eval = TRAIN_EVAL_ACCURACY in runs["multistage"]["final"]
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
                lines.append(f"| {e[EPOCH]} | {arch} | {e[TRAIN_LOSS]:.4f} | {_cell(e, TRAIN_EVAL_ACCURACY)} | "
                             f"{_cell(e, TRAIN_EVAL_LOSS)} | {_pct(e[TEST_ACCURACY])} | {_pct(e[TEST_TOP5])} | "
                             f"{e[TEST_LOSS]:.4f} |")
    lines += ["", "## Final numbers (last epoch)", "", "| | singlestage | multistage |", "| --- | ---: | ---: |"]
    rows = [("mean train loss (last epoch)", lambda r: f"{r['final'][TRAIN_LOSS]:.4f}")]
    if has_train_eval:
        rows += [("train-eval accuracy", lambda r: _pct(r["final"][TRAIN_EVAL_ACCURACY])),
                 ("train-eval loss", lambda r: f"{r['final'][TRAIN_EVAL_LOSS]:.4f}")]
    rows += [("test accuracy", lambda r: _pct(r["final"][TEST_ACCURACY])),
             ("test top-5", lambda r: _pct(r["final"][TEST_TOP5])),
             ("test loss", lambda r: f"{r['final'][TEST_LOSS]:.4f}")]
    if has_train_eval:
        rows += [("gap: train-eval acc - test acc", lambda r: f"{100 * r['final'][GAP_ACCURACY]:.2f} pts"),
                 ("gap: test loss - train-eval loss", lambda r: f"{r['final'][GAP_LOSS]:.4f}")]
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
                  f"{', '.join(_pct(v) for v in verdict['window_stats']['singlestage'][TEST_ACCURACY]['values'])}; "
                  f"multistage {', '.join(_pct(v) for v in verdict['window_stats']['multistage'][TEST_ACCURACY]['values'])}"
                  f" ({'ranges do not overlap' if verdict['test_ranges_separated'] else 'ranges overlap'}).", "",
                  more_seeds_note(verdict), ""]
    if "where_the_gain_comes_from" in report:
        lines += gain_markdown(report["where_the_gain_comes_from"])
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
        x = [e[EPOCH] for e in epochs]
        loss_axes.plot(x, [e[TRAIN_LOSS] for e in epochs], "o-", color=colors[arch], label=arch)
        accuracy_axes.plot(x, [100 * e[TEST_ACCURACY] for e in epochs], "o-", color=colors[arch], label=f"{arch} test")
        if TRAIN_EVAL_ACCURACY in epochs[0]:
            accuracy_axes.plot(x, [100 * e[TRAIN_EVAL_ACCURACY] for e in epochs], "s--", color=colors[arch],
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
