"""ONNX export: converters of the mixtures for skl2onnx.

Importing this module registers converters for
:class:`~mixexp.MixtureOfExpertsRegressor` and
:class:`~mixexp.MixtureOfExpertsClassifier` with skl2onnx, after which
``skl2onnx.to_onnx(model, X_sample)`` converts a fitted mixture, alone or
inside a Pipeline. It needs the ``onnx`` extra (skl2onnx, onnxruntime to run
the result)::

    pip install "mixexp[onnx]"

What is converted, and by whom:

- the experts and a classifier gate: by skl2onnx's own converters, so any
  expert skl2onnx converts is supported (a nested mixture by this module);
- the softmax and constant gates, and the pooling (``"weighted"``,
  ``"argmax"``, ``top_k``): by this module.

The regressor's graph outputs its prediction, shape (n_samples, n_outputs);
the classifier's its label and its class probabilities (through ZipMap
unless ``options={"zipmap": False}``). ``predict(return_std=True)`` has no
ONNX counterpart. An expert or gate that skl2onnx cannot convert is refused
with a ``TypeError`` that names it.

Examples
--------
>>> import numpy as np
>>> import mixexp.onnx  # registers the converters
>>> from skl2onnx import to_onnx
>>> from mixexp import MixtureOfExpertsRegressor
>>> from mixexp.datasets import make_regimes
>>> X, y = make_regimes(n_samples=300, random_state=0)
>>> moe = MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X, y)
>>> onx = to_onnx(moe, X[:1].astype(np.float32))
>>> from onnxruntime import InferenceSession
>>> session = InferenceSession(onx.SerializeToString())
>>> onnx_pred = session.run(None, {"X": X.astype(np.float32)})[0]
>>> bool(np.allclose(onnx_pred.ravel(), moe.predict(X), rtol=1e-4, atol=1e-4))
True
"""

import numpy as np
from onnx import TensorProto
from onnx.helper import make_tensor
from skl2onnx import update_registered_converter
from skl2onnx._supported_operators import sklearn_operator_name_map
from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
from skl2onnx.algebra.onnx_ops import (
    OnnxAdd,
    OnnxArgMax,
    OnnxConcat,
    OnnxConstantOfShape,
    OnnxDiv,
    OnnxGather,
    OnnxIdentity,
    OnnxMatMul,
    OnnxMax,
    OnnxMul,
    OnnxOneHot,
    OnnxReduceSumApi11,
    OnnxShape,
    OnnxSoftmax,
    OnnxTopK,
)
from skl2onnx.common.data_types import guess_numpy_type
from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
from sklearn.pipeline import Pipeline

from mixexp._classes import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp._likelihood import PROBA_FLOOR
from mixexp.gating import ClassifierGate, ConstantGate, SoftmaxGate

__all__ = []  # importing the module is the API


def _check_convertible(estimator, name):
    """Refuse, naming it, a part that skl2onnx has no converter for."""
    if isinstance(estimator, Pipeline):
        for step_name, step in estimator.steps:
            if step not in (None, "passthrough"):
                _check_convertible(step, f"{name} (Pipeline step {step_name!r})")
        return
    if type(estimator) not in sklearn_operator_name_map:
        raise TypeError(
            f"{name} ({type(estimator).__name__}) cannot be exported to ONNX: "
            "skl2onnx has no converter for it. Use an expert and a gate that "
            "skl2onnx converts (see skl2onnx's list of supported models), or "
            "register a converter for it with "
            "skl2onnx.update_registered_converter."
        )


def _columns(X, columns, opv):
    """The given columns of X (all of them for None)."""
    if columns is None:
        return X
    return OnnxGather(X, np.asarray(columns, dtype=np.int64), axis=1, op_version=opv)


def _row_ones(X, dtype, opv):
    """An (n, 1) array of ones, whatever X holds (NaN included)."""
    n_rows = OnnxGather(OnnxShape(X, op_version=opv), np.array([0]), op_version=opv)
    shape = OnnxConcat(n_rows, np.array([1], dtype=np.int64), axis=0, op_version=opv)
    onnx_type = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    return OnnxConstantOfShape(
        shape, value=make_tensor("value", onnx_type, [1], [1.0]), op_version=opv
    )


def _placed(proba, classes, n_columns, dtype, opv):
    """Columns of `proba` moved under their indices `classes` (of n_columns)."""
    classes = np.asarray(classes).astype(np.int64)
    if np.array_equal(classes, np.arange(n_columns)):
        return proba
    selection = np.zeros((classes.shape[0], n_columns), dtype=dtype)
    selection[np.arange(classes.shape[0]), classes] = 1.0
    return OnnxMatMul(proba, selection, op_version=opv)


def _gate_proba(gate, X, dtype, opv):
    """The fitted gate's probabilities, (n, n_experts)."""
    n_experts = gate.classes_.shape[0]
    if isinstance(gate, SoftmaxGate):
        scores = OnnxAdd(
            OnnxMatMul(X, gate.coef_.astype(dtype), op_version=opv),
            gate.intercept_.astype(dtype),
            op_version=opv,
        )
        return OnnxSoftmax(scores, axis=1, op_version=opv)
    if isinstance(gate, ClassifierGate) and gate._constant is None:
        _check_convertible(gate.estimator_, "the gate")
        proba = OnnxSubEstimator(
            gate.estimator_, X, options={"zipmap": False}, op_version=opv
        )[1]
        return _placed(proba, gate.estimator_.classes_, n_experts, dtype, opv)
    if isinstance(gate, ConstantGate):
        proportions = gate.proportions_
    elif isinstance(gate, ClassifierGate):  # one expert held every row
        proportions = np.zeros(n_experts)
        proportions[gate._constant.classes_.astype(int)] = gate._constant.class_prior_
    else:
        raise TypeError(
            f"the gate ({type(gate).__name__}) cannot be exported to ONNX: "
            "mixexp converts SoftmaxGate, ConstantGate and ClassifierGate."
        )
    return OnnxMatMul(
        _row_ones(X, dtype, opv),
        proportions.astype(dtype)[np.newaxis, :],
        op_version=opv,
    )


def _pooling_weights(model, gate, dtype, opv):
    """The per-row weights of the experts, as the model pools them."""
    n_experts = model.n_experts_
    k = 1 if model.pooling == "argmax" else model.top_k
    if k is None:
        return gate
    if k == 1:
        chosen = OnnxArgMax(gate, axis=1, keepdims=1, op_version=opv)
    else:
        chosen = OnnxTopK(gate, np.array([k], dtype=np.int64), axis=1, op_version=opv)[
            1
        ]
    one_hot = OnnxOneHot(
        chosen,
        np.array([n_experts], dtype=np.int64),
        np.array([0.0, 1.0], dtype=dtype),
        axis=-1,
        op_version=opv,
    )
    mask = OnnxReduceSumApi11(one_hot, axes=[1], keepdims=0, op_version=opv)
    kept = OnnxMul(gate, mask, op_version=opv)
    total = OnnxReduceSumApi11(kept, axes=[1], keepdims=1, op_version=opv)
    return OnnxDiv(kept, total, op_version=opv)


def _weighted_sum(weights, outputs, opv):
    """``sum_k weights[:, k] * outputs[k]``."""
    total = None
    for k, output in enumerate(outputs):
        weight = OnnxGather(
            weights, np.array([k], dtype=np.int64), axis=1, op_version=opv
        )
        term = OnnxMul(weight, output, op_version=opv)
        total = term if total is None else OnnxAdd(total, term, op_version=opv)
    return total


def _expert_inputs(model, X, opv):
    groups = model.feature_groups_
    return [
        _columns(X, None if groups is None else groups[k], opv)
        for k in range(model.n_experts_)
    ]


def _mixture(operator):
    model = operator.raw_operator
    for k, expert in enumerate(model.experts_):
        _check_convertible(expert, f"expert {k}")
    return model


def _convert_regressor(scope, operator, container):
    model = _mixture(operator)
    if container.get_options(model, {"return_std": False})["return_std"]:
        raise TypeError(
            "predict(return_std=True) cannot be exported to ONNX: the graph "
            "gives the pooled prediction only. Compute the predictive spread "
            "in Python, or export without the return_std option."
        )
    opv = container.target_opset
    X = operator.inputs[0]
    dtype = guess_numpy_type(X.type)
    gate = _gate_proba(model.gate_, _columns(X, model.gate_features_, opv), dtype, opv)
    weights = _pooling_weights(model, gate, dtype, opv)
    outputs = [
        OnnxSubEstimator(expert, part, op_version=opv)
        for expert, part in zip(
            model.experts_, _expert_inputs(model, X, opv), strict=True
        )
    ]
    prediction = OnnxIdentity(
        _weighted_sum(weights, outputs, opv),
        output_names=operator.outputs[:1],
        op_version=opv,
    )
    prediction.add_to(scope, container)


def _regressor_shape(operator):
    n_rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = operator.inputs[0].type.__class__(
        [n_rows, operator.raw_operator._n_outputs]
    )


def _convert_classifier(scope, operator, container):
    model = _mixture(operator)
    opv = container.target_opset
    X = operator.inputs[0]
    dtype = guess_numpy_type(X.type)
    n_classes = model.classes_.shape[0]
    gate = _gate_proba(model.gate_, _columns(X, model.gate_features_, opv), dtype, opv)
    weights = _pooling_weights(model, gate, dtype, opv)
    outputs = []
    for expert, part in zip(model.experts_, _expert_inputs(model, X, opv), strict=True):
        proba = OnnxSubEstimator(
            expert, part, options={"zipmap": False}, op_version=opv
        )[1]
        # As mixexp aligns an expert's probabilities: floored, placed under
        # the mixture's classes (a class the expert never saw at the floor),
        # renormalised.
        floored = OnnxMax(proba, np.array([PROBA_FLOOR], dtype=dtype), op_version=opv)
        classes = np.asarray(expert.classes_).astype(np.int64)
        missing = np.full(n_classes, PROBA_FLOOR, dtype=dtype)
        missing[classes] = 0.0
        full = OnnxAdd(
            _placed(floored, classes, n_classes, dtype, opv), missing, op_version=opv
        )
        total = OnnxReduceSumApi11(full, axes=[1], keepdims=1, op_version=opv)
        outputs.append(OnnxDiv(full, total, op_version=opv))
    pooled = _weighted_sum(weights, outputs, opv)
    total = OnnxReduceSumApi11(pooled, axes=[1], keepdims=1, op_version=opv)
    proba = OnnxDiv(pooled, total, op_version=opv)
    best = OnnxArgMax(proba, axis=1, keepdims=0, op_version=opv)
    label = OnnxGather(
        _label_array(model.classes_),
        best,
        axis=0,
        output_names=operator.outputs[:1],
        op_version=opv,
    )
    label.add_to(scope, container)
    OnnxIdentity(proba, output_names=operator.outputs[1:2], op_version=opv).add_to(
        scope, container
    )


def _label_array(classes):
    if np.issubdtype(np.asarray(classes).dtype, np.integer):
        return np.asarray(classes, dtype=np.int64)
    return np.asarray(classes).astype(str)


update_registered_converter(
    MixtureOfExpertsRegressor,
    "MixexpMixtureOfExpertsRegressor",
    _regressor_shape,
    _convert_regressor,
    # Declared so that asking for it gets a clear refusal, not skl2onnx's
    # "unknown option".
    options={"return_std": [False, True]},
)
update_registered_converter(
    MixtureOfExpertsClassifier,
    "MixexpMixtureOfExpertsClassifier",
    calculate_linear_classifier_output_shapes,
    _convert_classifier,
    options={"zipmap": [True, False, "columns"], "nocl": [True, False]},
)
