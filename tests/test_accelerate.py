"""SQUAREM's numerics (mixexp._accelerate) and the accelerated EM run."""

import itertools

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge

from mixexp import MixtureOfExpertsRegressor, _run
from mixexp._accelerate import (
    STEP_BOUND_FACTOR,
    Squarem,
    backtracked,
    extrapolate,
    linear_of_standardised,
    next_step_bound,
    squarem_step,
    standardised_linear,
)


def _linear_map(rate, fixed_point):
    """A contraction towards `fixed_point` at `rate`, as EM is near a maximum."""
    return lambda p: fixed_point + rate * (p - fixed_point)


@pytest.mark.parametrize("rate", [0.5, 0.9, 0.99])
def test_squarem_lands_on_the_fixed_point_of_a_linear_map(rate):
    rng = np.random.RandomState(0)
    fixed_point = rng.normal(size=5)
    step_of = _linear_map(rate, fixed_point)
    p0 = rng.normal(size=5)
    p1 = step_of(p0)
    p2 = step_of(p1)
    step = squarem_step(p0, p1, p2)
    assert step == pytest.approx(1 / (1 - rate))
    np.testing.assert_allclose(extrapolate(p0, p1, p2, step), fixed_point)


def test_a_step_of_one_is_em_own_second_step():
    rng = np.random.RandomState(1)
    p0, p1, p2 = rng.normal(size=(3, 4))
    np.testing.assert_allclose(extrapolate(p0, p1, p2, 1.0), p2)


def test_squarem_step_is_never_shorter_than_em():
    p0, p1 = np.zeros(3), np.ones(3)
    assert squarem_step(p0, p1, 2 * p1) == 1.0  # no curve: v is 0
    assert squarem_step(p0, p1, np.full(3, 5.0)) == 1.0  # ||v|| > ||r||
    assert squarem_step(p0, p1, np.full(3, np.nan)) == 1.0


def test_standardised_linear_functions_round_trip_and_ignore_units():
    rng = np.random.RandomState(2)
    coef, intercept = rng.normal(size=3), 0.7
    mean, scale, y_scale = rng.normal(size=3), rng.uniform(0.5, 2, 3), 3.0
    theta = standardised_linear(coef, intercept, mean, scale, y_scale)
    back_coef, back_intercept = linear_of_standardised(theta, mean, scale, y_scale)
    np.testing.assert_allclose(back_coef, coef)
    assert back_intercept == pytest.approx(intercept)
    # The same function of X scaled by 10 and y by 100: the same point.
    scaled = standardised_linear(
        coef * 10, intercept * 100, mean * 10, scale * 10, y_scale * 100
    )
    np.testing.assert_allclose(scaled, theta)


def test_backtracked_steps_shorten_towards_em():
    steps = backtracked(9.0)
    assert steps[0] == 9.0
    assert all(1.0 < b < a for a, b in itertools.pairwise(steps))


def test_step_bound_grows_at_the_bound_and_shrinks_on_refusal():
    assert next_step_bound(4.0, 4.0, 4.0) == 4.0 * STEP_BOUND_FACTOR
    assert next_step_bound(4.0, 2.0, 2.0) == 4.0  # kept below the bound
    assert next_step_bound(8.0, 8.0, 4.5) == 4.5  # kept once shortened
    refused = next_step_bound(8.0, 8.0, None)
    assert 1.0 <= refused < backtracked(8.0)[-1]
    assert next_step_bound(4.0, 1.5, None) == 1.0  # not below EM's step


def test_squarem_jumps_every_second_step_and_goes_on_from_the_kept_point():
    # Rates differing by coordinate: no jump lands on the fixed point.
    rates, fixed_point = np.array([0.5, 0.9, 0.95]), np.ones(3)

    def step_of(p):
        return fixed_point + rates * (p - fixed_point)

    squarem = Squarem()
    squarem.bound = 100.0
    point = np.zeros(3)
    assert not squarem.add(point)
    point = step_of(point)
    assert not squarem.add(point)
    point = step_of(point)
    assert squarem.add(point)
    step = squarem.steps()[0]
    jump = squarem.point_at(step)
    squarem.settle(step)
    np.testing.assert_array_equal(squarem.points[0], jump)
    assert np.linalg.norm(jump - fixed_point) < np.linalg.norm(point - fixed_point)
    # Refused at every step: EM's point, and a lower bound.
    point = step_of(step_of(jump))
    assert not squarem.add(step_of(jump))
    assert squarem.add(point)
    squarem.settle(None)
    np.testing.assert_array_equal(squarem.points[0], point)
    assert squarem.bound < 100.0


def test_a_bound_brought_down_to_one_grows_again():
    squarem = Squarem()
    squarem.bound = 1.0
    step_of = _linear_map(0.9, np.ones(2))
    point = np.zeros(2)
    for _ in range(3):
        squarem.add(point)
        point = step_of(point)
    assert squarem.bound == STEP_BOUND_FACTOR


def _curved_data(seed=0, n_samples=3000):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, 6))
    y = 3 * np.sin(2 * X[:, 0]) + 2 * np.abs(X[:, 1]) + rng.normal(0, 0.3, n_samples)
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("seed", [0, 1])
def test_accelerated_em_never_lowers_the_objective(seed):
    X, y = _curved_data(seed)
    jumps = []
    original = _run._jump

    def counted(*args):
        jumps.append(args[-1])
        return original(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_run, "_jump", counted)
        moe = MixtureOfExpertsRegressor(
            n_experts=8, max_iter=40, tol=0.0, random_state=seed
        ).fit(X, y)
    assert jumps  # the run was accelerated
    history = np.asarray(moe.lower_bounds_)
    assert len(history) == moe.n_iter_ == 40
    assert np.all(np.diff(history) >= 0)
    # The fitted model is the point the last objective was scored at.
    expected = moe.log_likelihood(X, y).mean() - moe.gate_.penalty_ / len(y)
    assert moe.lower_bound_ == pytest.approx(expected, rel=1e-10)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "params",
    [
        {"expert": Ridge()},
        {"expert": LinearRegression(fit_intercept=False), "gate": "constant"},
        {"training": "hard"},
        {"capacity_factor": 1.5},
    ],
    ids=["ridge experts", "constant gate", "hard EM", "capacity"],
)
def test_only_the_parametric_case_is_accelerated(params):
    X, y = _curved_data(n_samples=600)
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_run, "_jump", lambda *args: calls.append(args))
        MixtureOfExpertsRegressor(
            n_experts=8, max_iter=10, random_state=0, **params
        ).fit(X, y)
    assert not calls
