"""When an EM run stops, and which of its iterations it keeps."""

import numpy as np

from mixexp._em import expert_shares
from mixexp._reseed import collapsed


def objective_converged(objective, previous, tol):
    """Whether the objective changed by less than `tol` since `previous`."""
    return previous is not None and abs(objective - previous) < tol


def objective_plateaued(history, tol, window=3):
    """Whether the last `window` iterations raised the best objective by < tol.

    For approximate EM (experts whose fit does not maximise the penalised
    likelihood EM scores): its objective may dip and recover around a
    plateau, changing by more than `tol` at each step yet going nowhere.
    """
    if len(history) <= window:
        return False
    return max(history[-window:]) - max(history[:-window]) < tol


def assignment_settled(next_assignment, assignment, before_last):
    """Whether hard EM's assignment stopped changing, or swings between two.

    Hard EM is not monotone: it may cycle between two assignments forever,
    so a return to the one before last also ends the run.
    """
    return np.array_equal(next_assignment, assignment) or (
        before_last is not None and np.array_equal(next_assignment, before_last)
    )


def abandons_an_expert(resp, mstep, sample_weight):
    """Whether the E-step took every row away from an expert fitted on some.

    Such an iteration is not kept as a run's best (hard EM, out-of-fold
    E-steps): its experts include one that explains nothing, yet its gate
    still trusts that expert somewhere.
    """
    n_samples = resp.shape[0]
    now = collapsed(expert_shares(resp, sample_weight), n_samples)
    fitted = ~collapsed(expert_shares(mstep, sample_weight), n_samples)
    return bool(np.any(now & fitted))
