"""Degenerate fits stay finite and say what happened; results are reproducible.

Degenerate data (constant features, identical rows, noise-free targets,
extreme scales, too many experts, collapsing experts, rare classes) must give
a fitted model with no NaN in any output. Warnings are how a fit says what
happened: only scikit-learn's ConvergenceWarning, mixexp's
CollapsedExpertWarning or another UserWarning may come out, never numpy's
RuntimeWarning (overflow, division by zero, invalid value), which means that
a NaN or an infinity was computed somewhere.

Reproducibility: the same random_state gives bit-identical models, n_jobs
does not change the model, pickling keeps it, and predictions are row-wise.
"""

import pickle
import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes
from mixexp.exceptions import CollapsedExpertWarning

BOTH = ("regressor", "classifier")
ESTIMATORS = {
    "regressor": MixtureOfExpertsRegressor,
    "classifier": MixtureOfExpertsClassifier,
}
TRAININGS = ("em", "hard", "fixed")
PARTITIONS = ("kmeans", "gmm", "random")


def _data(kind, n_samples=60, n_features=3, seed=0):
    """Two regimes: piecewise-linear targets, or classes split by a fold."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, n_features))
    coef = np.linspace(1.0, -1.0, n_features)
    if kind == "regressor":
        y = np.where(X[:, 0] > 0, X @ coef, -X @ coef) + 0.1 * rng.normal(
            size=n_samples
        )
    else:
        y = np.where((X[:, 0] > 0) ^ (X[:, -1] > 0.3), "yes", "no")
    return X, y


def _fit(model, X, y, **fit_params):
    """Fit, allowing only warnings that say what happened (UserWarnings).

    Returns the warnings caught. Any other warning (numpy's RuntimeWarning
    from an overflow or an invalid value, a DeprecationWarning...) fails.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, **fit_params)
    unexpected = [w for w in caught if not issubclass(w.category, UserWarning)]
    assert not unexpected, [f"{w.category.__name__}: {w.message}" for w in unexpected]
    return caught


def assert_finite_model(model, X, y):
    """No NaN or infinity in any fitted quantity or any output."""
    far = np.vstack([X, 1e3 * X[:3], np.zeros((1, X.shape[1]))])
    assert np.isfinite(model.lower_bound_)
    assert np.all(np.isfinite(model.lower_bounds_))
    assert model.lower_bounds_[-1] == model.lower_bound_
    assert np.all(np.isfinite(model.expert_load_))
    assert np.all(model.n_reseeds_ >= 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning while predicting
        gate = model.predict_gate(far)
        assert np.all(np.isfinite(gate)) and np.all(gate >= 0)
        np.testing.assert_allclose(gate.sum(axis=1), 1.0, rtol=1e-12)
        assert np.all(np.isfinite(model.log_likelihood(X, y)))
        if isinstance(model, MixtureOfExpertsRegressor):
            assert np.all(np.isfinite(model.noise_std_))
            assert np.all(model.noise_std_ > 0)
            pred, std = model.predict(far, return_std=True)
            assert np.all(np.isfinite(pred))
            assert np.all(np.isfinite(std)) and np.all(std >= 0)
        else:
            proba = model.predict_proba(far)
            assert np.all(np.isfinite(proba))
            assert np.all((proba >= 0) & (proba <= 1))
            np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
            assert not np.any(np.isnan(model.predict_log_proba(far)))
            assert set(model.predict(far)) <= set(model.classes_)


# ---------------------------------------------------------------------------
# Degenerate features and rows


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("gate", ["softmax", "constant"])
@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("training", TRAININGS)
def test_constant_feature(kind, training, partition, gate):
    X, y = _data(kind)
    X[:, 1] = 5.0
    model = ESTIMATORS[kind](
        n_experts=3, training=training, partition=partition, gate=gate, random_state=0
    )
    _fit(model, X, y)
    assert_finite_model(model, X, y)
    if gate == "softmax":
        # A constant column carries nothing, and the gate says so.
        assert np.all(np.isfinite(model.gate_.coef_))
        np.testing.assert_allclose(model.gate_.coef_[1], 0.0, atol=1e-8)


@pytest.mark.parametrize("kind", BOTH)
def test_expert_that_sees_only_a_constant_column(kind):
    X, y = _data(kind)
    X[:, 2] = -3.0
    model = ESTIMATORS[kind](feature_groups=[[0, 1], [2]], random_state=0)
    _fit(model, X, y)
    assert_finite_model(model, X, y)


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("training", TRAININGS)
def test_identical_inputs(kind, training, partition):
    """Every row has the same x (y still varies): a mixture without inputs."""
    _, y = _data(kind)
    X = np.ones((len(y), 2))
    model = ESTIMATORS[kind](
        n_experts=3, training=training, partition=partition, random_state=0
    )
    _fit(model, X, y)
    assert_finite_model(model, X, y)
    # The gate cannot tell the rows apart: every row gets the same weights.
    gate = model.predict_gate(X)
    np.testing.assert_allclose(gate, np.broadcast_to(gate[0], gate.shape))


@pytest.mark.parametrize("training", TRAININGS)
def test_identical_rows(training):
    """Every row is the same (x, y): noise-free and input-free at once."""
    X = np.tile([[0.5, -1.0]], (30, 1))
    y = np.full(30, 4.0)
    model = MixtureOfExpertsRegressor(n_experts=2, training=training, random_state=0)
    _fit(model, X, y)
    assert_finite_model(model, X, y)
    np.testing.assert_allclose(model.predict(X), 4.0)


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("training", TRAININGS)
def test_fewer_distinct_rows_than_experts(kind, training, partition):
    X_distinct, y_distinct = _data(kind, n_samples=3, seed=2)
    if kind == "classifier":
        y_distinct = np.array(["no", "yes", "no"])
    X, y = np.repeat(X_distinct, 10, axis=0), np.repeat(y_distinct, 10)
    model = ESTIMATORS[kind](
        n_experts=5, training=training, partition=partition, random_state=0
    )
    _fit(model, X, y)
    assert_finite_model(model, X, y)


# ---------------------------------------------------------------------------
# Noise-free targets: the variance floor


@pytest.mark.parametrize("n_experts", [1, 3])
@pytest.mark.parametrize("training", TRAININGS)
def test_noise_free_targets_keep_a_positive_noise_scale(training, n_experts):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50, 2))
    y = X @ [3.0, -1.0] + 2.0  # exactly linear
    model = MixtureOfExpertsRegressor(
        n_experts=n_experts, training=training, random_state=0
    )
    _fit(model, X, y)
    assert_finite_model(model, X, y)
    floor = np.sqrt(1e-6 * y.var())
    assert np.all(model.noise_std_ >= floor * (1 - 1e-9))
    np.testing.assert_allclose(model.predict(X), y, atol=1e-6 * y.std())
    assert model.lower_bound_ < np.inf


@pytest.mark.parametrize("y_value", [0.0, 7.0, -1e8])
def test_constant_target(y_value):
    X = np.random.RandomState(0).normal(size=(40, 2))
    y = np.full(40, y_value)
    model = MixtureOfExpertsRegressor(random_state=0)
    _fit(model, X, y)
    assert_finite_model(model, X, y)
    np.testing.assert_allclose(model.predict(X), y_value, atol=1e-6 * abs(y_value))


def test_noise_free_regimes_each_expert_exact():
    X, _ = make_regimes(n_samples=200, n_regimes=2, noise=0.0, random_state=0)
    y = np.where(X[:, 0] > 0, 2 * X[:, 0], -3 * X[:, 0])  # exact on both sides
    model = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
    _fit(model, X, y)
    assert_finite_model(model, X, y)
    assert np.all(model.noise_std_ > 0)


def test_noise_free_multi_output():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 2))
    Y = np.column_stack([X @ [1.0, 2.0], np.full(40, 3.0)])  # one output constant
    model = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
    _fit(model, X, Y)
    assert_finite_model(model, X, Y)
    assert model.noise_std_.shape == (2, 2)
    assert np.all(model.noise_std_ > 0)


# ---------------------------------------------------------------------------
# Huge and tiny scales


@pytest.mark.parametrize("gate", ["softmax", "constant"])
@pytest.mark.parametrize("training", TRAININGS)
def test_regression_is_equivariant_to_the_scales_of_X_and_y(training, gate):
    """Scaling X by sx and y by sy (1e-8 to 1e8) gives the same model, rescaled."""
    X, y = make_regimes(n_samples=200, n_regimes=3, random_state=0)
    params = {"training": training, "gate": gate, "random_state": 0}
    base = MixtureOfExpertsRegressor(**params)
    _fit(base, X, y)
    for sx in (1e-8, 1e8):
        for sy in (1e-8, 1e8):
            model = MixtureOfExpertsRegressor(**params)
            _fit(model, sx * X, sy * y)
            assert_finite_model(model, sx * X, sy * y)
            where = f"sx={sx}, sy={sy}"
            np.testing.assert_allclose(
                model.predict(sx * X) / sy,
                base.predict(X),
                rtol=1e-6,
                atol=1e-6 * np.abs(y).max(),
                err_msg=where,
            )
            np.testing.assert_allclose(
                model.noise_std_ / sy, base.noise_std_, rtol=1e-6, err_msg=where
            )
            # The mean log-density of y shifts by -log(sy).
            assert model.lower_bound_ + np.log(sy) == pytest.approx(
                base.lower_bound_, abs=1e-6
            ), where


@pytest.mark.parametrize("training", TRAININGS)
@pytest.mark.parametrize("scale", [1e-8, 1e8, "mixed"])
def test_classification_at_extreme_scales(training, scale):
    X, y = _data("classifier", n_samples=80)
    X = X * (np.array([1e-8, 1.0, 1e8]) if scale == "mixed" else scale)
    model = MixtureOfExpertsClassifier(n_experts=3, training=training, random_state=0)
    _fit(model, X, y)
    assert_finite_model(model, X, y)


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_extreme_sample_weights_stay_finite(kind, scale):
    X, y = _data(kind)
    weights = np.random.RandomState(1).uniform(0.5, 2.0, size=len(y)) * scale
    model = ESTIMATORS[kind](random_state=0)
    _fit(model, X, y, sample_weight=weights)
    assert_finite_model(model, X, y)


@pytest.mark.parametrize("training", TRAININGS)
def test_mixture_of_regressions_ignores_the_scale_of_sample_weight(training):
    # With a constant gate nothing is penalised, so only relative weights
    # matter. (The softmax gate's alpha is on the scale of the summed
    # weights, like 1 / C in LogisticRegression, so there the scale of the
    # weights sets the strength of the penalty.)
    X, y = make_regimes(n_samples=150, n_regimes=2, random_state=1)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, size=len(y))
    params = {"gate": "constant", "training": training, "random_state": 0}
    base = MixtureOfExpertsRegressor(**params)
    _fit(base, X, y, sample_weight=weights)
    for scale in (1e-8, 1e8):
        model = MixtureOfExpertsRegressor(**params)
        _fit(model, X, y, sample_weight=scale * weights)
        np.testing.assert_allclose(model.predict(X), base.predict(X), rtol=1e-9)
        assert model.lower_bound_ == pytest.approx(base.lower_bound_, rel=1e-9)


# ---------------------------------------------------------------------------
# More experts than the data supports; collapsing experts


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("partition", ["kmeans", "random"])
@pytest.mark.parametrize("training", TRAININGS)
@pytest.mark.parametrize("n_experts", [6, 12])
def test_more_experts_than_the_data_supports(kind, training, partition, n_experts):
    X, y = _data(kind, n_samples=12, n_features=2, seed=3)
    model = ESTIMATORS[kind](
        n_experts=n_experts,
        training=training,
        partition=partition,
        max_iter=30,
        random_state=0,
    )
    _fit(model, X, y)
    assert_finite_model(model, X, y)
    assert model.n_experts_ == n_experts
    assert model.expert_load_.shape == (n_experts,)


def _warned_experts(record):
    """Expert indices named by the CollapsedExpertWarning(s) in `record`."""
    named = set()
    for w in record:
        if issubclass(w.category, CollapsedExpertWarning):
            found = re.search(r"Experts? \[([\d, ]+)\]", str(w.message))
            assert found, str(w.message)
            named |= {int(k) for k in found.group(1).split(",")}
    return named


@pytest.mark.parametrize("gate", ["softmax", "constant"])
@pytest.mark.parametrize("training", ["em", "hard"])
def test_an_expert_that_explains_nothing_collapses_and_is_reseeded(training, gate):
    """Expert 2 always predicts 1e6: its responsibility falls to about zero."""
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(60, 2))
    y = 2 * X[:, 0] + 0.05 * rng.normal(size=60)
    useless = DummyRegressor(strategy="constant", constant=1e6)
    model = MixtureOfExpertsRegressor(
        [LinearRegression(), LinearRegression(), useless],
        training=training,
        gate=gate,
        random_state=0,
    )
    with pytest.warns(CollapsedExpertWarning, match=r"Experts \[2\] collapsed") as rec:
        model.fit(X, y)
    assert _warned_experts(rec) == {2}
    assert model.n_reseeds_.tolist() == [0, 0, 3]  # re-seeded up to the limit
    assert model.expert_load_[2] < 1e-3
    assert np.all(model.predict_gate(X)[:, 2] < 1e-3)
    assert_finite_model(model, X, y)
    # The other two carry the mixture. (Weighted pooling still adds the
    # useless expert's 1e6 times its tiny gate weight, hence argmax here.)
    assert model.set_params(pooling="argmax").score(X, y) > 0.99


class _Contrarian(LogisticRegression):
    """A classifier that is confidently wrong: it swaps its probabilities."""

    def predict_proba(self, X):
        return super().predict_proba(X)[:, ::-1]


def test_a_confidently_wrong_classifier_expert_collapses():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(60, 2))
    y = (X[:, 0] > 0).astype(int)
    model = MixtureOfExpertsClassifier(
        [LogisticRegression(), LogisticRegression(), _Contrarian()],
        gate="constant",
        random_state=0,
        tol=1e-8,  # at the default, EM stops with its share near 1e-4
    )
    with pytest.warns(CollapsedExpertWarning) as rec:
        model.fit(X, y)
    assert 2 in _warned_experts(rec)
    assert _warned_experts(rec) == set(np.flatnonzero(model.n_reseeds_))
    assert model.gate_.proportions_[2] < 1e-3
    assert_finite_model(model, X, y)
    assert model.score(X, y) > 0.95


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("training", ["em", "hard"])
def test_collapse_warning_names_exactly_the_reseeded_experts(kind, training):
    # Ten experts for 30 rows of one simple relation: some fall idle.
    X, y = _data(kind, n_samples=30, n_features=1, seed=9)
    model = ESTIMATORS[kind](
        n_experts=10, training=training, max_iter=40, random_state=9
    )
    record = _fit(model, X, y)
    assert _warned_experts(record) == set(np.flatnonzero(model.n_reseeds_))
    assert_finite_model(model, X, y)


@pytest.mark.parametrize("kind", BOTH)
def test_an_expert_returning_nan_is_refused_not_propagated(kind):
    """A NaN from an expert must not reach lower_bound_ or a prediction."""

    class NaNRegressor(LinearRegression):
        def predict(self, X):
            out = super().predict(X)
            out[0] = np.nan
            return out

    class NaNClassifier(LogisticRegression):
        def predict_proba(self, X):
            out = super().predict_proba(X)
            out[0] = np.nan
            return out

    X, y = _data(kind)
    broken = NaNRegressor() if kind == "regressor" else NaNClassifier()
    good = LinearRegression() if kind == "regressor" else LogisticRegression()
    model = ESTIMATORS[kind]([good, broken], random_state=0)
    with pytest.raises(ValueError, match=r"(?i)expert 1.*(nan|finite)"):
        model.fit(X, y)


# ---------------------------------------------------------------------------
# Rare classes


RARE_CONFIGS = [
    {"training": "em"},
    {"training": "hard"},
    {"training": "fixed"},
    {"training": "em", "gate": "constant", "n_experts": 4},
    {"training": "em", "gate": DecisionTreeClassifier(max_depth=3)},
    {"training": "hard", "pooling": "argmax", "n_experts": 4},
    {"training": "em", "partition": "random", "n_experts": 4},
]


@pytest.mark.parametrize(
    "params", RARE_CONFIGS, ids=lambda p: "-".join(map(str, p.values()))
)
def test_classes_that_only_a_few_rows_carry(params):
    X, y = _data("classifier", n_samples=60)
    y = y.astype(object)
    y[7] = "rare"  # one row
    y[[11, 40]] = "scarce"  # two rows
    params = {"n_experts": 3, "random_state": 0, **params}
    model = MixtureOfExpertsClassifier(**params)
    _fit(model, X, y)
    assert_finite_model(model, X, y)
    assert list(model.classes_) == ["no", "rare", "scarce", "yes"]
    proba = model.predict_proba(X)
    assert proba.shape == (60, 4)
    # Every class keeps a positive probability everywhere.
    assert np.all(proba > 0)


def test_a_class_carried_only_by_rows_of_zero_weight():
    X, y = _data("classifier", n_samples=60)
    y = y.astype(object)
    y[[3, 30]] = "ghost"
    weights = np.ones(60)
    weights[[3, 30]] = 0.0
    model = MixtureOfExpertsClassifier(random_state=0)
    _fit(model, X, y, sample_weight=weights)
    assert_finite_model(model, X, y)
    assert "ghost" in model.classes_
    assert model.predict_proba(X).shape == (60, 3)


# ---------------------------------------------------------------------------
# Reproducibility


CONFIGS = [
    {},
    {"training": "hard"},
    {"training": "fixed", "gate": "constant"},
    {"partition": "random", "n_init": 3},
    # A classifier gate with random_state=None: the mixture must seed it.
    {"partition": "gmm", "gate": DecisionTreeClassifier(max_depth=2, max_features=1)},
    {"gate": "constant", "pooling": "argmax"},
    {"feature_groups": [[0, 1], [1, 2], [2]], "top_k": 2},
    {"capacity_factor": 1.2, "training": "hard"},
    {"cv": 3, "n_experts": 2},
]


def _config_id(params):
    return "-".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def _outputs(model, X):
    out = {
        "predict": model.predict(X),
        "predict_gate": model.predict_gate(X),
        "predict_expert": model.predict_expert(X),
    }
    if isinstance(model, MixtureOfExpertsClassifier):
        out["predict_proba"] = model.predict_proba(X)
    else:
        out["std"] = model.predict(X, return_std=True)[1]
    return out


def _assert_same_outputs(a, b, X):
    out_a, out_b = _outputs(a, X), _outputs(b, X)
    for name in out_a:
        np.testing.assert_array_equal(out_a[name], out_b[name], err_msg=name)
    assert a.lower_bounds_ == b.lower_bounds_
    assert a.n_iter_ == b.n_iter_


def _model(kind, params, **extra):
    # A few EM iterations are enough to compare two models (any
    # ConvergenceWarning is let through by _fit).
    params = {"random_state": 0, "max_iter": 15, **params, **extra}
    return ESTIMATORS[kind](
        **{k: clone(v) if hasattr(v, "fit") else v for k, v in params.items()}
    )


X_TEST = np.random.RandomState(5).normal(size=(30, 3))


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("params", CONFIGS, ids=_config_id)
def test_same_random_state_gives_bit_identical_models(kind, params):
    X, y = _data(kind, n_samples=80)
    a = _model(kind, params, random_state=3)
    b = _model(kind, params, random_state=3)
    _fit(a, X, y)
    _fit(b, X, y)
    _assert_same_outputs(a, b, X_TEST)
    # A RandomState instance seeded alike, and a refit of the same object.
    c = _model(kind, params, random_state=np.random.RandomState(3))
    _fit(c, X, y)
    d = _model(kind, params, random_state=np.random.RandomState(3))
    _fit(d, X, y)
    _assert_same_outputs(c, d, X_TEST)
    _fit(a, X, y)
    _assert_same_outputs(a, b, X_TEST)


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("params", CONFIGS, ids=_config_id)
def test_n_jobs_does_not_change_the_model(kind, params):
    X, y = _data(kind, n_samples=80)
    one = _model(kind, params, n_jobs=1)
    two = _model(kind, params, n_jobs=2)
    _fit(one, X, y)
    _fit(two, X, y)
    _assert_same_outputs(one, two, X_TEST)


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("params", CONFIGS, ids=_config_id)
def test_pickle_round_trip_keeps_predictions(kind, params):
    X, y = _data(kind, n_samples=80)
    model = _model(kind, params)
    _fit(model, X, y)
    restored = pickle.loads(pickle.dumps(model))
    _assert_same_outputs(model, restored, X_TEST)
    np.testing.assert_array_equal(
        restored.log_likelihood(X, y), model.log_likelihood(X, y)
    )
    # The restored model refits to the same model.
    _fit(restored, X, y)
    _assert_same_outputs(model, restored, X_TEST)


def test_pickle_does_not_carry_the_training_data():
    sizes = []
    for n_samples in (200, 4000):
        X, y = make_regimes(n_samples=n_samples, n_regimes=3, random_state=0)
        model = MixtureOfExpertsRegressor(random_state=0)
        _fit(model, X, y)
        sizes.append(len(pickle.dumps(model)))
    assert sizes[1] < sizes[0] + 1000, sizes


# Row-wise prediction: one configuration per line, covering every training,
# pooling and gate, with and without feature groups.
ROW_WISE = [
    {"training": "em", "pooling": "weighted", "gate": "softmax"},
    {"training": "em", "pooling": "argmax", "gate": "constant"},
    {"training": "em", "top_k": 2, "gate": DecisionTreeClassifier(max_depth=3)},
    {"training": "hard", "pooling": "weighted", "gate": "constant"},
    {
        "training": "hard",
        "pooling": "argmax",
        "gate": DecisionTreeClassifier(max_depth=3),
    },
    {"training": "hard", "top_k": 2, "gate": "softmax"},
    {
        "training": "fixed",
        "pooling": "weighted",
        "gate": DecisionTreeClassifier(max_depth=3),
    },
    {"training": "fixed", "pooling": "argmax", "gate": "softmax"},
    {"training": "fixed", "top_k": 2, "gate": "constant"},
    {"feature_groups": [[0], [1, 2], [0, 2]], "pooling": "weighted"},
    {"feature_groups": [[0, 1], [2]], "pooling": "argmax", "training": "hard"},
    {"feature_groups": [[0], [1], [2]], "top_k": 2, "gate": "constant"},
    {"capacity_factor": 1.1, "training": "hard", "overflow": "drop"},
    {"capacity_factor": 1.1, "training": "em"},
    {"cv": 3, "n_experts": 2},
]


def _row_outputs(model, X):
    out = _outputs(model, X)
    if "std" in out:
        # sqrt(E[y^2] - E[y]^2) cancels digits far out: compare variances
        # against the scale of the second moment instead.
        out["variance"] = out.pop("std") ** 2
        out["second moment"] = out["variance"] + out["predict"] ** 2
    return out


def _assert_rows_match(got, expected, name):
    if name == "variance":
        return  # checked through the second moment
    if expected.dtype.kind in "fc":
        scale = max(1.0, float(np.max(np.abs(expected))))
        # Equal up to a few ulps: BLAS may sum a lone row in another order.
        np.testing.assert_allclose(
            got, expected, rtol=1e-12, atol=1e-13 * scale, err_msg=name
        )
    else:
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("params", ROW_WISE, ids=_config_id)
def test_predictions_are_row_wise(kind, params):
    X, y = _data(kind, n_samples=80)
    model = _model(kind, params)
    _fit(model, X, y)
    rng = np.random.RandomState(1)
    X_batch = np.vstack([X_TEST[:20], 50 * X_TEST[20:]])  # some rows far out
    batch = _row_outputs(model, X_batch)
    alone = [_row_outputs(model, X_batch[i : i + 1]) for i in range(len(X_batch))]
    order = rng.permutation(len(X_batch))
    shuffled = _row_outputs(model, X_batch[order])
    # Among many other rows (including duplicates of its own).
    crowd = np.vstack([X_batch, X, X_batch[:5], 1e4 * X[:5]])
    crowded = _row_outputs(model, crowd)
    for name, values in batch.items():
        _assert_rows_match(np.concatenate([a[name] for a in alone]), values, name)
        _assert_rows_match(shuffled[name], values[order], name)
        _assert_rows_match(crowded[name][: len(X_batch)], values, name)
