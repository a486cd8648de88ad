"""How "where the gain comes from" looks in report.md and study.md (the numbers come from engine/compare/class_gain.py)."""
from __future__ import annotations

from core.numbers import percent, points

ROWS_SHOWN = 5  # with more than 4 * ROWS_SHOWN classes, the most and least improved ROWS_SHOWN each


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
