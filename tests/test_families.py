"""The statistical model follows the expert: likelihood families end to end.

Each family is fitted on data simulated from it and must recover the
generating coefficients; the reported log-likelihood is recomputed here from
the mixture's own parts (``predict_gate``, each expert's ``predict``, the
fitted scales) with scipy's densities, an implementation independent of
mixexp's.
"""

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import digamma, logsumexp
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import (
    GammaRegressor,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    QuantileRegressor,
    Ridge,
    TweedieRegressor,
)
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp._family import family_of
from mixexp._likelihood import gamma_dispersion
from mixexp.datasets import make_xor
from mixexp.exceptions import ApproximateMStepWarning
from mixexp.gating import SoftmaxGate


def _two_regimes(n, rng):
    """Inputs on [0, 3] and a fair coin for the regime of each row."""
    X = rng.uniform(0.0, 3.0, size=(n, 1))
    return X, rng.rand(n) < 0.5


def _sorted_coefficients(model):
    return np.array(
        sorted([float(e.intercept_), float(e.coef_[0])] for e in model.experts_)
    )


def _mixture_log_likelihood(model, X, y, log_density):
    """``log sum_k g_k(x) p_k(y | x)`` from the model's public parts."""
    gate = model.predict_gate(X)
    log_p = np.column_stack(
        [log_density(k, expert.predict(X)) for k, expert in enumerate(model.experts_)]
    )
    return logsumexp(np.log(gate) + log_p, axis=1)


# ---------------------------------------------------------------------------
# Recovery, and the reported log-likelihood, family by family.


def test_poisson_experts_recover_two_poisson_regressions():
    rng = np.random.RandomState(0)
    X, regime = _two_regimes(2000, rng)
    log_mean = np.where(regime, 0.5 + 0.6 * X[:, 0], 2.0 - 0.4 * X[:, 0])
    y = rng.poisson(np.exp(log_mean))
    model = MixtureOfExpertsRegressor(
        PoissonRegressor(alpha=0),
        n_experts=2,
        gate="constant",
        n_init=3,
        random_state=0,
    ).fit(X, y)
    assert model.likelihood_ == "poisson"
    assert not hasattr(model, "noise_std_")  # Poisson has no scale
    np.testing.assert_allclose(
        _sorted_coefficients(model), [[0.5, 0.6], [2.0, -0.4]], atol=0.1
    )
    expected = _mixture_log_likelihood(
        model, X, y, lambda k, mu: stats.poisson.logpmf(y, mu)
    )
    np.testing.assert_allclose(model.log_likelihood(X, y), expected, rtol=0, atol=1e-8)
    # With neither gate nor expert penalties, the objective is the mean.
    assert model.lower_bound_ == pytest.approx(expected.mean(), abs=1e-8)


def test_gaussian_scoring_of_counts_is_worse_than_poisson_scoring():
    # The motivating case: EM with a Gaussian model of counts lands away
    # from the generating regressions, the Poisson model does not.
    rng = np.random.RandomState(0)
    X, regime = _two_regimes(2000, rng)
    y = rng.poisson(np.exp(np.where(regime, 0.5 + 0.6 * X[:, 0], 2.0 - 0.4 * X[:, 0])))
    errors = {}
    for likelihood in ("poisson", "gaussian"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ApproximateMStepWarning)
            model = MixtureOfExpertsRegressor(
                PoissonRegressor(alpha=0),
                n_experts=2,
                gate="constant",
                n_init=3,
                likelihood=likelihood,
                random_state=0,
            ).fit(X, y)
        truth = np.array([[0.5, 0.6], [2.0, -0.4]])
        errors[likelihood] = np.abs(_sorted_coefficients(model) - truth).max()
    assert errors["poisson"] < 0.1 < errors["gaussian"]


def test_gamma_experts_recover_two_gamma_regressions_and_their_shapes():
    rng = np.random.RandomState(1)
    X, regime = _two_regimes(3000, rng)
    mean = np.exp(np.where(regime, 1.0 + 0.5 * X[:, 0], 3.0 - 0.5 * X[:, 0]))
    shape = np.where(regime, 20.0, 5.0)
    y = rng.gamma(shape, mean / shape)
    model = MixtureOfExpertsRegressor(
        GammaRegressor(alpha=0, max_iter=300),
        n_experts=2,
        gate="constant",
        n_init=3,
        random_state=0,
    ).fit(X, y)
    assert model.likelihood_ == "gamma"
    coefficients = _sorted_coefficients(model)
    np.testing.assert_allclose(coefficients, [[1.0, 0.5], [3.0, -0.5]], atol=0.1)
    order = np.argsort([e.intercept_ for e in model.experts_])
    np.testing.assert_allclose(
        1.0 / model.dispersion_[order], [20.0, 5.0], rtol=0.15
    )  # shapes

    def log_density(k, mu):
        a = 1.0 / model.dispersion_[k]
        return stats.gamma.logpdf(y, a, scale=mu / a)

    expected = _mixture_log_likelihood(model, X, y, log_density)
    np.testing.assert_allclose(model.log_likelihood(X, y), expected, rtol=0, atol=1e-8)


def test_laplace_experts_recover_two_median_regressions():
    rng = np.random.RandomState(2)
    X, regime = _two_regimes(600, rng)
    centre = np.where(regime, 1.0 + 2.0 * X[:, 0], 8.0 - 1.0 * X[:, 0])
    scale = np.where(regime, 0.3, 0.6)
    y = centre + rng.laplace(scale=scale)
    model = MixtureOfExpertsRegressor(
        QuantileRegressor(quantile=0.5, alpha=0.0),
        n_experts=2,
        gate="constant",
        n_init=2,
        random_state=0,
    ).fit(X, y)
    assert model.likelihood_ == "laplace"
    np.testing.assert_allclose(
        _sorted_coefficients(model), [[1.0, 2.0], [8.0, -1.0]], atol=0.15
    )
    order = np.argsort([e.intercept_ for e in model.experts_])
    np.testing.assert_allclose(model.dispersion_[order], [0.3, 0.6], rtol=0.2)

    def log_density(k, mu):
        return stats.laplace.logpdf(y, loc=mu, scale=model.dispersion_[k])

    expected = _mixture_log_likelihood(model, X, y, log_density)
    np.testing.assert_allclose(model.log_likelihood(X, y), expected, rtol=0, atol=1e-8)


def test_the_out_of_fold_e_step_scores_by_the_family():
    rng = np.random.RandomState(16)
    X, regime = _two_regimes(1500, rng)
    y = rng.poisson(np.exp(np.where(regime, 0.5 + 0.6 * X[:, 0], 2.0 - 0.4 * X[:, 0])))
    model = MixtureOfExpertsRegressor(
        PoissonRegressor(alpha=0),
        n_experts=2,
        gate="constant",
        cv=3,
        n_init=2,
        random_state=0,
    ).fit(X, y)
    assert model.likelihood_ == "poisson"
    np.testing.assert_allclose(
        _sorted_coefficients(model), [[0.5, 0.6], [2.0, -0.4]], atol=0.15
    )


def test_return_std_follows_the_family():
    # One Poisson expert: the predictive variance is its mean.
    rng = np.random.RandomState(3)
    X = rng.uniform(0.0, 2.0, size=(300, 1))
    y = rng.poisson(np.exp(0.3 + 0.8 * X[:, 0]))
    model = MixtureOfExpertsRegressor(
        PoissonRegressor(alpha=0), n_experts=1, random_state=0
    ).fit(X, y)
    mean, std = model.predict(X[:5], return_std=True)
    np.testing.assert_allclose(std, np.sqrt(mean), rtol=1e-12)


def test_bic_counts_each_familys_scales():
    rng = np.random.RandomState(4)
    X = rng.uniform(0.0, 2.0, size=(400, 1))
    y = rng.gamma(10.0, np.exp(0.5 + 0.3 * X[:, 0]) / 10.0)
    gamma = MixtureOfExpertsRegressor(
        GammaRegressor(alpha=0), n_experts=2, gate="constant", random_state=0
    ).fit(X, y)
    poisson = MixtureOfExpertsRegressor(
        PoissonRegressor(alpha=0), n_experts=2, gate="constant", random_state=0
    ).fit(X, np.round(y))
    # 2 experts x (slope, intercept) + 1 mixing proportion, + 2 dispersions.
    assert gamma._n_parameters() == 2 * 2 + 1 + 2
    assert poisson._n_parameters() == 2 * 2 + 1
    log_lik = gamma.log_likelihood(X, y).sum()
    assert gamma.bic(X, y) == pytest.approx(-2 * log_lik + 7 * np.log(400))


# ---------------------------------------------------------------------------
# Which family "auto" picks, and mismatches.


@pytest.mark.parametrize(
    ("expert", "family"),
    [
        (LinearRegression(), "gaussian"),
        (Ridge(), "gaussian"),
        (KNeighborsRegressor(), "gaussian"),
        (PoissonRegressor(), "poisson"),
        (TweedieRegressor(power=1), "poisson"),
        (TweedieRegressor(power=0), "gaussian"),
        (TweedieRegressor(power=1.5), "gaussian"),
        (HistGradientBoostingRegressor(loss="poisson"), "poisson"),
        (DecisionTreeRegressor(criterion="poisson"), "poisson"),
        (GammaRegressor(), "gamma"),
        (TweedieRegressor(power=2), "gamma"),
        (HistGradientBoostingRegressor(loss="gamma"), "gamma"),
        (QuantileRegressor(quantile=0.5), "laplace"),
        (QuantileRegressor(quantile=0.9), "gaussian"),
        (HistGradientBoostingRegressor(loss="absolute_error"), "laplace"),
        (HistGradientBoostingRegressor(loss="quantile", quantile=0.5), "laplace"),
        (GradientBoostingRegressor(loss="absolute_error"), "laplace"),
        (RandomForestRegressor(criterion="absolute_error"), "laplace"),
        (make_pipeline(StandardScaler(), PoissonRegressor()), "poisson"),
        (MixtureOfExpertsRegressor(PoissonRegressor()), "poisson"),
        (MixtureOfExpertsRegressor(likelihood="laplace"), "laplace"),
        (MixtureOfExpertsRegressor(), "gaussian"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_auto_reads_the_family_off_the_expert(expert, family):
    assert family_of(expert) == family


def test_an_explicit_family_the_expert_does_not_fit_warns():
    rng = np.random.RandomState(5)
    X = rng.normal(size=(100, 1))
    y = rng.poisson(2.0, size=100)
    with pytest.warns(ApproximateMStepWarning, match="expert 0 \\(LinearRegression\\)"):
        model = MixtureOfExpertsRegressor(
            n_experts=2, likelihood="poisson", random_state=0
        ).fit(X, y)
    assert model.likelihood_ == "poisson"


def test_a_nested_mixture_scores_the_outer_mixture_by_its_family():
    rng = np.random.RandomState(6)
    X, regime = _two_regimes(400, rng)
    y = rng.poisson(np.exp(np.where(regime, 0.2 + 0.5 * X[:, 0], 1.5)))
    inner = MixtureOfExpertsRegressor(
        PoissonRegressor(alpha=0), n_experts=2, gate="constant", random_state=0
    )
    outer = MixtureOfExpertsRegressor(inner, n_experts=1, random_state=0).fit(X, y)
    assert outer.likelihood_ == "poisson"
    assert outer.experts_[0].likelihood_ == "poisson"


# ---------------------------------------------------------------------------
# Gaussian covariance structures against scikit-learn's GaussianMixture.


class _GivenResponsibilities(BaseEstimator):
    """A partition that starts EM from fixed responsibilities."""

    def __init__(self, resp, n_components=None):
        self.resp = resp
        self.n_components = n_components

    def fit(self, X, y=None):
        return self

    def predict_proba(self, X):
        return self.resp


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_intercept_only_experts_are_a_gaussian_mixture_of_y(covariance_type):
    # A constant gate and DummyRegressor experts (the weighted mean of y)
    # make the model a Gaussian mixture of y; from the same start, EM must
    # reach what GaussianMixture reaches.
    rng = np.random.RandomState(7)
    centres = np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]])
    spread = np.array([[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.2], [-0.2, 0.8]]])
    labels = rng.randint(3, size=900)
    y = centres[labels] + np.einsum(
        "nij,nj->ni", spread[labels % 2], rng.normal(size=(900, 2))
    )
    X = np.zeros((900, 1))
    start = np.full((900, 3), 0.1)
    start[np.arange(900), (labels + rng.binomial(1, 0.2, 900)) % 3] = 0.8
    start /= start.sum(axis=1, keepdims=True)
    # GaussianMixture's first M-step from the same responsibilities, with
    # the floor mixexp adds to a matrix's diagonal as its reg_covar.
    floor = 1e-6 * y.var(axis=0)
    weights, means, covariances = _estimate_gaussian_parameters(
        y, start, 0.0, covariance_type
    )
    reference = GaussianMixture(
        3,
        covariance_type=covariance_type,
        weights_init=weights / weights.sum(),
        means_init=means,
        precisions_init=_precisions(covariances, covariance_type),
        reg_covar=float(floor.mean()),
        tol=1e-12,
        max_iter=2000,
    ).fit(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = MixtureOfExpertsRegressor(
            DummyRegressor(),
            n_experts=3,
            covariance_type=covariance_type,
            gate="constant",
            partition=_GivenResponsibilities(start),
            tol=1e-12,
            max_iter=2000,
        ).fit(X, y)
    assert model.lower_bound_ == pytest.approx(reference.score(y), abs=1e-6)
    assert model.covariances_.shape == reference.covariances_.shape
    order = np.lexsort(np.array([e.constant_[0] for e in model.experts_]).T)
    reference_order = np.lexsort(reference.means_.T)
    np.testing.assert_allclose(
        model.covariances_ if covariance_type == "tied" else model.covariances_[order],
        reference.covariances_
        if covariance_type == "tied"
        else reference.covariances_[reference_order],
        rtol=1e-4,
        atol=1e-5,
    )
    # noise_std_ is the marginal scale of each output in every structure.
    assert model.noise_std_.shape == (3, 2)
    # Parameters are counted as GaussianMixture counts them: means,
    # covariances of the structure, mixing proportions.
    assert model._n_parameters() == reference._n_parameters()
    assert model.bic(X, y) == pytest.approx(reference.bic(y), rel=1e-6)


def _precisions(covariances, covariance_type):
    if covariance_type in ("diag", "spherical"):
        return 1.0 / covariances
    return np.linalg.inv(covariances)


def test_full_covariance_scores_correlated_outputs_by_their_joint_density():
    rng = np.random.RandomState(8)
    X = rng.normal(size=(500, 1))
    noise = rng.multivariate_normal([0, 0], [[1.0, 0.9], [0.9, 1.0]], size=500)
    y = np.column_stack([2 * X[:, 0], -X[:, 0]]) + noise
    scores = {}
    for covariance_type in ("diag", "full"):
        model = MixtureOfExpertsRegressor(
            n_experts=1, covariance_type=covariance_type, random_state=0
        ).fit(X, y)
        scores[covariance_type] = model.lower_bound_
        if covariance_type == "full":
            residual = y - model.predict(X)
            expected = stats.multivariate_normal(
                mean=[0, 0], cov=model.covariances_[0]
            ).logpdf(residual)
            np.testing.assert_allclose(model.log_likelihood(X, y), expected, atol=1e-8)
            # 2 slopes + 2 intercepts + 3 covariance entries.
            assert model._n_parameters() == 7
    # The correlation (0.9) is worth about -log(1 - 0.81) / 2 = 0.83 nats.
    assert scores["full"] - scores["diag"] == pytest.approx(0.83, abs=0.1)


# ---------------------------------------------------------------------------
# The gate's own columns.


def test_the_gate_sees_only_gate_features():
    rng = np.random.RandomState(9)
    n = 1000
    z = rng.normal(size=n)  # decides the regime
    x = rng.normal(size=(n, 2))  # what the experts regress on
    regime = rng.rand(n) < 1.0 / (1.0 + np.exp(-3.0 * z))
    y = np.where(regime, 2.0 * x[:, 0], -2.0 * x[:, 1]) + 0.1 * rng.normal(size=n)
    X = np.column_stack([x, z])
    model = MixtureOfExpertsRegressor(
        n_experts=2,
        feature_groups=[[0, 1], [0, 1]],
        gate_features=[2],
        n_init=2,
        random_state=0,
    ).fit(X, y)
    np.testing.assert_array_equal(model.gate_features_, [2])
    assert model.gate_.n_features_in_ == 1
    shuffled = X.copy()
    shuffled[:, :2] = rng.permutation(X[:, :2])
    np.testing.assert_array_equal(model.predict_gate(shuffled), model.predict_gate(X))
    coefficients = sorted(np.round(e.coef_, 1).tolist() for e in model.experts_)
    np.testing.assert_allclose(coefficients, [[0.0, -2.0], [2.0, 0.0]], atol=0.1)
    # The gate learnt the regime's logistic law in z (slope 3).
    assert abs(np.diff(model.gate_.coef_[0])[0]) == pytest.approx(3.0, rel=0.2)


def test_gate_features_by_name_on_a_dataframe():
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(10)
    X, y = make_xor(n_samples=300, random_state=0)
    frame = pd.DataFrame(
        np.column_stack([X, rng.normal(size=300)]), columns=["a", "b", "noise"]
    )
    model = MixtureOfExpertsClassifier(
        n_experts=4, gate_features=["a", "b"], random_state=0
    ).fit(frame, y)
    np.testing.assert_array_equal(model.gate_features_, [0, 1])
    moved = frame.assign(noise=rng.normal(size=300))
    np.testing.assert_array_equal(model.predict_gate(moved), model.predict_gate(frame))


# ---------------------------------------------------------------------------
# Expert penalties are part of the objective EM improves.


def test_ridge_penalty_is_in_the_objective_and_em_is_monotone():
    rng = np.random.RandomState(11)
    X, regime = _two_regimes(500, rng)
    y = np.where(regime, 1.0 + 2.0 * X[:, 0], 5.0 - X[:, 0]) + 0.3 * rng.normal(
        size=500
    )
    alpha = 50.0
    model = MixtureOfExpertsRegressor(
        Ridge(alpha=alpha), n_experts=2, gate="constant", random_state=0, tol=1e-10
    ).fit(X, y)
    # Monotone up to the shift of the experts' shares times their penalty
    # per unit of weight, a second-order term (see mixexp/_penalty.py).
    rises = np.diff(model.lower_bounds_)
    assert np.all(rises >= -1e-5)  # here at most 2.4e-6, against 0.3 in all
    assert rises.sum() > 0.01
    # Each expert pays its share of the training weight of Ridge's penalty,
    # in the Gaussian likelihood's units.
    penalty = sum(
        share * alpha * e.coef_[0] ** 2 / (2 * s**2)
        for e, s, share in zip(
            model.experts_, model.noise_std_, model.expert_load_, strict=True
        )
    )
    mean = model.log_likelihood(X, y).mean()
    assert model.lower_bound_ == pytest.approx(mean - penalty / 500, abs=1e-10)
    assert penalty / 500 > 1e-4  # large enough for the check to mean something
    assert model.experts_[0].alpha == alpha  # the user's parameter, untouched


def test_logistic_penalty_is_in_the_objective_and_em_is_monotone():
    X, y = make_xor(n_samples=400, random_state=0)
    C = 0.5
    model = MixtureOfExpertsClassifier(
        LogisticRegression(C=C),
        n_experts=4,
        gate="constant",
        random_state=0,
        tol=1e-5,
    ).fit(X, y)
    # lbfgs stops at its own tolerance: allow that much slack per step.
    assert np.all(np.diff(model.lower_bounds_) >= -1e-6)
    penalty = sum(
        share * np.sum(e.coef_**2) / (2 * C)
        for e, share in zip(model.experts_, model.expert_load_, strict=True)
    )
    mean = model.log_likelihood(X, y).mean()
    assert model.lower_bound_ == pytest.approx(mean - penalty / 400, abs=1e-10)
    assert penalty / 400 > 1e-3


def test_a_poisson_penalty_is_its_share_of_the_glms_own():
    rng = np.random.RandomState(12)
    X, regime = _two_regimes(1000, rng)
    y = rng.poisson(np.exp(np.where(regime, 0.5 + 0.6 * X[:, 0], 2.0 - 0.4 * X[:, 0])))
    alpha = 0.05
    model = MixtureOfExpertsRegressor(
        PoissonRegressor(alpha=alpha),
        n_experts=2,
        gate="constant",
        random_state=0,
        tol=1e-10,
        max_iter=300,
    ).fit(X, y)
    assert np.all(np.diff(model.lower_bounds_) >= -1e-8)
    # PoissonRegressor averages its loss over its weights: the objective is
    # the mean log-likelihood less sum_k share_k alpha |coef_k|^2 / 2.
    penalty = sum(
        share * alpha * e.coef_[0] ** 2 / 2
        for e, share in zip(model.experts_, model.expert_load_, strict=True)
    )
    mean = model.log_likelihood(X, y).mean()
    assert model.lower_bound_ == pytest.approx(mean - penalty, abs=1e-10)
    assert penalty > 1e-3


def test_experts_without_a_known_penalty_stop_on_the_plateau():
    rng = np.random.RandomState(13)
    X, regime = _two_regimes(400, rng)
    y = np.where(regime, np.sin(3 * X[:, 0]), X[:, 0]) + 0.1 * rng.normal(size=400)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = MixtureOfExpertsRegressor(
            DecisionTreeRegressor(max_depth=3), n_experts=2, random_state=0
        ).fit(X, y)
    assert model.converged_
    assert model.n_iter_ < 100


# ---------------------------------------------------------------------------
# The Gamma dispersion's M-step.


@pytest.mark.parametrize("shape", [0.05, 0.5, 1.0, 7.0, 300.0, 1e5])
def test_gamma_dispersion_solves_its_likelihood_equation(shape):
    deviance = np.log(shape) - digamma(shape)
    np.testing.assert_allclose(gamma_dispersion([deviance]), [1.0 / shape], rtol=1e-9)


def test_gamma_dispersion_is_the_maximum_likelihood_shape():
    rng = np.random.RandomState(14)
    y = rng.gamma(3.0, 2.0, size=5000)
    a, _, _ = stats.gamma.fit(y, floc=0)
    mean = y.mean()  # the MLE of the mean, which the expert's fit gives
    deviance = np.mean(y / mean - np.log(y / mean) - 1.0)
    np.testing.assert_allclose(1.0 / gamma_dispersion([deviance])[0], a, rtol=1e-4)


def test_softmax_gate_works_with_gate_features_and_penalties():
    # The gate's own penalty and an expert's add up in lower_bound_.
    rng = np.random.RandomState(15)
    X, regime = _two_regimes(300, rng)
    X = np.column_stack([X, regime + 0.1 * rng.normal(size=300)])
    y = np.where(regime, 1.0 + 2.0 * X[:, 0], 5.0 - X[:, 0]) + 0.2 * rng.normal(
        size=300
    )
    model = MixtureOfExpertsRegressor(
        Ridge(alpha=10.0),
        n_experts=2,
        feature_groups=[[0], [0]],
        gate_features=[1],
        gate=SoftmaxGate(alpha=1.0),
        random_state=0,
    ).fit(X, y)
    expert_penalty = sum(
        share * 10.0 * e.coef_[0] ** 2 / (2 * s**2)
        for e, s, share in zip(
            model.experts_, model.noise_std_, model.expert_load_, strict=True
        )
    )
    # The gate's L2 penalty on its standardised coefficients (alpha=1).
    gate_penalty = 0.5 * float(np.sum(model.gate_._params[1:] ** 2))
    mean = model.log_likelihood(X, y).mean()
    assert gate_penalty > 1e-3 and expert_penalty > 1e-3
    assert model.lower_bound_ == pytest.approx(
        mean - (expert_penalty + gate_penalty) / 300, abs=1e-10
    )
