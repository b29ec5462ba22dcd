"""The experts' M-step (mixexp._mstep), on hand-made fit data."""

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from mixexp._classes import _regression_outputs
from mixexp._likelihood import GaussianLikelihood
from mixexp._mstep import (
    fit_experts,
    fit_weighted,
    fit_weighted_classifier,
    keep_better_fits,
    supports_sample_weight,
)
from mixexp._run import FitContext


def _context(templates, X, y, sample_weight=None):
    n_samples = X.shape[0]
    sample_weight = np.ones(n_samples) if sample_weight is None else sample_weight
    y2 = y.reshape(n_samples, -1)
    return FitContext(
        X=X,
        X_filled=X,
        X_gate=X,
        y=y2,
        y_fit=y,
        X_parts=[X] * len(templates),
        sample_weight=sample_weight,
        likelihood=GaussianLikelihood.for_targets(y2, sample_weight),
        templates=templates,
        takes_weights=[supports_sample_weight(t) for t in templates],
        fit_one=fit_weighted,
        outputs_of=_regression_outputs,
        routed={"experts": [{}], "gate": {}},
        splits=None,
        n_jobs=None,
        keep_checkpoint=False,
        partition="random",
        training="em",
        capacity_factor=None,
        overflow="next",
        min_expert_load=None,
        max_iter=10,
        tol=1e-4,
        verbose=0,
    )


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 2))
    y = X @ [1.0, -2.0] + rng.normal(size=60)
    resp = rng.dirichlet(np.ones(3), size=60)
    return X, y, resp


class _Recording(Ridge):
    """A Ridge that remembers how many rows it was fitted on."""

    def fit(self, X, y, sample_weight=None):
        self.n_rows_ = X.shape[0]
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize("template", [LinearRegression(), Ridge(alpha=0.5)])
def test_each_expert_is_its_weighted_fit(data, template):
    X, y, resp = data
    weights = np.random.RandomState(1).uniform(0.5, 2.0, size=60)
    context = _context([template] * 3, X, y, weights)
    experts = fit_experts(context, resp, np.arange(3), None)
    for k, expert in enumerate(experts):
        reference = type(template)(**template.get_params())
        fit_weights = weights * resp[:, k]
        if isinstance(template, Ridge):
            # A summed loss is fitted on weights that sum to the mixture's
            # total, so that alpha is shared by share (mixexp/_penalty.py).
            fit_weights *= weights.sum() / fit_weights.sum()
        reference.fit(X, y, sample_weight=fit_weights)
        np.testing.assert_allclose(expert.coef_, reference.coef_, rtol=1e-10)
        np.testing.assert_allclose(expert.intercept_, reference.intercept_, rtol=1e-10)


def test_rows_of_negligible_responsibility_are_left_out(data):
    X, y, resp = data
    resp = resp.copy()
    resp[:20, 0] = 1e-12  # negligible for expert 0
    experts = fit_experts(_context([_Recording()] * 3, X, y), resp, np.arange(3), None)
    assert [e.n_rows_ for e in experts] == [40, 60, 60]


def test_an_expert_without_rows_keeps_its_previous_fit(data):
    X, y, resp = data
    resp = resp.copy()
    resp[:, 2] = 0.0
    previous = [Ridge().fit(X, y) for _ in range(3)]
    context = _context([Ridge()] * 3, X, y)
    experts = fit_experts(context, resp, np.arange(3), previous)
    assert experts[2] is previous[2]
    assert experts[0] is not previous[0]
    # With nothing to keep, it is fitted on every row.
    fresh = fit_experts(context, resp, np.arange(3), None)
    np.testing.assert_allclose(fresh[2].coef_, Ridge().fit(X, y).coef_)


def test_a_refit_that_scores_worse_gives_back_the_previous_fit(data):
    X, y, resp = data
    context = _context([DecisionTreeRegressor()] * 2, X, y)
    good = DecisionTreeRegressor(max_depth=4, random_state=0).fit(X, y)
    poor = DecisionTreeRegressor(max_depth=1, random_state=0).fit(X, y)
    mstep = resp[:, :2] / resp[:, :2].sum(axis=1, keepdims=True)
    previous = [good, poor]
    experts = [poor, good]  # the refits: expert 0 got worse, expert 1 better
    outputs = _regression_outputs(experts, context.X_parts)
    kept = keep_better_fits(context, mstep, experts, outputs, previous, None)
    assert experts == [good, good]
    np.testing.assert_array_equal(outputs[0], good.predict(X)[:, None])
    assert kept is outputs


def test_linear_experts_are_exact_and_keep_nothing(data):
    X, y, resp = data
    context = _context([LinearRegression()] * 3, X, y)
    experts = fit_experts(context, resp, np.arange(3), None)
    outputs = _regression_outputs(experts, context.X_parts)
    assert keep_better_fits(context, resp, experts, outputs, experts, None) is None


def test_a_pipeline_gets_the_weights_at_its_last_step(data):
    X, y, resp = data
    pipe = make_pipeline(StandardScaler(), Ridge())
    assert supports_sample_weight(pipe)
    fit_weighted(pipe, X, y, resp[:, 0], {})
    reference = make_pipeline(StandardScaler(), Ridge())
    reference.fit(X, y, ridge__sample_weight=resp[:, 0])
    np.testing.assert_allclose(pipe[-1].coef_, reference[-1].coef_)


def test_a_classifier_expert_on_one_class_is_a_constant(data):
    X, _, resp = data
    labels = (X[:, 0] > 0).astype(int)
    weights = (labels == 1).astype(float)  # only class 1 has weight
    fitted = fit_weighted_classifier(LogisticRegression(), X, labels, weights, {})
    assert isinstance(fitted, DummyClassifier)
    np.testing.assert_array_equal(fitted.predict(X), 1)
    both = fit_weighted_classifier(LogisticRegression(), X, labels, resp[:, 0], {})
    assert isinstance(both, LogisticRegression)
