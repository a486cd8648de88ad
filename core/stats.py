"""Statistics across seeds: the mean, the sample standard deviation and a Student-t interval of the mean (scipy's
stdtrit), which every study, verdict and ablation reports at the same confidence."""
from __future__ import annotations

import math
import statistics

CONFIDENCE = 0.95  # of every interval across seeds


def t_quantile(k: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile for `k` values (df = k - 1)."""
    # scipy.special's function is what scipy.stats.t.ppf computes, without scipy.stats' import (most of a second).
    from scipy.special import stdtrit

    return float(stdtrit(k - 1, 0.5 + confidence / 2))


def interval(values: list[float], confidence: float = CONFIDENCE) -> dict:
    """Mean, sample standard deviation and the t-interval of the mean of `values` (K >= 2); with one value the
    spread is unknown, so sd and the interval are None."""
    k = len(values)
    mean = statistics.fmean(values)
    if k < 2:
        return {"k": k, "mean": mean, "sd": None, "ci_low": None, "ci_high": None, "values": list(values)}
    sd = statistics.stdev(values)
    half = t_quantile(k, confidence) * sd / math.sqrt(k)
    return {"k": k, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "values": list(values)}


def expected_half_width(sd: float, k: int, confidence: float = CONFIDENCE) -> float:
    """The CI half-width that K seeds would give if the per-seed spread were `sd`."""
    return t_quantile(k, confidence) * sd / math.sqrt(k)
