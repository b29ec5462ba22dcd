"""ONNX export (mixexp.onnx): onnxruntime gives what predict gives."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

pytest.importorskip("skl2onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from skl2onnx import to_onnx  # noqa: E402

import mixexp.onnx  # noqa: E402, F401  (registers the converters)
from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor  # noqa: E402
from mixexp.datasets import make_regimes, make_xor  # noqa: E402

RTOL = 1e-4  # the parity target for float32 input


def _run(onx, X):
    session = onnxruntime.InferenceSession(
        onx.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: X.astype(np.float32)})


def _max_relative_error(actual, expected):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1.0)))


def _regimes():
    X, y = make_regimes(n_samples=600, n_features=3, random_state=0)
    return train_test_split(X, y, random_state=0)


REGRESSORS = {
    "linear experts, softmax gate": MixtureOfExpertsRegressor(n_experts=3),
    "tree experts, argmax pooling": MixtureOfExpertsRegressor(
        DecisionTreeRegressor(max_depth=4), n_experts=3, pooling="argmax"
    ),
    "top_k=2, constant gate": MixtureOfExpertsRegressor(
        n_experts=3, gate="constant", top_k=2
    ),
    "nested mixture": MixtureOfExpertsRegressor(
        MixtureOfExpertsRegressor(n_experts=2, random_state=0), n_experts=2
    ),
    "feature groups, gate features": MixtureOfExpertsRegressor(
        n_experts=2, feature_groups=[[0, 1], [1, 2]], gate_features=[0, 1]
    ),
    "tree gate": MixtureOfExpertsRegressor(
        n_experts=3, gate=DecisionTreeClassifier(max_depth=4)
    ),
}


@pytest.mark.parametrize("name", list(REGRESSORS))
def test_a_regressor_predicts_the_same_in_onnxruntime(name):
    X_train, X_test, y_train, _ = _regimes()
    model = REGRESSORS[name].set_params(random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence is not the point here
        model.fit(X_train, y_train)
    onx = to_onnx(model, X_train[:1].astype(np.float32))
    (prediction,) = _run(onx, X_test)
    assert prediction.shape == (X_test.shape[0], 1)
    expected = model.predict(X_test.astype(np.float32))
    assert _max_relative_error(prediction.ravel(), expected) <= RTOL


def test_a_pipeline_with_preprocessing_exports():
    X_train, X_test, y_train, _ = _regimes()
    model = make_pipeline(
        StandardScaler(), MixtureOfExpertsRegressor(n_experts=3, random_state=0)
    ).fit(X_train, y_train)
    (prediction,) = _run(to_onnx(model, X_train[:1].astype(np.float32)), X_test)
    expected = model.predict(X_test.astype(np.float32))
    assert _max_relative_error(prediction.ravel(), expected) <= RTOL


@pytest.mark.parametrize("labels", [["a", "b"], [0, 1]], ids=["strings", "ints"])
def test_a_classifier_gives_the_same_labels_and_probabilities(labels):
    X, y = make_xor(n_samples=500, random_state=0)
    y = np.asarray(labels)[y]
    X_train, X_test, y_train, _ = train_test_split(X, y, random_state=0)
    model = MixtureOfExpertsClassifier(
        LogisticRegression(), n_experts=4, random_state=0
    ).fit(X_train, y_train)
    onx = to_onnx(
        model, X_train[:1].astype(np.float32), options={id(model): {"zipmap": False}}
    )
    label, proba = _run(onx, X_test)
    X32 = X_test.astype(np.float32)
    np.testing.assert_array_equal(label, model.predict(X32))
    assert _max_relative_error(proba, model.predict_proba(X32)) <= RTOL


def test_a_classifier_exports_with_zipmap():
    X, y = make_xor(n_samples=300, random_state=0)
    model = MixtureOfExpertsClassifier(n_experts=4, random_state=0).fit(X, y)
    label, proba = _run(to_onnx(model, X[:1].astype(np.float32)), X[:20])
    np.testing.assert_array_equal(label, model.predict(X[:20].astype(np.float32)))
    # ZipMap: one {class: probability} dict per row.
    assert isinstance(proba, list) and set(proba[0]) == {0, 1}
    expected = model.predict_proba(X[:20].astype(np.float32))
    np.testing.assert_allclose([row[1] for row in proba], expected[:, 1], atol=1e-5)


class _Unconvertible(LinearRegression):
    """A regressor skl2onnx has never heard of."""


def test_an_expert_skl2onnx_cannot_convert_is_named():
    X_train, _, y_train, _ = _regimes()
    model = MixtureOfExpertsRegressor(
        [LinearRegression(), _Unconvertible()], random_state=0
    ).fit(X_train, y_train)
    with pytest.raises(TypeError, match=r"expert 1 \(_Unconvertible\) cannot be"):
        to_onnx(model, X_train[:1].astype(np.float32))


def test_return_std_is_refused_by_name():
    X_train, _, y_train, _ = _regimes()
    model = MixtureOfExpertsRegressor(n_experts=2, random_state=0).fit(X_train, y_train)
    with pytest.raises(TypeError, match=r"return_std=True\) cannot be exported"):
        to_onnx(
            model,
            X_train[:1].astype(np.float32),
            options={id(model): {"return_std": True}},
        )
