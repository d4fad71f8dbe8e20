"""Paired bootstrap over per-example score differences (seeded, deterministic).

The gate compares a candidate with a baseline on the same examples, so it resamples the
per-example differences ``d_i = candidate_i - baseline_i`` (SciPy's bootstrap, percentile
interval). Pairing removes the variance of "this example is hard for every prompt",
which is most of the variance on 30-100 examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PairedCI", "paired_bootstrap", "regressed"]


@dataclass(frozen=True)
class PairedCI:
    """Mean difference (candidate - baseline) and its confidence interval."""

    n: int
    mean: float
    low: float
    high: float
    confidence: float

    @property
    def drop(self) -> float:
        return -self.mean

    @property
    def drop_low(self) -> float:
        """The smallest drop the interval allows (negative: it allows an improvement)."""
        return -self.high

    @property
    def drop_high(self) -> float:
        """The largest drop the interval allows."""
        return -self.low


def paired_bootstrap(
    candidate: list[float],
    baseline: list[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedCI:
    """The bootstrap CI of mean(candidate - baseline); same ``seed``, same answer."""
    from scipy.stats import bootstrap

    if len(candidate) != len(baseline):
        raise ValueError("paired samples must have the same length")
    diffs = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    n = int(diffs.size)
    if n == 0:
        return PairedCI(0, 0.0, 0.0, 0.0, confidence)
    mean = float(diffs.mean())
    if n == 1 or np.all(diffs == diffs[0]):
        # Every resample is the same: the interval is the point (SciPy would warn).
        return PairedCI(n, mean, mean, mean, confidence)
    result = bootstrap(
        (diffs,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return PairedCI(n, mean, float(ci.low), float(ci.high), confidence)


def regressed(ci: PairedCI, max_drop: float, rule: str = "confident_drop") -> bool:
    """The gate's decision on one metric.

    ``confident_drop``: the whole interval shows a drop larger than ``max_drop`` (even its
    most favourable end). ``non_inferiority``: the interval still allows such a drop.
    """
    bound = ci.drop_low if rule == "confident_drop" else ci.drop_high
    return bound > max_drop + 1e-12
