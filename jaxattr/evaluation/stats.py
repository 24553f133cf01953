"""Uncertainty for the reproductions: mean ± 95% bootstrap CI per method, and the paired difference of two
methods on the same examples (bootstrap CI of the mean difference and a Wilcoxon signed-rank test), so a
table says whether a headline comparison is resolved (scipy.stats); `provenance` gives the report's machine line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% bootstrap CI over `n` values."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if np.isnan(self.low):
            return f"{self.mean:.3f} [no CI: n = {self.n}]"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Paired:
    """Mean of a − b over paired examples, its bootstrap CI and the two-sided Wilcoxon p-value."""

    diff: Interval
    p_value: float

    @property
    def verdict(self) -> str:
        """'a > b', 'a < b' or 'unresolved': resolved when the 95% CI excludes 0."""
        if self.diff.low > 0:
            return "a > b"
        if self.diff.high < 0:
            return "a < b"
        return "unresolved"

    def __str__(self) -> str:
        return f"{self.diff} (Wilcoxon p = {self.p_value:.2g})"


def bootstrap_mean(values: np.ndarray, *, resamples: int = 5000, seed: int = 0) -> Interval:
    """Mean of `values` [N] with a 95% BCa bootstrap CI (percentile when BCa is degenerate; NaN bounds
    for N < 3)."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if len(x) < 3:  # no CI from one or two values: NaN bounds, so no comparison reads as resolved
        return Interval(float(x.mean()), float("nan"), float("nan"), len(x))
    if np.ptp(x) == 0:
        return Interval(float(x.mean()), float(x.mean()), float(x.mean()), len(x))
    res = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=0.95,
                          random_state=np.random.default_rng(seed), method="BCa")
    lo, hi = res.confidence_interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        res = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=0.95,
                              random_state=np.random.default_rng(seed), method="percentile")
        lo, hi = res.confidence_interval
    return Interval(float(x.mean()), float(lo), float(hi), len(x))


def paired_difference(a: np.ndarray, b: np.ndarray, *, resamples: int = 5000, seed: int = 0) -> Paired:
    """a − b on the same examples ([N] each): bootstrap CI of the mean difference and Wilcoxon's p."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one shape, got {a.shape} and {b.shape}")
    d = a - b
    d = d[np.isfinite(d)]
    ci = bootstrap_mean(d, resamples=resamples, seed=seed)
    p = float(stats.wilcoxon(d).pvalue) if len(d) >= 1 and np.any(d != 0) else 1.0
    return Paired(ci, p)


def provenance(shared: bool = True) -> str:
    """The 'Machine: …' line of a reproduction's report, read from the running process (cores, JAX devices,
    versions, date) so a report made on another machine or an accelerator says so; `shared`: other jobs ran
    beside it, so its wall times are not speed claims."""
    import os
    import platform
    import time

    import jax

    devices = jax.devices()
    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores{', shared with other jobs' if shared else ''}; "
            f"jax {jax.__version__} on {len(devices)} {devices[0].device_kind} device(s), Python "
            f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}.")
