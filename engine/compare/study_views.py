"""How a multi-seed study looks: study.md (tables of mean ± sd and 95 % intervals, the paired verdict) and study.png
(mean curves with ±1 sd bands), from the dict that engine/compare/study.py builds."""
from __future__ import annotations

from core.figures import curve_panels, save
from core.history_file import (ACCURACY, BEST_TEST_ACCURACY, GAP_ACCURACY, LOSS, SUPERCLASS_ACCURACY, TEST,
                               TEST_ACCURACY, TEST_EMA, TEST_FLIP, TOP5, TRAIN_EVAL, TRAIN_EVAL_ACCURACY, TRAIN_LOSS,
                               is_loss, metric)
from core.numbers import loss, points
from core.recipe import Recipe
from core.recipe_words import augmentation_in_words, optimisation_in_words
from engine.compare.ablation import ablation_lines
from engine.compare.class_gain import gain_markdown
from engine.compare.verdict import contrasts_of, expected_half_width
from models import label, noun

# Curve colours by position, baseline first (the bonus pair: orange, blue).
COLORS = ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")

# Row labels: every "<split>_<metric>" record key in words ("test accuracy, with test-time flips").
_SPLITS = {TEST: "test", TRAIN_EVAL: "train-eval", TEST_EMA: "test", TEST_FLIP: "test"}
_SPLIT_SUFFIXES = {TEST_EMA: ", EMA weights", TEST_FLIP: ", with test-time flips"}
_METRICS = {ACCURACY: "accuracy", TOP5: "top-5", LOSS: "loss", SUPERCLASS_ACCURACY: "superclass accuracy"}
LABELS = {TRAIN_LOSS: "mean train loss", GAP_ACCURACY: "gap: train-eval - test accuracy",
          BEST_TEST_ACCURACY: "test accuracy at each seed's best epoch (not the last)",
          **{metric(split, name): f"{word} {words}{_SPLIT_SUFFIXES.get(split, '')}"
             for split, word in _SPLITS.items() for name, words in _METRICS.items()}}


def _number(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return loss(value) if is_loss(key) else points(value)


def _stats_cell(key: str, stats: dict) -> str:
    if stats["sd"] is None:
        return _number(key, stats["mean"])
    return (f"{_number(key, stats['mean'])} ± {_number(key, stats['sd'])} "
            f"[{_number(key, stats['ci_low'])}, {_number(key, stats['ci_high'])}]")


def render_study(study: dict) -> str:
    """study.md: final numbers across seeds per net, per-epoch means, the paired differences and the verdict."""
    seeds, recipe = study["seeds"], Recipe.from_dict(study["recipe"])
    lines = [f"# {recipe.dataset}: {' vs '.join(study['nets'])} across {len(seeds)} seed(s)", "",
             f"Seeds {', '.join(map(str, seeds))}; {recipe.epochs} epochs, batch {recipe.batch_size}, "
             f"{optimisation_in_words(recipe)}, augmentation {augmentation_in_words(recipe)}, blocks per stage "
             f"{recipe.blocks_per_stage}, train-eval {recipe.train_eval}"
             + (f", precision {study['precision']}." if study.get("precision") else "."), "",
             "Accuracies in %, losses as they are: mean ± sample sd [95 % Student-t interval, df = K - 1].", "",
             "## Last epoch", "", "| quantity | " + " | ".join(study["nets"]) + " |",
             "| --- |" + " ---: |" * len(study["nets"])]
    for key in study["nets"][next(iter(study["nets"]))]["final"]:
        lines.append(f"| {LABELS.get(key, key)} | " + " | ".join(_stats_cell(key, net["final"][key]) for net in study["nets"].values()) + " |")
    lines += ["", "## Per epoch (mean across seeds)", "",
              "| epoch | net | mean train loss | test acc | train-eval acc |", "| ---: | --- | ---: | ---: | ---: |"]
    for arch, net in study["nets"].items():
        for index, epoch in enumerate(net["per_epoch"], start=1):
            train_eval = epoch.get(TRAIN_EVAL_ACCURACY)
            lines.append(f"| {index} | {arch} | {_stats_cell(TRAIN_LOSS, epoch[TRAIN_LOSS])} | {_stats_cell(TEST_ACCURACY, epoch[TEST_ACCURACY])} | "
                         f"{_stats_cell(TRAIN_EVAL_ACCURACY, train_eval) if train_eval else '-'} |")
    names = list(study["nets"])
    contrasts = contrasts_of(study)
    for name, contrast in contrasts.items():
        heading = f"{name} against {names[0]}" if len(contrasts) > 1 else "Verdict"
        lines += _contrast_lines(contrast, (names[0], name), heading)
    if contrasts:
        first = next(iter(contrasts.values()))
        lines += ["## The rule", ""] + ([f"Shown for {names[1]}; every other network takes its place in turn.", ""]
                                       if len(contrasts) > 1 else []) + ["```", first["rule"], "```"]
    if "ablation" in study:
        lines += ablation_lines(study)
    lines += ["", "![curves](study.png)", ""]
    return "\n".join(lines)


def contrast_section(contrast: dict, heading: str, opening: str, body: list[str]) -> list[str]:
    """One contrast in report.md or study.md: its heading with the verdict, an opening paragraph, the numbers that
    decided (`body`), and where the gain comes from."""
    verdict = contrast["verdict"]
    lines = ["", f"## {heading}: {verdict['verdict']} (confidence: {verdict['confidence']})", "", opening, ""] + body
    if "where_the_gain_comes_from" in contrast:
        lines += gain_markdown(contrast["where_the_gain_comes_from"])
    return lines


def _contrast_lines(contrast: dict, names: tuple[str, str], heading: str) -> list[str]:
    """A study's contrast: the paired differences across seeds (or, with one seed, what more seeds would give)."""
    verdict = contrast["verdict"]
    base, cand = names
    lines = []
    if "paired_differences" in verdict:
        lines += [f"Paired differences ({label(cand)} minus {label(base)} per seed, window means of the last "
                  f"{verdict['window']} epochs; positive favours {noun(cand)}):", "",
                  "| quantity | per seed | mean | 95 % interval | margin | clear |", "| --- | --- | ---: | --- | ---: | --- |"]
        for key, d in verdict["paired_differences"].items():
            lines.append(f"| {LABELS.get(key, key)} | {', '.join(_number(key, v) for v in d['values'])} | "
                         f"{_number(key, d['mean'])} | [{_number(key, d['ci_low'])}, {_number(key, d['ci_high'])}] | "
                         f"{_number(key, d['margin'])} | {'yes' if d['clear'] else 'no'} |")
        lines.append("")
    else:
        lines += [more_seeds_note(verdict), ""]
    return contrast_section(contrast, heading, verdict["reason"] + ".", lines)


def more_seeds_note(verdict: dict) -> str:
    """With one seed: how much firmer more seeds would make the test-accuracy difference, from the observed
    epoch-to-epoch noise of the two nets over the window (a stand-in for the seed-to-seed spread)."""
    if "window_stats" not in verdict:
        return "One seed: the window rule was used; more seeds (`--seeds 0 1 2`) would give a confidence interval."
    single, multi = (stats[TEST_ACCURACY]["std"] for stats in verdict["window_stats"].values())
    noise = (single**2 + multi**2) ** 0.5
    widths = ", ".join(f"K = {k}: ± {points(expected_half_width(noise, k))} pts" for k in (3, 5, 10))
    return (f"One seed: the window rule was used. The test-accuracy difference moved by about {points(noise)} points "
            f"(sd) from epoch to epoch; if seeds spread it as much, a paired study's 95 % interval would be {widths} "
            f"(`--seeds`).")


def plot_study(study: dict, path: str) -> None:
    """study.png: mean training loss and test (solid) / train-eval (dashed) accuracy per epoch, ±1 sd bands."""
    figure, loss_axes, accuracy_axes = curve_panels()
    for color, (arch, net) in zip(COLORS, study["nets"].items()):
        x = list(range(1, len(net["per_epoch"]) + 1))
        for axes, key, scale, style, legend in ((loss_axes, TRAIN_LOSS, 1, "o-", arch),
                                               (accuracy_axes, TEST_ACCURACY, 100, "o-", f"{arch} test"),
                                               (accuracy_axes, TRAIN_EVAL_ACCURACY, 100, "s--", f"{arch} train-eval")):
            if key not in net["per_epoch"][0]:
                continue
            mean = [scale * e[key]["mean"] for e in net["per_epoch"]]
            axes.plot(x, mean, style, color=color, label=legend)
            if net["per_epoch"][0][key]["sd"] is not None:
                sd = [scale * e[key]["sd"] for e in net["per_epoch"]]
                axes.fill_between(x, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                  color=color, alpha=0.15)
    verdict = "; ".join(c["verdict"]["verdict"] for c in (study.get("contrasts") or {"": study}).values()
                        if "verdict" in c)
    figure.suptitle(f"{study['recipe']['dataset']}, seeds {', '.join(map(str, study['seeds']))}: mean ± sd across seeds"
                    + (f" — {verdict}" if verdict else ""))
    save(figure, path, legends=(loss_axes, accuracy_axes))
