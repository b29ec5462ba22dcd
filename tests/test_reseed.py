"""Re-seeding of starved experts (mixexp._reseed): pure functions."""

import numpy as np
import pytest

from mixexp._em import soften
from mixexp._reseed import MAX_RESEEDS_PER_EXPERT, reseed, starving_experts


def _one_hot(owners, n_experts):
    return np.eye(n_experts)[owners]


def test_starving_experts_are_the_collapsed_ones_not_yet_reseeded_too_often():
    resp = soften(_one_hot([0, 0, 1, 1, 0, 1], 3), purity=1.0)  # expert 2 has none
    weights = np.ones(6)
    np.testing.assert_array_equal(
        starving_experts(resp, weights, np.zeros(3, int), None), [2]
    )
    capped = np.array([0, 0, MAX_RESEEDS_PER_EXPERT])
    assert starving_experts(resp, weights, capped, None).size == 0
    # A load floor also starves an expert with a small but real share.
    resp[0] = [0.7, 0.0, 0.3]
    assert starving_experts(resp, weights, np.zeros(3, int), None).size == 0
    np.testing.assert_array_equal(
        starving_experts(resp, weights, np.zeros(3, int), 0.1), [2]
    )


def test_reseed_gives_the_worst_explained_rows_and_leaves_no_expert_empty():
    owners = np.array([0, 0, 0, 0, 0, 1])
    resp = _one_hot(owners, 3)
    log_prob = np.array([-1.0, -9.0, -2.0, -8.0, -0.5, -10.0])
    before = resp.copy()
    new, reseeded = reseed(
        resp, np.array([2]), log_prob, np.zeros((6, 1)), np.ones(6), None
    )
    np.testing.assert_array_equal(resp, before)  # a new array: `resp` is kept
    np.testing.assert_array_equal(reseeded, [2])
    # A quota of n // K = 2 rows, the worst explained first; row 5 is worse
    # still, but it is expert 1's only row.
    moved = np.flatnonzero(new.argmax(axis=1) == 2)
    np.testing.assert_array_equal(moved, [1, 3])
    np.testing.assert_allclose(new[moved], soften(_one_hot([2, 2], 3)))
    np.testing.assert_array_equal(new[5], resp[5])
    np.testing.assert_allclose(new.sum(axis=1), 1.0)


def test_reseed_with_a_load_floor_splits_the_busiest_expert_along_its_axis():
    X = np.column_stack([np.arange(8.0), np.zeros(8)])
    owners = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    new, reseeded = reseed(_one_hot(owners, 3), np.array([2]), None, X, np.ones(8), 0.2)
    np.testing.assert_array_equal(reseeded, [2])
    moved = np.flatnonzero(new.argmax(axis=1) == 2)
    # Expert 0's six rows lie on a line: one side of their median goes.
    assert len(moved) == 3 and set(moved) in ({0, 1, 2}, {3, 4, 5})


def test_reseed_skips_an_expert_with_no_rows_to_take():
    resp = _one_hot([0, 1], 3)  # every expert that has rows has one
    new, reseeded = reseed(
        resp, np.array([2]), np.zeros(2), np.zeros((2, 1)), np.ones(2), None
    )
    assert reseeded.size == 0
    np.testing.assert_array_equal(new, resp)


@pytest.mark.parametrize("log_prob", [None, np.zeros(6)])
def test_reseed_ranks_rows_by_indecision_before_the_first_e_step(log_prob):
    resp = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.8, 0.2, 0.0]] * 2)
    new, _ = reseed(resp, np.array([2]), log_prob, np.zeros((6, 1)), np.ones(6), None)
    moved = np.flatnonzero(new.argmax(axis=1) == 2)
    if log_prob is None:  # the most undecided rows
        np.testing.assert_array_equal(moved, [1, 4])
    else:  # ties: the first rows, in order
        np.testing.assert_array_equal(moved, [0, 1])
