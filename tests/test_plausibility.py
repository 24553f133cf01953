"""Plausibility metrics on hand-made rationales (values worked out by hand)."""

import numpy as np
import pytest

from jaxattr.evaluation.plausibility import plausibility


def test_a_map_that_ranks_the_rationale_first_scores_one():
    r = np.array([0, 1, 1, 0, 0], bool)
    p = plausibility(np.array([0.1, 0.9, 0.8, 0.2, 0.0]), r)
    assert p == (1.0, 1.0, 1.0)


def test_hand_computed_partial_overlap():
    # rationale {1, 2}; top-2 of the scores {1, 3}: intersection 1, union 3
    r = np.array([0, 1, 1, 0, 0], bool)
    s = np.array([0.0, 0.9, 0.1, 0.8, 0.2])
    p = plausibility(s, r)
    assert p.token_f1 == pytest.approx(0.5) and p.iou == pytest.approx(1 / 3)
    # ranking 1, 3, 4, 2, 0: precision at the relevant hits 1/1 and 2/4 -> AP = (1 + 0.5) / 2
    assert p.auprc == pytest.approx(0.75)
    # k = 3 takes {1, 3, 4}: F1 = 2·1/(3+2), IOU = 1/4
    p3 = plausibility(s, r, k=3)
    assert p3.token_f1 == pytest.approx(0.4) and p3.iou == pytest.approx(0.25)


def test_special_and_padding_positions_do_not_count():
    # position 0 ([CLS]) has the highest score but is not valid: the rationale is still ranked first
    s = np.array([5.0, 0.9, 0.1, 0.0])
    r = np.array([0, 1, 0, 0], bool)
    valid = np.array([0, 1, 1, 0], bool)
    assert plausibility(s, r, valid) == (1.0, 1.0, 1.0)
    assert plausibility(s, r).token_f1 == 0.0  # counting [CLS] the top-1 misses


def test_empty_rationale_is_nan_and_shapes_must_match():
    assert all(np.isnan(plausibility(np.ones(3), np.zeros(3, bool))))
    with pytest.raises(ValueError, match="one shape"):
        plausibility(np.ones(3), np.ones(4, bool))
