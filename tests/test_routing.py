"""Pooling weights, Switch routing and capacity assignment."""

import numpy as np
import pytest

from mixexp.routing import (
    _training_weights,
    capacity_assign,
    expert_capacity,
    load_balance,
    switch_route,
    top_k_weights,
)


@pytest.fixture
def gate():
    return np.random.RandomState(0).dirichlet(np.ones(4), size=200)


def test_expert_capacity_rounds_up():
    assert expert_capacity(100, 3, 1.0) == 34
    assert expert_capacity(100, 4, 1.0) == 25
    assert expert_capacity(100, 4, 1.25) == 32
    assert expert_capacity(10, 4, 0.5) == 2


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_top_k_weights_keep_the_k_largest(gate, k):
    weights = top_k_weights(gate, k)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert np.all(np.count_nonzero(weights, axis=1) == k)
    # The kept experts are the k most probable, in the gate's proportions.
    kept = weights > 0
    for row, mask in zip(gate, kept, strict=True):
        assert row[mask].min() >= row[~mask].max(initial=0.0)
    expected = gate * kept
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(weights, expected)


def test_top_k_extremes(gate):
    np.testing.assert_array_equal(top_k_weights(gate, 4), gate)
    np.testing.assert_array_equal(
        np.argmax(top_k_weights(gate, 1), axis=1), np.argmax(gate, axis=1)
    )


def test_top_k_ties_go_to_the_lower_index():
    weights = top_k_weights(np.array([[0.25, 0.25, 0.25, 0.25]]), 2)
    np.testing.assert_array_equal(weights, [[0.5, 0.5, 0.0, 0.0]])


def test_switch_route_respects_capacity_and_priority(gate):
    routes = switch_route(gate, capacity_factor=1.0)
    capacity = expert_capacity(200, 4, 1.0)
    counts = np.bincount(routes[routes >= 0], minlength=4)
    assert np.all(counts <= capacity)
    top = np.argmax(gate, axis=1)
    # A row routed anywhere goes to its first choice.
    routed = routes >= 0
    np.testing.assert_array_equal(routes[routed], top[routed])
    # Within an expert, every kept row is more confident than every dropped one.
    for k in range(4):
        kept = gate[(routes == k), k]
        dropped = gate[(top == k) & (routes < 0), k]
        if kept.size and dropped.size:
            assert kept.min() >= dropped.max()


def test_switch_route_drops_less_as_capacity_grows(gate):
    dropped = [np.mean(switch_route(gate, f) < 0) for f in (0.5, 1.0, 1.25, 2.0, 4.0)]
    assert dropped == sorted(dropped, reverse=True)
    assert dropped[-1] == 0.0
    assert dropped[0] >= 0.5  # half the slots cannot hold every row


def test_switch_route_top_2(gate):
    routes = switch_route(gate, capacity_factor=2.0, top_k=2)
    assert routes.shape == (200, 2)
    ranked = np.argsort(-gate, axis=1, kind="stable")
    for rank in range(2):
        routed = routes[:, rank] >= 0
        np.testing.assert_array_equal(routes[routed, rank], ranked[routed, rank])
        counts = np.bincount(routes[routed, rank], minlength=4)
        assert np.all(counts <= expert_capacity(200, 4, 2.0))


def test_switch_route_refuses_bad_input(gate):
    with pytest.raises(ValueError, match="capacity_factor"):
        switch_route(gate, capacity_factor=0.0)
    with pytest.raises(ValueError, match="top_k"):
        switch_route(gate, top_k=5)
    with pytest.raises(ValueError, match="2-D"):
        switch_route(gate[0])


@pytest.mark.parametrize("overflow", ["next", "drop"])
def test_capacity_assign_never_exceeds_capacity(gate, overflow):
    capacity = 40
    assignment = capacity_assign(gate, capacity, overflow)
    counts = np.bincount(assignment[assignment >= 0], minlength=4)
    assert np.all(counts <= capacity)
    if overflow == "next":
        # Enough room overall (4 x 40 < 200 would not be): all 160 slots fill.
        assert counts.sum() == 160
    else:
        top = np.argmax(gate, axis=1)
        kept = assignment >= 0
        np.testing.assert_array_equal(assignment[kept], top[kept])


def test_capacity_assign_next_choice_has_room():
    priority = np.array([[0.6, 0.3, 0.1], [0.7, 0.2, 0.1], [0.5, 0.1, 0.4]])
    np.testing.assert_array_equal(capacity_assign(priority, 1, "next"), [1, 0, 2])
    np.testing.assert_array_equal(capacity_assign(priority, 1, "drop"), [-1, 0, -1])
    np.testing.assert_array_equal(capacity_assign(priority, 3, "drop"), [0, 0, 0])


def test_load_balance_statistic():
    even = np.full((8, 4), 0.25)
    assert load_balance(even, np.arange(8) % 4) == pytest.approx(1.0)
    collapsed = np.zeros((8, 4))
    collapsed[:, 0] = 1.0
    assert load_balance(collapsed) == pytest.approx(4.0)
    # Dropped rows (-1) count for no expert.
    assert load_balance(collapsed, np.full(8, -1)) == 0.0


# ---------------------------------------------------------------------------
# Capacity during training


def test_soft_training_weights_without_capacity_are_the_posterior(gate):
    targets, mstep = _training_weights(gate, False, None, "next")
    assert targets is gate and mstep is gate


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 1.5])
def test_soft_capacity_keeps_each_experts_most_responsible_rows(gate, capacity_factor):
    targets, mstep = _training_weights(gate, False, capacity_factor, "next")
    assert targets is gate  # the gate still learns from every row
    capacity = expert_capacity(200, 4, capacity_factor)
    for k in range(4):
        kept = np.flatnonzero(mstep[:, k])
        assert kept.size == capacity
        np.testing.assert_array_equal(mstep[kept, k], gate[kept, k])
        assert gate[kept, k].min() >= np.delete(gate[:, k], kept).max()


def test_hard_training_weights_are_one_hot(gate):
    targets, mstep = _training_weights(gate, True, None, "next")
    np.testing.assert_array_equal(mstep, np.eye(4)[gate.argmax(axis=1)])
    assert targets is mstep


@pytest.mark.parametrize("overflow", ["next", "drop"])
def test_hard_capacity_follows_capacity_assign(gate, overflow):
    targets, mstep = _training_weights(gate, True, 1.0, overflow)
    assignment = capacity_assign(gate, expert_capacity(200, 4, 1.0), overflow)
    kept = assignment >= 0
    np.testing.assert_array_equal(mstep[kept], np.eye(4)[assignment[kept]])
    assert not mstep[~kept].any()
    # A dropped row's gate target stays its first choice.
    np.testing.assert_array_equal(targets[~kept], np.eye(4)[gate[~kept].argmax(axis=1)])
    np.testing.assert_array_equal(targets[kept], mstep[kept])
