"""How numbers are written for people (reports, the console, TensorBoard text): a fraction as a percentage or as
percentage points, a loss to four decimals, multiply-accumulates in millions."""
from __future__ import annotations


def percent(fraction: float, digits: int = 2) -> str:
    """0.7543 -> "75.43%"."""
    return f"{100 * fraction:.{digits}f}%"


def points(fraction: float, digits: int = 2, signed: bool = False) -> str:
    """A fraction in percentage points without the sign of the unit: 0.0620 -> "6.20" (signed: "+6.20")."""
    return f"{100 * fraction:{'+' if signed else ''}.{digits}f}"


def loss(value: float) -> str:
    """A cross-entropy as reports and the console write it: 0.40693 -> "0.4069"."""
    return f"{value:.4f}"


def millions(count: float, digits: int = 1) -> str:
    """A count of multiply-accumulates in millions: 40_370_176 -> "40.4 M" (digits=0: "40 M")."""
    return f"{count / 1e6:.{digits}f} M"
