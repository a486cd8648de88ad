"""Where a candidate net's gain over a baseline comes from: per-class test accuracy of both, paired by seed, and whether
the gain is broad (most classes improve) or concentrated (a few classes carry it).

The final models are re-tested class by class (engine/evaluate.Retester); the comparison is arithmetic on {class name:
accuracy} dicts, so that a bonus (one seed) and a study (several) share it; and how the section looks in report.md
and study.md (`gain_markdown`).
"""
from __future__ import annotations

import math
from statistics import fmean

from core.errors import UserError
from core.history_file import RunHistory
from core.numbers import percent, points
from engine.evaluate import Retester
from models import BONUS_PAIR, label

TOP_FRACTION = 0.2  # "a few classes" = the most-improved fifth
CONCENTRATED_SHARE = 0.5  # ... carrying more than half of what the improving classes gained
BROAD_FRACTION = 0.75  # "broad" = at least three classes in four improve
ROWS_SHOWN = 5  # with more than 4 * ROWS_SHOWN classes, the most and least improved ROWS_SHOWN each



def rule(nets: tuple[str, str] = BONUS_PAIR) -> str:
    """The rule for the pair (baseline, candidate), in their names."""
    base, cand = (label(name) for name in nets)
    return (f"Gain of a class = {cand} minus {base} test accuracy on its images, averaged over seeds. "
            f"No gain: the mean gain over classes is <= 0. Concentrated: the most-improved {TOP_FRACTION:.0%} of the "
            f"classes carry more than {CONCENTRATED_SHARE:.0%} of the summed gains of all improving classes. Broad: "
            f"otherwise, when at least {BROAD_FRACTION:.0%} of the classes improve. Mixed: neither.")



def compare_classes(baseline: list[dict[str, float]], candidate: list[dict[str, float]],
                    nets: tuple[str, str] = BONUS_PAIR) -> dict:
    """`baseline[k]`, `candidate[k]`: accuracy per class name of seed k's baseline and candidate, named by `nets`
    (the same seeds in the same order).

    Returns the per-class rows sorted from most to least improved, the mean gain, how many classes improved,
    the share of the improving classes' summed gain carried by the top fifth (losses elsewhere do not inflate
    it), and the pattern with a one-sentence summary."""
    if not baseline or len(baseline) != len(candidate):
        raise ValueError("compare_classes needs the same, non-zero number of seeds for both nets")
    names = list(baseline[0])
    rows = []
    for name in names:
        gains = [c[name] - b[name] for b, c in zip(baseline, candidate)]
        rows.append({"class": name, nets[0]: fmean(b[name] for b in baseline),
                     nets[1]: fmean(c[name] for c in candidate), "gain": fmean(gains),
                     "seeds_improved": sum(g > 0 for g in gains)})
    rows.sort(key=lambda row: row["gain"], reverse=True)
    gains = [row["gain"] for row in rows]
    mean_gain = fmean(gains)
    improved = sum(g > 0 for g in gains)
    top = max(1, math.ceil(TOP_FRACTION * len(rows)))
    top_share = sum(gains[:top]) / sum(g for g in gains if g > 0) if mean_gain > 0 else None
    if mean_gain <= 0:
        pattern = "no gain"
    elif top_share > CONCENTRATED_SHARE:
        pattern = "concentrated"
    elif improved >= BROAD_FRACTION * len(rows):
        pattern = "broad"
    else:
        pattern = "mixed"
    summary = (f"{pattern}: {improved} of {len(rows)} classes improve, mean gain {points(mean_gain, signed=True)} pts"
               + (f"; the top {top} carry {top_share:.0%} of what the improving classes gained" if top_share is not None else "")
               + f"; most improved: {rows[0]['class']} ({points(rows[0]['gain'], 1, signed=True)}), least: {rows[-1]['class']} "
               f"({points(rows[-1]['gain'], 1, signed=True)})")
    return {"seeds": len(baseline), "classes": rows, "mean_gain": mean_gain, "improved": improved, "top": top,
            "top_share": top_share, "pattern": pattern, "summary": summary, "rule": rule(nets)}




def _table(comparison: dict, what: str) -> list[str]:
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
    lines += [f"Per class{seeds}: **{classes['summary']}**.", ""] + _table(classes, "class") + [""]
    if "superclasses" in gain:
        lines += [f"Per superclass: **{gain['superclasses']['summary']}**.", ""]
        lines += _table(gain["superclasses"], "superclass") + [""]
    lines += [f"Rule: {classes['rule']}", ""]
    return lines


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
