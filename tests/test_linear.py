"""The normal-equation M-step of linear experts equals LinearRegression.fit."""

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge

from mixexp import MixtureOfExpertsRegressor
from mixexp._linear import fit_linear_regressions, is_plain_linear_regression
from mixexp.datasets import make_regimes


def fit_linear_regression(estimator, X, y, sample_weight):
    """One expert alone: the stacked fit of a single problem."""
    return fit_linear_regressions([estimator], [X], y, [sample_weight], [None])[0]


FITTED = ("coef_", "intercept_", "rank_", "singular_", "n_features_in_")


def _problem(seed, n_samples=300, n_features=4, n_targets=None, offset=0.0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, n_features)) * rng.uniform(0.1, 10, n_features)
    X += offset
    shape = n_samples if n_targets is None else (n_samples, n_targets)
    y = rng.normal(size=shape) + (X[:, 0] if n_targets is None else X[:, :1])
    weights = rng.uniform(0, 2, n_samples)
    weights[rng.rand(n_samples) < 0.2] = 0.0
    return X, y, weights


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("n_targets", [None, 1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_fit_as_linear_regression(seed, n_targets, fit_intercept):
    X, y, weights = _problem(seed, n_targets=n_targets, offset=100.0 * seed)
    expected = LinearRegression(fit_intercept=fit_intercept).fit(X, y, weights)
    fitted = fit_linear_regression(
        LinearRegression(fit_intercept=fit_intercept), X, y, weights
    )
    for name in FITTED:
        got, want = getattr(fitted, name), getattr(expected, name)
        assert np.shape(got) == np.shape(want), name
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(fitted.predict(X), expected.predict(X), rtol=1e-10)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("subset", [False, True])
def test_fits_summed_over_blocks_of_rows(fit_intercept, subset, order, monkeypatch):
    """Blocks of 256 rows, the first with no weight, centred each on its own
    mean and merged: the same fit as LinearRegression on data far from the
    origin (where a careless centring loses digits), from either layout."""
    from mixexp import _linear

    monkeypatch.setattr(_linear, "_BLOCK_BYTES", 8 * 256 * 3)  # 2 features, 1 target
    rng = np.random.RandomState(0)
    X = rng.normal(size=(1100, 2)) * [1.0, 0.1]
    if fit_intercept:  # without one, such columns would be nearly collinear
        X += [1e4, -3e3]
    y = X @ [2.0, -1.0] + rng.normal(size=1100)
    weights = rng.uniform(0, 2, 1100)
    weights[:300] = 0.0
    rows = np.flatnonzero(rng.rand(1100) < 0.7) if subset else None
    picked = slice(None) if rows is None else rows
    X = np.asarray(X, order=order)  # column-major: gathered from its transpose
    expected = LinearRegression(fit_intercept=fit_intercept)
    expected.fit(X[picked], y[picked], weights[picked])
    fitted = fit_linear_regressions(
        [LinearRegression(fit_intercept=fit_intercept)], [X], y, [weights], [rows]
    )[0]
    np.testing.assert_allclose(fitted.coef_, expected.coef_, rtol=1e-8)
    np.testing.assert_allclose(fitted.predict(X), expected.predict(X), rtol=1e-10)


def test_unweighted_fit_matches():
    X, y, _ = _problem(3)
    fitted = fit_linear_regression(LinearRegression(), X, y, None)
    np.testing.assert_allclose(fitted.coef_, LinearRegression().fit(X, y).coef_)


def test_rank_deficient_columns_predict_like_linear_regression():
    X, y, weights = _problem(4, n_features=3)
    X = np.column_stack([X, 2.0 * X[:, 0] - X[:, 1], np.full(len(X), 7.0)])
    expected = LinearRegression().fit(X, y, weights)
    fitted = fit_linear_regression(LinearRegression(), X, y, weights)
    # The two dependent columns are found (LinearRegression's SVD may count
    # a rounding-error singular value as one more rank).
    assert fitted.rank_ == 3
    np.testing.assert_allclose(fitted.predict(X), expected.predict(X), rtol=1e-8)


@pytest.mark.parametrize("n_targets", [None, 2])
def test_stacked_fits_equal_one_fit_per_expert(n_targets):
    # Experts with their own rows, weights, columns and intercept setting,
    # one of them rank-deficient, solved together.
    X, y, weights = _problem(5, n_targets=n_targets, offset=50.0)
    rng = np.random.RandomState(5)
    X_dup = np.column_stack([X, X[:, 0] + X[:, 1]])
    templates = [
        LinearRegression(),
        LinearRegression(fit_intercept=False),
        LinearRegression(),
    ]
    X_parts = [X, X, X_dup[:, [0, 1, 2, 4]]]  # the last of rank 3
    all_weights = [weights, rng.uniform(0, 1, len(X)), None]
    rows = [None, np.flatnonzero(rng.rand(len(X)) < 0.5), np.arange(0, len(X), 3)]
    fitted = fit_linear_regressions(templates, X_parts, y, all_weights, rows)
    for template, est, X_k, w_k, r_k, rank in zip(
        templates, fitted, X_parts, all_weights, rows, [4, 4, 3], strict=True
    ):
        r_k = slice(None) if r_k is None else r_k
        w_k = None if w_k is None else w_k[r_k]
        expected = LinearRegression(fit_intercept=template.fit_intercept)
        expected.fit(X_k[r_k], y[r_k], w_k)
        assert est is not template and not hasattr(template, "coef_")
        assert est.rank_ == rank
        np.testing.assert_allclose(
            est.predict(X_k), expected.predict(X_k), rtol=1e-9, atol=1e-9
        )
        for name in ("intercept_", "singular_", "n_features_in_"):
            assert np.shape(getattr(est, name)) == np.shape(getattr(expected, name))


def test_stacked_fits_of_different_widths():
    X, y, weights = _problem(6)
    parts = [X[:, :2], X, X[:, 1:]]
    fitted = fit_linear_regressions(
        [LinearRegression()] * 3, parts, y, [weights] * 3, [None] * 3
    )
    for est, X_k in zip(fitted, parts, strict=True):
        expected = LinearRegression().fit(X_k, y, weights)
        np.testing.assert_allclose(est.coef_, expected.coef_, rtol=1e-9)


def test_only_plain_linear_regression_takes_the_fast_path():
    class Subclass(LinearRegression):
        pass

    assert is_plain_linear_regression(LinearRegression())
    assert not is_plain_linear_regression(LinearRegression(positive=True))
    assert not is_plain_linear_regression(Subclass())
    assert not is_plain_linear_regression(Ridge())


def test_mixture_experts_are_ordinary_fitted_linear_regressions():
    X, y = make_regimes(n_samples=400, random_state=0)
    moe = MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X, y)
    rows = moe.predict_expert(X) == 0
    for expert in moe.experts_:
        assert type(expert) is LinearRegression
        assert expert.coef_.shape == (2,)
        assert np.isfinite(expert.predict(X[rows])).all()


@pytest.mark.parametrize("n_targets", [None, 2])
def test_experts_formed_together_equal_their_own_passes(n_targets, monkeypatch):
    """The shared pass (every expert's moments from one product per block
    of rows) gives each expert's own fit on its own rows and weights."""
    from mixexp import _linear

    monkeypatch.setattr(_linear, "_BLOCK_BYTES", 8 * 300 * 8)  # several blocks
    monkeypatch.setattr(_linear, "_SHARED_BLOCK_BYTES", 8 * 300 * 8)
    X, y, sample_weight = _problem(6, n_targets=n_targets, offset=50.0)
    rng = np.random.RandomState(6)
    n_experts = 5
    resp = rng.dirichlet(np.ones(n_experts), size=len(X)).T.copy()
    weights = [resp[k] for k in range(n_experts)]
    rows = [None, np.flatnonzero(rng.rand(len(X)) < 0.4)] + [
        np.arange(k, len(X), k + 1) for k in range(2, n_experts)
    ]
    templates = [LinearRegression()] * n_experts
    picks = []
    for shared in (True, False):
        monkeypatch.setattr(_linear, "_shares_dense_rows", lambda *a, s=shared: s)
        picks.append(
            fit_linear_regressions(
                templates, [X] * n_experts, y, weights, rows, sample_weight
            )
        )
    for together, alone, r_k, w_k in zip(*picks, rows, weights, strict=True):
        r_k = slice(None) if r_k is None else r_k
        expected = LinearRegression().fit(X[r_k], y[r_k], (w_k * sample_weight)[r_k])
        for est in (together, alone):
            np.testing.assert_allclose(est.coef_, expected.coef_, rtol=1e-8)
            np.testing.assert_allclose(
                est.intercept_, expected.intercept_, rtol=1e-8, atol=1e-8
            )
        assert together.rank_ == alone.rank_ == X.shape[1]


@pytest.mark.parametrize("alike", [True, False])
def test_weights_as_columns_of_one_array_give_the_same_fits(alike, monkeypatch):
    """EM's responsibilities passed whole, (n, K), enter the shared pass
    without being gathered: the same fits as one weight vector per expert,
    with row weights that differ or that are all alike."""
    from mixexp import _linear

    monkeypatch.setattr(_linear, "_SHARED_BLOCK_BYTES", 8 * 300 * 8)  # blocks
    monkeypatch.setattr(_linear, "_shares_dense_rows", lambda *a: True)
    X, y, sample_weight = _problem(8, offset=3.0)
    if alike:
        sample_weight = np.full(len(X), 0.5)
    n_experts = 4
    resp = np.random.RandomState(8).dirichlet(np.ones(n_experts), size=len(X))
    rows, intercepts = [None] * n_experts, np.ones(n_experts, dtype=bool)
    targets = y[:, np.newaxis]
    resp_before = resp.copy()
    whole = _linear.weighted_moments(
        [X] * n_experts, targets, resp, rows, intercepts, sample_weight
    )
    np.testing.assert_array_equal(resp, resp_before)  # read, never scaled
    apart = _linear.weighted_moments(
        [X] * n_experts, targets, list(resp.T), rows, intercepts, sample_weight
    )
    for a, b in zip(whole, apart, strict=True):
        for part_a, part_b in zip(a, b, strict=True):  # scatter, total, mean
            np.testing.assert_allclose(part_a, part_b, rtol=1e-10, atol=1e-12)


def test_an_expert_far_from_the_overall_mean_gets_its_own_pass(monkeypatch):
    """Moments about the overall mean lose digits for an expert whose rows
    lie far from it, relative to their spread: that expert is formed from
    its own centred rows, and still matches LinearRegression."""
    from mixexp import _linear

    rng = np.random.RandomState(7)
    near = rng.normal(size=(780, 2))  # the overall mean lies near these
    far = 1e3 + 1e-2 * rng.normal(size=(20, 2))
    X = np.vstack([near, far])
    y = X @ [1.0, -2.0] + rng.normal(scale=1e-3, size=800)
    weights = [np.r_[np.ones(780), np.zeros(20)], np.r_[np.zeros(780), np.ones(20)]]
    own = []
    original = _linear._normal_equations
    monkeypatch.setattr(_linear, "_shares_dense_rows", lambda *a: True)
    monkeypatch.setattr(
        _linear, "_normal_equations", lambda *a: own.append(1) or original(*a)
    )
    fitted = fit_linear_regressions(
        [LinearRegression()] * 2, [X] * 2, y, weights, [None] * 2
    )
    assert len(own) == 1  # the far expert alone
    for est, rows in zip(fitted, [slice(0, 780), slice(780, None)], strict=True):
        expected = LinearRegression().fit(X[rows], y[rows])
        np.testing.assert_allclose(est.coef_, expected.coef_, rtol=1e-6)
