"""What explains a gain: an ablation over a study of three or more networks.

The first network is the baseline and the second the target; the target's gain over the baseline in train-eval
accuracy is the gain to explain. Every further network is a variant: each is contrasted with the baseline and with
the target. A contrast names the properties in which its two networks differ and those they share (measured on
the models by models/stats.py), shows the paired difference across seeds with its 95 % interval, turns it into a
share of the gain by `ATTRIBUTION_RULE`, and gives the probability that the variant beats the other network.

How both explanations of a gain look in report.md and study.md: the ablation's section, and the per-class section
("where the gain comes from", judged by engine/compare/verdict.compare_classes).
"""
from __future__ import annotations

from core.history_file import GAP_ACCURACY, TEST_ACCURACY, TRAIN_EVAL_ACCURACY, RunHistory
from core.numbers import counted, millions, percent, points, ratio
from core.stats import CONFIDENCE, interval
from engine.compare.verdict import WINDOW, fitting_window, seed_window_means
from models import field_words, model_facts
from models.stats import IMAGE_SIZE, feature_maps

# Parameter and MAC counts this close (relative to the larger) count as held equal.
COUNT_TOLERANCE = 0.10
ROWS_SHOWN = 5  # with more than 4 * ROWS_SHOWN classes, the most and least improved ROWS_SHOWN each
HALF_THE_GAIN = 0.5  # a share from which a variant explains "at least half of the gain"

ATTRIBUTION_RULE = """Properties: "resolution" is the sequence of feature-map sizes, "widths" the channel counts used (32 alone is not
16, 32, 64), "receptive field" whether it covers the {image_size}-px image; "parameters" and "MACs" count as equal within {tolerance} %.
The gain to explain: G = {target} minus {baseline} in train-eval accuracy, each seed's value the mean over the last
{window} epochs, paired by seed (the same data order), G the mean over the seeds.
A contrast V - R (a variant V and a reference R, which differ only in the properties it names) has per seed the
difference of the same window means, and across seeds their mean D and 95 % Student-t interval [lo, hi].
  - against {baseline}: the properties V changes recover  share = D / G  of the gain;
  - against {target}:   the properties V lacks account for  share = -D / G  of the gain;
the share's interval is D's interval divided by G (G's own interval is shown beside it). In words:
  - "at least half of the gain"  when the share's whole interval lies at or above 0.5;
  - "some of the gain"           when it lies above 0 but reaches below 0.5;
  - "little or none of the gain" when it contains 0 and lies below 0.5;
  - "none: it works against the gain" when it lies wholly below 0;
  - "cannot tell"                when it contains both 0 and 0.5 (too few seeds or too much spread);
and when G's own interval contains 0 there is no gain to explain and no contrast is attributed.
P(V > R): the fraction of seeds in which V's test accuracy (window mean) beats R's, a tie counting as no win, with
its 95 % Clopper-Pearson interval (scipy.stats.binomtest): with 3 seeds even 3 wins of 3 leaves it at [0.29, 1]."""


def attribution_rule(baseline: str, target: str, window: int) -> str:
    """`ATTRIBUTION_RULE` in the study's names."""
    return ATTRIBUTION_RULE.format(baseline=baseline, target=target, window=window, image_size=IMAGE_SIZE,
                                   tolerance=f"{100 * COUNT_TOLERANCE:.0f}")


def run_facts(history: RunHistory) -> dict:
    """`model_facts` of the network a run trained."""
    recipe = history.recipe
    return model_facts(recipe.arch, history.num_classes, recipe.blocks_per_stage, history.network)[1]


def network_properties(arch: str, num_classes: int, blocks_per_stage: int, network: dict | None = None) -> dict:
    """What an ablation compares of one network, measured on a freshly built model (`model_facts`; `network`: a
    user's network as a run recorded it); whether a receptive field that cannot be measured covers the image is
    None."""
    model, facts = model_facts(arch, num_classes, blocks_per_stage, network)
    maps = feature_maps(model, IMAGE_SIZE)
    field = facts["receptive_field"]
    return {"resolution": [size for _channels, size in maps], "widths": [channels for channels, _size in maps],
            **facts, "covers_image": None if field is None else field >= IMAGE_SIZE}


def _close(a: int, b: int) -> bool:
    return abs(a - b) <= COUNT_TOLERANCE * max(a, b)


# Each property: its name in the report, and whether two networks' properties hold it equal.
PROPERTIES = {
    "resolution": lambda a, b: a["resolution"] == b["resolution"],
    "widths": lambda a, b: sorted(set(a["widths"])) == sorted(set(b["widths"])),
    "receptive field": lambda a, b: a["covers_image"] == b["covers_image"],
    "parameters": lambda a, b: _close(a["parameters"], b["parameters"]),
    "MACs": lambda a, b: _close(a["macs_per_image"], b["macs_per_image"]),
}


def probability_better(candidate: list[float], reference: list[float], confidence: float = CONFIDENCE) -> dict:
    """P(candidate > reference) over paired seeds: the fraction of wins (a tie is no win) and its exact
    (Clopper-Pearson) interval, as Bouthillier et al. (MLSys 2021) recommend over a mean difference."""
    from scipy import stats  # imported here: a second of start-up that only studies need

    wins = sum(c > r for c, r in zip(candidate, reference, strict=True))
    seeds = len(candidate)
    ci = stats.binomtest(wins, seeds).proportion_ci(confidence_level=confidence, method="exact")
    return {"wins": wins, "seeds": seeds, "probability": wins / seeds, "ci_low": float(ci.low), "ci_high": float(ci.high)}


def share_in_words(low: float, high: float) -> str:
    """The words of `ATTRIBUTION_RULE` for a share's interval [low, high]."""
    if low >= HALF_THE_GAIN:
        return "at least half of the gain"
    if low > 0:
        return "some of the gain"
    if high < 0:
        return "none: it works against the gain"
    if high < HALF_THE_GAIN:
        return "little or none of the gain"
    return "cannot tell"


def _per_seed(histories: list[RunHistory], window: int) -> list[dict]:
    return [seed_window_means(h.epochs, window) for h in histories]


def contrast(variant: str, reference: str, sign: int, means: dict, properties: dict, gain: dict) -> dict:
    """One contrast of `variant` with `reference` (sign +1 against the baseline, -1 against the target)."""
    differ = [name for name, equal in PROPERTIES.items() if not equal(properties[variant], properties[reference])]
    train_eval = interval([v[TRAIN_EVAL_ACCURACY] - r[TRAIN_EVAL_ACCURACY]
                           for v, r in zip(means[variant], means[reference], strict=True)])
    test = interval([v[TEST_ACCURACY] - r[TEST_ACCURACY] for v, r in zip(means[variant], means[reference], strict=True)])
    result = {"variant": variant, "reference": reference, "differs_in": differ,
              "held_equal": [name for name in PROPERTIES if name not in differ],
              "train_eval_accuracy": train_eval, "test_accuracy": test,
              "p_better": probability_better([v[TEST_ACCURACY] for v in means[variant]],
                                             [r[TEST_ACCURACY] for r in means[reference]])}
    if gain["clear"] and train_eval["ci_low"] is not None:
        bounds = sorted(sign * bound / gain["mean"] for bound in (train_eval["ci_low"], train_eval["ci_high"]))
        result["share"] = {"mean": sign * train_eval["mean"] / gain["mean"], "ci_low": bounds[0],
                           "ci_high": bounds[1], "words": share_in_words(*bounds)}
    return result


def ablation(histories: dict[str, list[RunHistory]], window: int = WINDOW) -> dict:
    """The ablation of a study of three or more networks (`histories[arch][k]`: seed k's run, baseline first, then
    the target, then the variants): properties per network, the gain, and each variant's two contrasts."""
    names = list(histories)
    baseline, target, variants = names[0], names[1], names[2:]
    window = fitting_window(window, [h.epochs for runs in histories.values() for h in runs])
    properties = {arch: network_properties(arch, runs[0].num_classes, runs[0].recipe.blocks_per_stage, runs[0].network)
                  for arch, runs in histories.items()}
    means = {arch: _per_seed(runs, window) for arch, runs in histories.items()}
    gain = interval([t[TRAIN_EVAL_ACCURACY] - b[TRAIN_EVAL_ACCURACY]
                     for t, b in zip(means[target], means[baseline], strict=True)])
    gain["clear"] = gain["ci_low"] is not None and gain["ci_low"] > 0
    contrasts = [contrast(variant, reference, sign, means, properties, gain)
                 for variant in variants for reference, sign in ((baseline, 1), (target, -1))]
    return {"baseline": baseline, "target": target, "window": window, "properties": properties, "gain": gain,
            "contrasts": contrasts, "rule": attribution_rule(baseline, target, window)}


def _interval(stats: dict) -> str:
    if stats["ci_low"] is None:
        return "-"
    return f"[{points(stats['ci_low'], signed=True)}, {points(stats['ci_high'], signed=True)}]"


def _facts(properties: dict) -> list[str]:
    field = field_words(properties) + ("" if properties["covers_image"] is not False else " (less than the image)")
    return [" → ".join(map(str, properties["resolution"])) + " px", " → ".join(map(str, properties["widths"])), field,
            f"{properties['parameters']:,}", millions(properties['macs_per_image'])]


def _final(net: dict, key: str) -> str:
    stats = net["final"].get(key)
    if stats is None:
        return "-"
    return f"{points(stats['mean'])}" + (f" ± {points(stats['sd'])}" if stats["sd"] is not None else "")


def ablation_summary(row: dict) -> str:
    """One contrast in one line (for the console)."""
    text = (f"{row['variant']} - {row['reference']}: differs in {', '.join(row['differs_in']) or 'nothing measured'}; "
            f"train-eval {points(row['train_eval_accuracy']['mean'], signed=True)} pts {_interval(row['train_eval_accuracy'])}")
    if "share" in row:
        text += f", {row['share']['words']} (share {ratio(row['share']['mean'])})"
    return text


def ablation_lines(study: dict) -> list[str]:
    """The section of study.md: one row per network, the gain, one row per contrast, the rule."""
    ablation, nets = study["ablation"], study["nets"]
    baseline, target = ablation["baseline"], ablation["target"]
    contrasts = study.get("contrasts", {})
    lines = ["", "## What explains the gain (ablation)", "",
             f"Last epoch, mean ± sd over {len(study['seeds'])} seeds; verdicts against {baseline} by the rule above.", "",
             "| network | resolution | widths | receptive field | parameters | MACs per image | train-eval acc | "
             "test acc | gap (pts) | verdict |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, properties in ablation["properties"].items():
        verdict = contrasts[name]["verdict"] if name in contrasts else None
        cell = f"{verdict['verdict']} ({verdict['confidence']})" if verdict else "baseline"
        lines.append(f"| {name} | " + " | ".join(_facts(properties)) + " | "
                     + " | ".join(_final(nets[name], key) for key in (TRAIN_EVAL_ACCURACY, TEST_ACCURACY, GAP_ACCURACY))
                     + f" | {cell} |")
    gain = ablation["gain"]
    lines += ["", f"The gain to explain: {target} minus {baseline} in train-eval accuracy, "
                  f"{points(gain['mean'], signed=True)} pts {_interval(gain)} (per seed "
                  f"{', '.join(points(v, signed=True) for v in gain['values'])})"
              + ("." if gain["clear"] else "; its interval contains 0, so there is no gain to explain."), "",
              f"Paired contrasts (window means of the last {counted(ablation['window'], 'epoch')}, differences in "
              "points, 95 % intervals across seeds):", "",
              "| contrast | differs in | held equal | train-eval acc, per seed | mean [95 %] | share of the gain | "
              "test acc, mean [95 %] | P(variant > reference), test [95 %] |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in ablation["contrasts"]:
        train_eval, test, better = row["train_eval_accuracy"], row["test_accuracy"], row["p_better"]
        share = row.get("share")
        share_cell = (f"{ratio(share['mean'])} [{ratio(share['ci_low'])}, {ratio(share['ci_high'])}]: {share['words']}"
                      if share else "-")
        lines.append(f"| {row['variant']} - {row['reference']} | {', '.join(row['differs_in']) or '-'} | "
                     f"{', '.join(row['held_equal']) or '-'} | {', '.join(points(v, signed=True) for v in train_eval['values'])} | "
                     f"{points(train_eval['mean'], signed=True)} {_interval(train_eval)} | {share_cell} | "
                     f"{points(test['mean'], signed=True)} {_interval(test)} | {better['wins']} of {better['seeds']} = "
                     f"{ratio(better['probability'])} [{ratio(better['ci_low'])}, {ratio(better['ci_high'])}] |")
    lines += ["", "### The attribution rule", "", "```", ablation["rule"], "```"]
    return lines


def _gain_table(comparison: dict, what: str) -> list[str]:
    rows = comparison["classes"]
    seeds = comparison["seeds"]
    base, cand = (key for key in rows[0] if key not in ("class", "gain", "seeds_improved"))  # the two nets, in order
    shown = rows if len(rows) <= 4 * ROWS_SHOWN else rows[:ROWS_SHOWN] + [None] + rows[-ROWS_SHOWN:]
    lines = [f"| {what} | {base} | {cand} | gain (pts) |" + (" seeds improved |" if seeds > 1 else ""),
             "| --- | ---: | ---: | ---: |" + (" ---: |" if seeds > 1 else "")]
    for row in shown:
        if row is None:
            lines.append(f"| ... {len(rows) - 2 * ROWS_SHOWN} more | | | |" + (" |" if seeds > 1 else ""))
            continue
        lines.append(f"| {row['class']} | {percent(row[base], 1)} | {percent(row[cand], 1)} | "
                     f"{points(row['gain'], 1, signed=True)} |" + (f" {row['seeds_improved']} of {seeds} |" if seeds > 1 else ""))
    return lines


def gain_markdown(gain: dict) -> list[str]:
    """The section's lines: the pattern in one sentence, the per-class (and per-superclass) table, the rule."""
    lines = ["## Where the gain comes from", ""]
    if "unavailable" in gain:
        return lines + [f"Not available: {gain['unavailable']}.", ""]
    classes = gain["classes"]
    seeds = f" (test accuracy of the final models, mean over {classes['seeds']} seeds)" if classes["seeds"] > 1 else \
        " (test accuracy of the final models)"
    lines += [f"Per class{seeds}: **{classes['summary']}**.", ""] + _gain_table(classes, "class") + [""]
    if "superclasses" in gain:
        lines += [f"Per superclass: **{gain['superclasses']['summary']}**.", ""]
        lines += _gain_table(gain["superclasses"], "superclass") + [""]
    lines += [f"Rule: {classes['rule']}", ""]
    return lines
