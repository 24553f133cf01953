"""The reproductions' uncertainty: bootstrap CIs and seed/example-paired differences (scipy oracles); for few
units, t-intervals and the exact sign-flip permutation test; Holm's correction (hand-computed values)."""

import numpy as np
import pytest
from scipy import stats

from jaxattr.evaluation.stats import (
    SMALL_N,
    bootstrap_mean,
    holm,
    mean_ci,
    paired,
    paired_difference,
    paired_t_p,
    provenance,
    rank_side,
    sign_flip_p,
    t_interval,
)


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


# ---- few units: t-interval, exact sign-flip permutation test; Holm ----


def test_t_interval_is_scipys_student_interval():
    x = np.array([0.861, 0.874, 0.866, 0.880, 0.859])
    ci = t_interval(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (ci.low, ci.high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert ci.method == "t-interval" and ci.n == 5
    # n = 3: the half-width uses t_2 = 4.303, not the normal 1.96
    y = np.array([1.0, 2.0, 3.0])
    assert t_interval(y).high - 2.0 == pytest.approx(4.302652729911275 * 1.0 / np.sqrt(3), rel=1e-9)
    assert np.isnan(t_interval(np.array([0.5])).low)


def test_sign_flip_p_by_hand():
    # ±1 ±2 ±3: signed sums 6, 4, 2, 0, 0, −2, −4, −6; |sum| ≥ 6 in 2 of 8 patterns
    assert sign_flip_p(np.array([1.0, 2.0, 3.0])) == 0.25
    # |d| = 1, 2, 3, 1, observed sum 5: |sum| ≥ 5 when the flipped |d| sum to 0, 1, 6 or 7: 1 + 2 + 2 + 1 of 16
    assert sign_flip_p(np.array([1.0, 2.0, 3.0, -1.0])) == 6 / 16
    assert sign_flip_p(np.array([0.01] * 5)) == 2 / 32  # the floor 2/2^n
    assert sign_flip_p(np.zeros(4)) == 1.0


def test_sign_flip_p_matches_scipy_exact_permutation_test():
    d = np.random.default_rng(3).normal(0.3, 1.0, 11)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                 alternative="two-sided").pvalue
    assert sign_flip_p(d) == pytest.approx(ref, abs=1e-12)


def test_sign_flip_p_monte_carlo_is_seeded_and_close_to_exact():
    d = np.random.default_rng(4).normal(0.4, 1.0, 14)
    exact = sign_flip_p(d)
    mc = sign_flip_p(d, exact_max=5, samples=40_000, seed=1)
    assert mc == sign_flip_p(d, exact_max=5, samples=40_000, seed=1)
    assert mc == pytest.approx(exact, abs=0.01) and mc != exact


def test_holm_textbook_example():
    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> 4·0.005, 3·0.01, 2·0.03, max(1·0.04, 0.06) (R's p.adjust "holm")
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    out = holm([0.02, np.nan, 0.01])  # NaN left out of the family (m = 2)
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    assert holm([0.04]).tolist() == [0.04]


def test_paired_picks_the_method_by_unit_count():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.87, 0.01, 3), rng.normal(0.85, 0.01, 3)
    few = paired(a, b)
    d = a - b
    assert few.diff.method == "t-interval" and few.test == "exact sign-flip permutation"
    assert few.p_value == sign_flip_p(d) and few.p_value >= 0.25  # 3 seeds: the permutation floor
    assert few.t_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert few.diff.low == pytest.approx(t_interval(d).low)
    assert "t-interval" in str(few) and "permutation p" in str(few)
    x, y = rng.normal(0, 1, SMALL_N), rng.normal(0, 1, SMALL_N)
    many = paired(x, y)
    assert many.diff.method == "BCa bootstrap" and many.test == "Wilcoxon" and np.isnan(many.t_p)
    assert many.p_value == pytest.approx(stats.wilcoxon(x - y).pvalue)
    assert mean_ci(x[:SMALL_N - 1]).method == "t-interval" and mean_ci(x).method == "BCa bootstrap"


def test_paired_t_p_margin_and_constant_differences():
    a, b = np.array([0.86, 0.87, 0.85]), np.array([0.87, 0.875, 0.86])
    assert paired_t_p(a, b, margin=-0.02, alternative="greater") == pytest.approx(
        stats.ttest_1samp(a - b, -0.02, alternative="greater").pvalue)
    assert paired_t_p(np.ones(3), np.zeros(3)) == 0.0 and paired_t_p(np.ones(3), np.ones(3)) == 1.0
    with pytest.raises(ValueError, match="one shape"):
        paired(np.zeros(3), np.zeros(4))


def test_rank_side_leans_as_scipys_one_sided_wilcoxon():
    rng = np.random.default_rng(3)
    for shift in (-0.4, 0.4):
        d = rng.normal(shift, 1.0, 40)
        greater = stats.wilcoxon(d, alternative="greater").pvalue
        assert rank_side(d) == (1 if greater < 0.5 else -1)
    assert rank_side(np.array([3.0, -1.0, -2.0])) == 0  # W+ = W− = 3
    assert rank_side(np.array([0.0, np.nan])) == 0
