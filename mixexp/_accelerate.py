"""Squared extrapolation of EM (SQUAREM), as pure functions of arrays.

EM's objective climbs quickly at first, then creeps: near a maximum each
iteration closes about the same share of the remaining gap, and with many
experts that share is small. SQUAREM (Varadhan and Roland, 2008) looks at
two successive EM steps from a point ``p0``, ``p1 = F(p0)`` and ``p2 =
F(p1)``, and jumps along the path they trace::

    r = p1 - p0,  v = p2 - 2 p1 + p0,  step = ||r|| / ||v||
    p = p0 + 2 step r + step**2 v

A step of 1 gives ``p2`` itself, EM's own second step. A jump is kept
under a safeguard: the caller scores the objective at ``p`` (an E-step
there) and keeps ``p`` only if it scores at least as high as ``p2``;
otherwise it tries shorter steps, then falls back to ``p2``, so the
objective never goes down. The step is bounded, and the bound adapts: it
grows while jumps reach it and shrinks after refusals.

References
----------
R. Varadhan and C. Roland, "Simple and globally convergent methods for
accelerating the convergence of any EM algorithm", Scandinavian Journal of
Statistics 35(2), 2008 (the step is their S3).
"""

import numpy as np

# The longest step allowed at first, and by how much the bound grows each
# time a jump reaches it: SQUAREM's defaults (a first jump at most EM's own
# step).
STEP_BOUND_START = 1.0
STEP_BOUND_FACTOR = 4.0
# Shorter steps tried after a refused one: the E-step each costs is a
# small part of an EM iteration's cost (whose gate and experts' M-steps
# pass over X several times).
MAX_BACKTRACKS = 2


def squarem_step(p0, p1, p2):
    """The S3 step length of the jump from `p0` along ``p1``, ``p2``.

    Parameters
    ----------
    p0, p1, p2 : ndarray of shape (n_parameters,)
        A point and two successive EM steps from it.

    Returns
    -------
    float
        ``||r|| / ||v||``, at least 1 (never shorter than EM's two steps);
        1 when the steps do not curve (``v`` is 0) or are not finite.
    """
    r = p1 - p0
    v = p2 - p1 - r
    r_norm, v_norm = np.linalg.norm(r), np.linalg.norm(v)
    if not (np.isfinite(r_norm) and np.isfinite(v_norm)) or v_norm == 0.0:
        return 1.0
    return max(1.0, float(r_norm / v_norm))


def extrapolate(p0, p1, p2, step):
    """SQUAREM's point ``p0 + 2 step r + step**2 v``; `p2` at step 1."""
    r = p1 - p0
    v = p2 - p1 - r
    return p0 + (2.0 * step) * r + (step * step) * v


def standardised_linear(coef, intercept, mean, scale, y_scale):
    """A linear function ``x @ coef + intercept`` on standardised x and y.

    ``[intercept + mean @ coef, coef * scale] / y_scale``: the function of
    ``(x - mean) / scale`` that predicts ``y / y_scale`` (up to a constant,
    which no difference of points sees).
    """
    coef = np.ravel(coef)
    return np.concatenate([[intercept + mean @ coef], coef * scale]) / y_scale


def linear_of_standardised(theta, mean, scale, y_scale):
    """``(coef, intercept)`` of `theta`, inverting :func:`standardised_linear`."""
    coef = theta[1:] * (y_scale / scale)
    return coef, float(theta[0] * y_scale - mean @ coef)


def backtracked(step):
    """The steps tried in turn: `step`, then halfway back towards 1 each
    time, `MAX_BACKTRACKS` times."""
    steps = [step]
    for _ in range(MAX_BACKTRACKS):
        steps.append(1.0 + 0.5 * (steps[-1] - 1.0))
    return steps


def next_step_bound(bound, first, kept):
    """The step bound after a jump whose first step was `first` (at most
    `bound`) and whose `kept` step is that, a shorter one, or None.

    A jump kept at the bound raises it; one kept only once shortened sets
    it to the kept step; one refused at every step lowers it to below the
    shortest tried (not below 1: no jump at all, which raises it again).
    """
    if kept is None:
        return max(1.0, backtracked(first)[-1] / STEP_BOUND_FACTOR)
    if kept < first:
        return kept
    if kept >= bound:
        return bound * STEP_BOUND_FACTOR
    return bound


class Squarem:
    """The EM points since the last jump, and the bound of the next step.

    `add` each EM iteration's parameters; every second one (three points)
    a jump is due: try `point_at` each of `steps` in turn, then `settle` on
    the step kept (or none). A jump kept or not, its point or EM's, is where
    the next two EM steps start.
    """

    def __init__(self):
        self.points = []
        self.bound = STEP_BOUND_START
        self._first = None

    def add(self, point):
        """Record EM's `point`; return whether a jump is due.

        Not when its step would be 1: the jump would land on EM's point.
        """
        self.points.append(point)
        if len(self.points) < 3:
            return False
        self._first = min(squarem_step(*self.points), self.bound)
        if self._first == 1.0:
            # EM's point, as a jump at the bound would be kept: a bound
            # that refusals brought down to 1 grows again.
            self.settle(1.0)
            return False
        return True

    def steps(self):
        """The steps to try, longest first."""
        return backtracked(self._first)

    def point_at(self, step):
        return extrapolate(*self.points, step)

    def settle(self, kept):
        """Go on from the jump at step `kept`, or from EM's point (None)."""
        self.bound = next_step_bound(self.bound, self._first, kept)
        self.points = [self.points[-1] if kept is None else self.point_at(kept)]

    def restart(self):
        """Forget the points (EM's steps no longer follow from them)."""
        self.points = []
