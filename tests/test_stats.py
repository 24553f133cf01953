"""The reproductions' uncertainty: bootstrap CIs and seed/example-paired differences (scipy oracles)."""

import numpy as np
import pytest
from scipy import stats

from jaxattr.evaluation.stats import bootstrap_mean, paired_difference, provenance


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 30), rng.normal(1.0, 1.0, 3000)
    a, b = bootstrap_mean(small), bootstrap_mean(large)
    assert a.low < a.mean < a.high and b.low < b.mean < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5
    # close to the normal-theory interval mean ± 1.96 s.e. at large n
    se = large.std(ddof=1) / np.sqrt(len(large))
    assert b.low == pytest.approx(large.mean() - 1.96 * se, abs=0.02)
    assert b.high == pytest.approx(large.mean() + 1.96 * se, abs=0.02)


def test_constant_and_empty_inputs():
    c = bootstrap_mean(np.full(10, 0.5))
    assert (c.mean, c.low, c.high, c.n) == (0.5, 0.5, 0.5, 10)
    assert bootstrap_mean(np.array([np.nan])).n == 0


def test_two_seeds_are_never_resolved():
    """Two paired runs (e.g. two training seeds) give no CI: the comparison stays unresolved."""
    pd = paired_difference(np.array([0.864, 0.865]), np.array([0.881, 0.889]))
    assert pd.verdict == "unresolved" and np.isnan(pd.diff.low)
    assert str(pd.diff) == "-0.021 [no CI: n = 2]"


def test_paired_difference_resolves_a_shift_that_unpaired_noise_hides():
    """Large per-example variation shared by both methods: the paired test sees the shift of 0.05."""
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1.0, 200)
    a, b = base + 0.05 + rng.normal(0, 0.01, 200), base
    pd = paired_difference(a, b)
    assert pd.verdict == "a > b" and pd.diff.low > 0
    assert pd.p_value == pytest.approx(stats.wilcoxon(a - b).pvalue)
    assert paired_difference(b, a).verdict == "a < b"
    same = paired_difference(base + rng.normal(0, 0.01, 200), base)
    assert same.verdict == "unresolved" and same.p_value > 0.01


def test_paired_difference_needs_one_shape():
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(np.zeros(3), np.zeros(4))


def test_provenance_reads_the_machine_it_runs_on():
    import os

    import jax

    line = provenance()
    assert f"{os.cpu_count()} CPU cores, shared with other jobs" in line
    assert f"jax {jax.__version__} on {len(jax.devices())} {jax.devices()[0].device_kind} device(s)" in line
    assert "shared" not in provenance(shared=False)
