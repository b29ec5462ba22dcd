"""Pooling and routing: which experts a row goes to, and with what weight.

Two uses, kept apart on purpose:

- **Prediction** is row-wise: a row's pooled output depends only on its own
  gate probabilities (:func:`top_k_weights`), never on the other rows of
  the batch.
- **Capacity** only makes sense for a batch of rows competing for experts
  (the Switch Transformer's expert capacity, Fedus, Zoph and Shazeer,
  2021): :func:`switch_route` routes a batch under Switch rules for
  teaching and analysis, and :func:`capacity_assign` limits the rows each
  expert is fitted on during training.
"""

import math
import numbers

import numpy as np
from sklearn.utils._param_validation import Interval, validate_params

from mixexp._em import harden

__all__ = [
    "capacity_assign",
    "expert_capacity",
    "load_balance",
    "switch_route",
    "top_k_weights",
]


def expert_capacity(n_rows, n_experts, capacity_factor):
    """Return the number of rows an expert may take in a batch.

    The capacity is ``ceil(n_rows / n_experts * capacity_factor)``: an even
    share of the batch, scaled by `capacity_factor` and rounded up.

    Parameters
    ----------
    n_rows : int
        Rows in the batch.
    n_experts : int
        Number of experts.
    capacity_factor : float
        Slack over an even split; 1.0 means exactly an even share (rounded
        up), above 1.0 leaves room for uneven loads.

    Returns
    -------
    int
        The most rows any one expert may take.

    See Also
    --------
    capacity_assign : Assign each row to one expert within this capacity.
    switch_route : Route a batch of rows under Switch Transformer rules.
    mixexp.MixtureOfExpertsRegressor : Its ``capacity_factor`` limits the
        rows each expert is fitted on to this capacity.

    Examples
    --------
    >>> from mixexp.routing import expert_capacity
    >>> expert_capacity(100, 3, 1.25)
    42
    """
    return math.ceil(n_rows / n_experts * capacity_factor)


def top_k_weights(gate_proba, k):
    """Keep each row's `k` largest gate probabilities, renormalised.

    Parameters
    ----------
    gate_proba : ndarray of shape (n_rows, n_experts)
        Rows sum to 1.
    k : int
        Experts kept per row; ties go to the lower expert index.

    Returns
    -------
    ndarray of shape (n_rows, n_experts)
        Zero outside each row's top `k`; rows sum to 1. ``k=1`` is the
        most trusted expert alone, ``k=n_experts`` the gate itself.

    See Also
    --------
    switch_route : Route a batch of rows to their top experts under a
        capacity.
    load_balance : The Switch Transformer's load-balancing statistic.
    mixexp.MixtureOfExpertsRegressor : Its ``top_k`` pools each row's `k`
        most trusted experts with these weights.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.routing import top_k_weights
    >>> top_k_weights(np.array([[0.5, 0.3, 0.2]]), k=2)
    array([[0.625, 0.375, 0.   ]])
    """
    n_rows, n_experts = gate_proba.shape
    if k >= n_experts:
        return gate_proba.copy()
    top = _ranked_choices(gate_proba)[:, :k]
    rows = np.arange(n_rows)[:, np.newaxis]
    weights = np.zeros_like(gate_proba)
    weights[rows, top] = gate_proba[rows, top]
    total = weights.sum(axis=1, keepdims=True)
    # A row whose top-k probabilities all underflowed keeps its first choice.
    empty = total[:, 0] <= 0
    weights[empty, top[empty, 0]] = 1.0
    total[empty] = 1.0
    return weights / total


def _ranked_choices(priority):
    """Experts of each row from the most to the least preferred (stable)."""
    return np.argsort(-priority, axis=1, kind="stable")


def _accept(choice, priority, room):
    """Which candidates an expert accepts: the best ones, up to its room.

    Parameters
    ----------
    choice : ndarray of shape (m,)
        Expert each candidate asks for.
    priority : ndarray of shape (m,)
        Higher goes first; ties keep the candidates' order.
    room : ndarray of shape (n_experts,)
        Places left per expert.
    """
    order = np.lexsort((-priority, choice))
    sorted_choice = choice[order]
    place = np.arange(order.shape[0]) - np.searchsorted(sorted_choice, sorted_choice)
    accepted = np.empty(order.shape[0], dtype=bool)
    accepted[order] = place < room[sorted_choice]
    return accepted


def capacity_assign(priority, capacity, overflow="next"):
    """Assign each row to one expert, no expert taking more than `capacity`.

    Each row asks for its most preferred expert; each expert takes the rows
    that prefer it most, up to `capacity`. With ``overflow="next"`` a row
    turned away asks its next choice that still has room, and so on; with
    ``overflow="drop"`` it is left unassigned.

    Parameters
    ----------
    priority : ndarray of shape (n_rows, n_experts)
        How much each row prefers each expert (gate probabilities or
        responsibilities).
    capacity : int
        Rows each expert may take.
    overflow : {"next", "drop"}, default="next"
        Where a row turned away by a full expert goes: ``"next"``, to its
        next choice that still has room; ``"drop"``, nowhere (``-1``).

    Returns
    -------
    ndarray of shape (n_rows,)
        Expert of each row, or -1 for a row left out.

    See Also
    --------
    expert_capacity : The capacity of each expert for a batch of rows.
    switch_route : Route a batch of rows under Switch Transformer rules.
    load_balance : The Switch Transformer's load-balancing statistic.
    mixexp.MixtureOfExpertsRegressor : Its ``capacity_factor`` and
        ``overflow`` assign rows this way under ``training="hard"``.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.routing import capacity_assign
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    >>> capacity_assign(p, capacity=2)
    array([0, 0, 1])
    >>> capacity_assign(p, capacity=2, overflow="drop")
    array([ 0,  0, -1])
    """
    n_rows, n_experts = priority.shape
    ranked = _ranked_choices(priority)
    assignment = np.full(n_rows, -1)
    room = np.full(n_experts, capacity)
    n_rounds = n_experts if overflow == "next" else 1
    for rank in range(n_rounds):
        waiting = np.flatnonzero(assignment < 0)
        if waiting.size == 0 or not np.any(room > 0):
            break
        choice = ranked[waiting, rank]
        accepted = _accept(choice, priority[waiting, choice], room)
        assignment[waiting[accepted]] = choice[accepted]
        room -= np.bincount(choice[accepted], minlength=n_experts)
    return assignment


def _training_weights(posterior, hard, capacity_factor, overflow):
    """Gate targets and M-step weights of a training batch (an EM step).

    Soft EM uses the posterior responsibilities themselves; hard EM each
    row's most responsible expert. A capacity then limits the rows each
    expert is fitted on: under hard EM by Switch rules (rows beyond an
    expert's capacity go to their next choice, or are dropped, see
    :func:`capacity_assign`), under soft EM by keeping each expert's most
    responsible rows.

    Parameters
    ----------
    posterior : ndarray of shape (n_rows, n_experts)
        Responsibilities; rows sum to 1.
    hard : bool
        Whether each row goes to one expert (hard EM).
    capacity_factor : float or None
        See :func:`expert_capacity`; None means no limit.
    overflow : {"next", "drop"}
        Where a row turned away by a full expert goes, under hard EM.

    Returns
    -------
    targets : ndarray of shape (n_rows, n_experts)
        What the gate is fitted to.
    mstep : ndarray of shape (n_rows, n_experts)
        Each expert's row weights (zero for rows it does not take).
    """
    if not hard:
        targets = posterior
        if capacity_factor is None:
            return targets, targets
        n_rows, n_experts = posterior.shape
        capacity = expert_capacity(n_rows, n_experts, capacity_factor)
        mstep = np.zeros_like(posterior)
        if capacity >= n_rows:
            return targets, posterior
        top = np.argpartition(-posterior, capacity - 1, axis=0)[:capacity]
        columns = np.arange(n_experts)[np.newaxis, :]
        mstep[top, columns] = posterior[top, columns]
        return targets, mstep
    one_hot = harden(posterior)
    if capacity_factor is None:
        return one_hot, one_hot
    n_rows, n_experts = posterior.shape
    capacity = expert_capacity(n_rows, n_experts, capacity_factor)
    assignment = capacity_assign(posterior, capacity, overflow)
    kept = np.flatnonzero(assignment >= 0)
    mstep = np.zeros_like(posterior)
    mstep[kept, assignment[kept]] = 1.0
    targets = one_hot.copy()
    targets[kept] = mstep[kept]
    return targets, mstep


@validate_params(
    {
        "gate_proba": ["array-like"],
        "capacity_factor": [Interval(numbers.Real, 0, None, closed="neither")],
        "top_k": [Interval(numbers.Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def switch_route(gate_proba, capacity_factor=1.0, top_k=1):
    """Route a batch of rows to experts under Switch Transformer rules.

    Each row is sent to its `top_k` most probable experts. Every expert has
    a capacity of ``ceil(n_rows / n_experts * capacity_factor)`` rows per
    choice rank; within an expert, rows are taken in order of their gate
    probability for it, and rows beyond its capacity overflow (``-1``).
    First choices are served before second choices. This is what a batch of
    tokens meets in a Switch layer; mixexp's ``predict`` never does it (a
    row's prediction must not depend on the rest of the batch), but it
    shows the trade-off a capacity factor sets: dropped rows against padded
    (unused) expert slots.

    Parameters
    ----------
    gate_proba : array-like of shape (n_rows, n_experts)
        Gate probabilities, for example ``moe.predict_gate(X)``.
    capacity_factor : float, default=1.0
        Slack of each expert's capacity over an even split.
    top_k : int, default=1
        Experts each row is sent to.

    Returns
    -------
    ndarray of shape (n_rows,) if ``top_k == 1``, else (n_rows, top_k)
        Expert index of each row (each of its choices), ``-1`` where the row
        overflowed.

    See Also
    --------
    expert_capacity : The capacity of each expert for a batch of rows.
    capacity_assign : Assign each row to one expert, overflowing to its
        next choice.
    top_k_weights : Row-wise pooling weights of each row's top experts.
    load_balance : The Switch Transformer's load-balancing statistic.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.routing import switch_route
    >>> gate = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    >>> switch_route(gate, capacity_factor=1.0)
    array([ 0,  0, -1,  1])
    >>> switch_route(gate, capacity_factor=1.5)
    array([0, 0, 0, 1])
    """
    gate_proba = np.asarray(gate_proba, dtype=np.float64)
    if gate_proba.ndim != 2:
        raise ValueError(
            f"gate_proba must be 2-D (n_rows, n_experts); got shape {gate_proba.shape}."
        )
    n_rows, n_experts = gate_proba.shape
    if top_k > n_experts:
        raise ValueError(f"top_k={top_k} exceeds the number of experts {n_experts}.")
    capacity = expert_capacity(n_rows, n_experts, capacity_factor)
    ranked = _ranked_choices(gate_proba)[:, :top_k]
    routes = np.full((n_rows, top_k), -1)
    rows = np.arange(n_rows)
    for rank in range(top_k):
        choice = ranked[:, rank]
        room = np.full(n_experts, capacity)
        accepted = _accept(choice, gate_proba[rows, choice], room)
        routes[accepted, rank] = choice[accepted]
    return routes[:, 0] if top_k == 1 else routes


def load_balance(gate_proba, assignment=None):
    """Compute the Switch Transformer's load-balancing statistic.

    ``n_experts * sum_k f_k * P_k``, where ``f_k`` is the share of rows
    dispatched to expert ``k`` (by default each row's most probable expert)
    and ``P_k`` the mean gate probability of expert ``k``. It is 1 when the
    load is spread evenly and reaches ``n_experts`` when one expert takes
    every row with certainty.

    Parameters
    ----------
    gate_proba : ndarray of shape (n_rows, n_experts)
        Gate probabilities of each row; rows sum to 1.
    assignment : ndarray of shape (n_rows,), default=None
        Expert each row is dispatched to, ``-1`` for a row dispatched to
        none (it still counts in the number of rows, so dropped rows lower
        the statistic). None dispatches each row to its most probable
        expert.

    Returns
    -------
    float
        ``n_experts * sum_k f_k * P_k``: 1 when the rows and the gate
        probabilities are spread evenly over the experts, at most
        `n_experts`, reached when one expert takes every row with certainty.

    See Also
    --------
    switch_route : Route a batch of rows under Switch Transformer rules.
    capacity_assign : Assign each row to one expert within a capacity.
    mixexp.MixtureOfExpertsRegressor : Its ``load_balance_`` attribute is
        this statistic on the training data.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.routing import load_balance
    >>> float(load_balance(np.full((4, 2), 0.5), np.array([0, 1, 0, 1])))
    1.0
    >>> gate = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    >>> round(load_balance(gate), 4)
    1.15
    >>> round(load_balance(gate, np.array([0, 0, -1, 1])), 4)
    0.825
    """
    n_rows, n_experts = gate_proba.shape
    if assignment is None:
        assignment = np.argmax(gate_proba, axis=1)
    kept = assignment >= 0
    dispatched = np.bincount(assignment[kept], minlength=n_experts) / n_rows
    return n_experts * float(dispatched @ gate_proba.mean(axis=0))
