"""How a multi-seed study looks: study.md (tables of mean ± sd and 95 % intervals, the paired verdict) and study.png
(mean curves with ±1 sd bands), from the dict that engine/study.py builds."""
from __future__ import annotations

from core.history_file import GAP_ACCURACY, TEST_ACCURACY, TRAIN_EVAL_ACCURACY, TRAIN_EVAL_LOSS, TRAIN_LOSS
from core.stats import expected_half_width
from engine.gain_views import gain_markdown

LABELS = {TRAIN_LOSS: "mean train loss", TEST_ACCURACY: "test accuracy", "test_top5": "test top-5",
          "test_loss": "test loss", "test_superclass_accuracy": "test superclass accuracy",
          TRAIN_EVAL_ACCURACY: "train-eval accuracy", "train_eval_top5": "train-eval top-5",
          TRAIN_EVAL_LOSS: "train-eval loss", GAP_ACCURACY: "gap: train-eval - test accuracy"}


def _number(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if "loss" in key else f"{100 * value:.2f}"


def _cell(key: str, stats: dict) -> str:
    if stats["sd"] is None:
        return _number(key, stats["mean"])
    return (f"{_number(key, stats['mean'])} ± {_number(key, stats['sd'])} "
            f"[{_number(key, stats['ci_low'])}, {_number(key, stats['ci_high'])}]")


def render_markdown(study: dict) -> str:
    """study.md: final numbers across seeds per net, per-epoch means, the paired differences and the verdict."""
    seeds, recipe = study["seeds"], study["recipe"]
    lines = [f"# {recipe['dataset']}: {' vs '.join(study['nets'])} across {len(seeds)} seed(s)", "",
             f"Seeds {', '.join(map(str, seeds))}; {recipe['epochs']} epochs, batch {recipe['batch_size']}, Adam lr "
             f"{recipe['lr']}, augmentation {'on' if recipe['augment'] else 'off'}, blocks per stage "
             f"{recipe['blocks_per_stage']}, train-eval {recipe['train_eval']}.", "",
             "Accuracies in %, losses as they are: mean ± sample sd [95 % Student-t interval, df = K - 1].", "",
             "## Last epoch", "", "| quantity | " + " | ".join(study["nets"]) + " |",
             "| --- |" + " ---: |" * len(study["nets"])]
    for key in study["nets"][next(iter(study["nets"]))]["final"]:
        lines.append(f"| {LABELS.get(key, key)} | " + " | ".join(_cell(key, net["final"][key]) for net in study["nets"].values()) + " |")
    lines += ["", "## Per epoch (mean across seeds)", "",
              "| epoch | net | mean train loss | test acc | train-eval acc |", "| ---: | --- | ---: | ---: | ---: |"]
    for arch, net in study["nets"].items():
        for index, epoch in enumerate(net["per_epoch"], start=1):
            train_eval = epoch.get(TRAIN_EVAL_ACCURACY)
            lines.append(f"| {index} | {arch} | {_cell(TRAIN_LOSS, epoch[TRAIN_LOSS])} | {_cell(TEST_ACCURACY, epoch[TEST_ACCURACY])} | "
                         f"{_cell(TRAIN_EVAL_ACCURACY, train_eval) if train_eval else '-'} |")
    verdict = study.get("verdict")
    if verdict:
        lines += ["", f"## Verdict: {verdict['verdict']} (confidence: {verdict['confidence']})", "", verdict["reason"] + ".", ""]
        if "paired_differences" in verdict:
            lines += [f"Paired differences (multi-stage minus single-stage per seed, window means of the last "
                      f"{verdict['window']} epochs; positive favours the multi-stage net):", "",
                      "| quantity | per seed | mean | 95 % interval | margin | clear |", "| --- | --- | ---: | --- | ---: | --- |"]
            for key, d in verdict["paired_differences"].items():
                lines.append(f"| {LABELS.get(key, key)} | {', '.join(_number(key, v) for v in d['values'])} | "
                             f"{_number(key, d['mean'])} | [{_number(key, d['ci_low'])}, {_number(key, d['ci_high'])}] | "
                             f"{_number(key, d['margin'])} | {'yes' if d['clear'] else 'no'} |")
            lines.append("")
        else:
            lines += [more_seeds_note(verdict), ""]
    if "where_the_gain_comes_from" in study:
        lines += gain_markdown(study["where_the_gain_comes_from"])
    if verdict:
        lines += ["## The rule", "", "```", study["rule"], "```"]
    lines += ["", "![curves](study.png)", ""]
    return "\n".join(lines)


def more_seeds_note(verdict: dict) -> str:
    """With one seed: how much firmer more seeds would make the test-accuracy difference, from the observed
    epoch-to-epoch noise of the two nets over the window (a stand-in for the seed-to-seed spread)."""
    if "window_stats" not in verdict:
        return "One seed: the window rule was used; more seeds (`--seeds 0 1 2`) would give a confidence interval."
    single = verdict["window_stats"]["singlestage"][TEST_ACCURACY]["std"]
    multi = verdict["window_stats"]["multistage"][TEST_ACCURACY]["std"]
    noise = (single**2 + multi**2) ** 0.5
    widths = ", ".join(f"K = {k}: ± {100 * expected_half_width(noise, k):.2f} pts" for k in (3, 5, 10))
    return (f"One seed: the window rule was used. The test-accuracy difference moved by about {100 * noise:.2f} points "
            f"(sd) from epoch to epoch; if seeds spread it as much, a paired study's 95 % interval would be {widths} "
            f"(`--seeds`).")


def plot_study(study: dict, path: str) -> None:
    """study.png: mean training loss and test (solid) / train-eval (dashed) accuracy per epoch, ±1 sd bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"singlestage": "tab:orange", "multistage": "tab:blue"}
    for arch, net in study["nets"].items():
        x = list(range(1, len(net["per_epoch"]) + 1))
        for axes, key, scale, style, label in ((loss_axes, TRAIN_LOSS, 1, "o-", arch),
                                               (accuracy_axes, TEST_ACCURACY, 100, "o-", f"{arch} test"),
                                               (accuracy_axes, TRAIN_EVAL_ACCURACY, 100, "s--", f"{arch} train-eval")):
            if key not in net["per_epoch"][0]:
                continue
            mean = [scale * e[key]["mean"] for e in net["per_epoch"]]
            axes.plot(x, mean, style, color=colors.get(arch), label=label)
            if net["per_epoch"][0][key]["sd"] is not None:
                sd = [scale * e[key]["sd"] for e in net["per_epoch"]]
                axes.fill_between(x, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                  color=colors.get(arch), alpha=0.15)
    loss_axes.set(title="Mean training loss per epoch", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axes.set(title="Accuracy per epoch", xlabel="epoch", ylabel="accuracy (%)")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    verdict = study.get("verdict", {}).get("verdict", "")
    figure.suptitle(f"{study['recipe']['dataset']}, seeds {', '.join(map(str, study['seeds']))}: mean ± sd across seeds"
                    + (f" — {verdict}" if verdict else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
