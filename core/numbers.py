"""How numbers are written for people (reports, the console, TensorBoard text): a fraction as a percentage or as
percentage points, a loss to four decimals, a share or a probability to two,
multiply-accumulates in millions; a count with its noun; a record's number, and one across seeds, as a table
cell."""
from __future__ import annotations

from core.history_file import is_loss


def percent(fraction: float, digits: int = 2) -> str:
    """0.7543 -> "75.43%"."""
    return f"{100 * fraction:.{digits}f}%"


def points(fraction: float, digits: int = 2, signed: bool = False) -> str:
    """A fraction in percentage points without the sign of the unit: 0.0620 -> "6.20" (signed: "+6.20")."""
    return f"{100 * fraction:{'+' if signed else ''}.{digits}f}"


def loss(value: float) -> str:
    """A cross-entropy as reports and the console write it: 0.40693 -> "0.4069"."""
    return f"{value:.4f}"


def ratio(value: float) -> str:
    """A share or a probability, to two decimals: 0.4567 -> "0.46"."""
    return f"{value:.2f}"


def exact(value: float) -> str:
    """A metric to six decimals, where a re-test is compared with what was recorded: 0.7543 -> "0.754300"."""
    return f"{value:.6f}"


def millions(count: float, digits: int = 1) -> str:
    """A count of multiply-accumulates in millions: 40_370_176 -> "40.4 M" (digits=0: "40 M")."""
    return f"{count / 1e6:.{digits}f} M"


def counted(count: int, noun: str) -> str:
    """A count with its noun, singular for one: (1, "epoch") -> "1 epoch", (3, "epoch") -> "3 epochs"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def number(key: str, value: float | None) -> str:
    """A record's number as tables write it: a loss as a loss, anything else in points; "-" for none."""
    if value is None:
        return "-"
    return loss(value) if is_loss(key) else points(value)


def stats_cell(key: str, stats: dict) -> str:
    """A number across seeds: "mean ± sd [low, high]", or the mean alone for one seed."""
    if stats["sd"] is None:
        return number(key, stats["mean"])
    return (f"{number(key, stats['mean'])} ± {number(key, stats['sd'])} "
            f"[{number(key, stats['ci_low'])}, {number(key, stats['ci_high'])}]")


def record_cell(record: dict, key: str) -> str:
    """`record[key]` as a loss or a percentage; "-" where the record lacks it."""
    if key not in record:
        return "-"
    return loss(record[key]) if is_loss(key) else percent(record[key])
