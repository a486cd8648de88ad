"""How numbers are written for people (reports, the console, TensorBoard text): a fraction as a percentage or as
percentage points, a loss as it is."""
from __future__ import annotations


def percent(fraction: float, digits: int = 2) -> str:
    """0.7543 -> "75.43%"."""
    return f"{100 * fraction:.{digits}f}%"


def points(fraction: float, digits: int = 2, signed: bool = False) -> str:
    """A fraction in percentage points without the sign of the unit: 0.0620 -> "6.20" (signed: "+6.20")."""
    return f"{100 * fraction:{'+' if signed else ''}.{digits}f}"
