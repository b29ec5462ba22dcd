"""When an EM run stops, and which iteration it keeps (mixexp._convergence)."""

import numpy as np

from mixexp._convergence import (
    abandons_an_expert,
    assignment_settled,
    objective_converged,
)


def test_objective_converged_needs_a_previous_value_and_a_small_change():
    assert not objective_converged(-1.0, None, 1e-4)
    assert objective_converged(-1.00001, -1.0, 1e-4)
    assert not objective_converged(-1.001, -1.0, 1e-4)
    assert objective_converged(-0.99999, -1.0, 1e-4)  # a dip counts too


def test_assignment_settled_on_a_fixed_point_or_a_two_cycle():
    a, b, c = (np.eye(2)[[i, 1 - i, 0]] for i in (0, 1, 0))
    assert assignment_settled(a, a, None)
    assert assignment_settled(a, b, a)  # back to the one before last
    assert not assignment_settled(a, b, None)
    assert not assignment_settled(b, a, c)


def test_abandons_an_expert_fitted_on_rows_that_the_e_step_took_away():
    weights = np.ones(4)
    mstep = np.eye(2)[[0, 0, 1, 1]]
    assert not abandons_an_expert(mstep, mstep, weights)
    taken = np.eye(2)[[0, 0, 0, 0]]
    assert abandons_an_expert(taken, mstep, weights)
    # An expert that had no rows to begin with is not abandoned.
    assert not abandons_an_expert(taken, taken, weights)
