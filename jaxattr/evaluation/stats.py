"""Uncertainty for the reproductions: mean ± 95% bootstrap CI per method, and the paired difference of two
methods on the same examples (bootstrap CI of the mean difference and a Wilcoxon signed-rank test), so a
table says whether a headline comparison is resolved (scipy.stats); `provenance` gives the report's machine line.

Few units (training seeds, fewer than `SMALL_N` = 20): a bootstrap over 3–10 values is too narrow, so
`mean_ci` / `paired` switch to a Student-t interval and, for a paired difference, an exact sign-flip
permutation test (all 2^n sign patterns up to n = 20, else a seeded Monte Carlo), and say which in their
output. `holm` corrects the p-values of the comparisons within one table (Holm 1979, step-down)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SMALL_N = 20  # below this many units, t-interval + exact permutation test instead of the bootstrap
BOOTSTRAP = "BCa bootstrap"
T_INTERVAL = "t-interval"


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% CI over `n` values; `method`: how the CI was made (BCa bootstrap or t-interval)."""

    mean: float
    low: float
    high: float
    n: int
    method: str = BOOTSTRAP

    def __str__(self) -> str:
        if np.isnan(self.low):
            return f"{self.mean:.3f} [no CI: n = {self.n}]"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def ci_verdict(diff: Interval) -> str:
    """'a > b', 'a < b' or 'unresolved' for a difference a - b: resolved when its 95% CI excludes 0."""
    if diff.low > 0:
        return "a > b"
    if diff.high < 0:
        return "a < b"
    return "unresolved"


@dataclass(frozen=True)
class Paired:
    """Mean of a − b over paired examples, its bootstrap CI and the two-sided Wilcoxon p-value."""

    diff: Interval
    p_value: float

    @property
    def verdict(self) -> str:
        """'a > b', 'a < b' or 'unresolved': resolved when the 95% CI excludes 0."""
        return ci_verdict(self.diff)

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


def t_interval(values: np.ndarray, *, confidence: float = 0.95) -> Interval:
    """Mean of `values` [N] with the Student-t CI mean ± t_{N-1} · s/√N (NaN bounds for N < 2; a point
    interval when all values are equal)."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, T_INTERVAL)
    m = float(x.mean())
    if n < 2:
        return Interval(m, float("nan"), float("nan"), n, T_INTERVAL)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return Interval(m, m - half, m + half, n, T_INTERVAL)


def paired_t_p(a: np.ndarray, b: np.ndarray, *, margin: float = 0.0, alternative: str = "two-sided") -> float:
    """p-value of the paired t-test of mean(a − b) against `margin` (`alternative` as scipy: 'two-sided',
    'greater' = H1 mean > margin, 'less'); NaN for fewer than 2 pairs, 1 or 0 for a constant difference."""
    from scipy import stats

    d = _paired(a, b)
    if len(d) < 2:
        return float("nan")
    if np.ptp(d) == 0:  # no spread: the sign of (d − margin) decides
        gap = float(d[0] - margin)
        hit = {"two-sided": gap != 0, "greater": gap > 0, "less": gap < 0}[alternative]
        return 0.0 if hit else 1.0
    return float(stats.ttest_1samp(d, margin, alternative=alternative).pvalue)


def sign_flip_p(d: np.ndarray, *, exact_max: int = 20, samples: int = 100_000, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(d) = 0: the share of sign patterns ε ∈ {±1}^n with
    |mean(ε·d)| ≥ |mean(d)|. Exact (all 2^n patterns, the observed one included) for n ≤ `exact_max`;
    otherwise `samples` random patterns (seeded) with the +1 correction, p = (hits + 1)/(samples + 1).
    The smallest exact p is 2/2^n (n = 3: 0.25, n = 5: 0.0625)."""
    d = np.asarray(d, np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0 or not np.any(d != 0):
        return 1.0
    observed = abs(d.sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))  # ties of the statistic count as extreme
    if n <= exact_max:
        hits, bits = 0, np.arange(n)[None, :]
        for start in range(0, 2 ** n, 2 ** 16):  # chunks of the 2^n patterns (n = 20: 16 chunks)
            codes = np.arange(start, min(start + 2 ** 16, 2 ** n))[:, None]
            signs = 1.0 - 2.0 * ((codes >> bits) & 1)
            hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
        return hits / 2 ** n
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, samples, 10_000):
        m = min(10_000, samples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(m, n))
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (hits + 1) / (samples + 1)


def rank_side(d: np.ndarray) -> int:
    """The side Wilcoxon's signed-rank test leans to: sign of W+ − W− over the non-zero differences."""
    from scipy import stats

    d = np.asarray(d, np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    return int(np.sign(np.sum(np.sign(d) * stats.rankdata(np.abs(d))))) if len(d) else 0


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values for one family of comparisons (same order as given): sort
    ascending, p_(i) · (m − i + 1) for i = 1..m, running maximum, capped at 1. NaN p-values are left NaN and
    do not count in m. Reject at level α where the adjusted p ≤ α."""
    p = np.asarray(p_values, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adj
    return out


@dataclass(frozen=True)
class Comparison:
    """a − b over paired units, with the CI and test chosen by the number of units: below `SMALL_N` a
    t-interval and the exact sign-flip permutation p (plus the paired t-test's p); otherwise the BCa
    bootstrap CI and Wilcoxon's p (`t_p` then NaN)."""

    diff: Interval
    p_value: float
    test: str  # "exact sign-flip permutation", "Monte Carlo sign-flip permutation" or "Wilcoxon"
    t_p: float = float("nan")

    @property
    def verdict(self) -> str:
        """'a > b', 'a < b' or 'unresolved': resolved when the 95% CI excludes 0."""
        return ci_verdict(self.diff)

    @property
    def method(self) -> str:
        """One phrase naming the CI and the test, for a report."""
        return f"{self.diff.method}, n = {self.diff.n}, {self.test} p"

    def __str__(self) -> str:
        name = "permutation" if "permutation" in self.test else self.test
        return f"{self.diff} ({self.diff.method}; {name} p = {self.p_value:.2g})"


def mean_ci(values: np.ndarray, *, resamples: int = 5000, seed: int = 0) -> Interval:
    """Mean with a 95% CI chosen by the unit count: t-interval below `SMALL_N` values, else BCa bootstrap."""
    x = np.asarray(values, np.float64)
    if np.isfinite(x).sum() < SMALL_N:
        return t_interval(x)
    return bootstrap_mean(x, resamples=resamples, seed=seed)


def paired(a: np.ndarray, b: np.ndarray, *, resamples: int = 5000, seed: int = 0,
           exact_max: int = 20, samples: int = 100_000) -> Comparison:
    """a − b on the same units ([N] each: seeds, or examples). Below `SMALL_N` units: t-interval of the
    mean difference, exact (or, above `exact_max`, Monte Carlo) sign-flip permutation p, and the paired
    t-test's p as `t_p`. Otherwise: BCa bootstrap CI and Wilcoxon's p, as `paired_difference`."""
    d = _paired(a, b)
    if len(d) < SMALL_N:
        test = "exact sign-flip permutation" if len(d) <= exact_max else "Monte Carlo sign-flip permutation"
        return Comparison(t_interval(d), sign_flip_p(d, exact_max=exact_max, samples=samples, seed=seed), test,
                          paired_t_p(d, np.zeros_like(d)))
    pd = paired_difference(a, b, resamples=resamples, seed=seed)
    return Comparison(pd.diff, pd.p_value, "Wilcoxon")


def _paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one shape, got {a.shape} and {b.shape}")
    d = a - b
    return d[np.isfinite(d)]


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


def machine_line(readme: Path, reuse: bool) -> str:
    """A report's 'Machine: …' line: with `reuse` (a `--report-only` rewrite, which runs nothing) the line
    already in `readme` when there is one, else this process's (`provenance`)."""
    if reuse and readme.exists():
        for line in readme.read_text().splitlines():
            if line.startswith("Machine:"):
                return line
    return provenance()
