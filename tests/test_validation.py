"""Bad input is refused clearly, and a failed fit leaves the estimator as it was.

``CASES`` is the one table of bad-input cases: it parametrizes
``test_bad_input_is_refused_clearly`` and renders ``docs/bad_input.md``
("What mixexp does with bad input"), which
``test_bad_input_page_lists_every_case`` keeps in step with it. After
changing the table, regenerate the page with::

    python tests/test_validation.py

Each case's ``says`` is the message quoted on the page; the test checks that
the quote and the message actually raised both match the case's pattern.
Where the words are scikit-learn's, the case names the scikit-learn call that
refuses the same input (``sklearn_call``), and the test reads the message
from it instead of holding it to the quote.
"""

import pickle
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.cluster import DBSCAN
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import (
    GammaRegressor,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    SGDClassifier,
    SGDRegressor,
    TweedieRegressor,
)
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor

PAGE = Path(__file__).resolve().parents[1] / "docs" / "bad_input.md"

# ---------------------------------------------------------------------------
# Data and estimators the cases act on.

N_ROWS = 40
_rng = np.random.RandomState(0)
X = _rng.normal(size=(N_ROWS, 3))
_CODES = np.digitize(X[:, 0], [-0.4, 0.4])  # three classes of 11-16 rows
Y = {
    "regressor": X @ np.array([1.0, -2.0, 0.5]) + 0.1 * _rng.normal(size=N_ROWS),
    "classifier": np.array(["ant", "bee", "cat"])[_CODES],
}
# Numeric targets of both kinds, for the cases that put NaN or inf in y.
Y_FLOAT = {"regressor": Y["regressor"], "classifier": _CODES.astype(float)}
ESTIMATORS = {
    "regressor": MixtureOfExpertsRegressor,
    "classifier": MixtureOfExpertsClassifier,
}
BOTH = ("regressor", "classifier")


@dataclass(frozen=True)
class Kit:
    """What a case needs to build its bad call, for one kind of mixture."""

    kind: str

    @property
    def X(self):
        return X.copy()

    @property
    def y(self):
        return Y[self.kind].copy()

    @property
    def y_float(self):
        return Y_FLOAT[self.kind].copy()

    def make(self, *args, **params):
        params.setdefault("random_state", 0)
        return ESTIMATORS[self.kind](*args, **params)

    def fit(self, X=None, y=None, sample_weight=None, **params):
        return self.make(**params).fit(
            self.X if X is None else X,
            self.y if y is None else y,
            sample_weight=sample_weight,
        )

    def fitted(self):
        return _fitted(self.kind)

    @property
    def linear_expert(self):
        if self.kind == "regressor":
            return LinearRegression()
        return LogisticRegression()

    @property
    def unweighted_expert(self):
        """An expert whose fit takes no sample_weight."""
        if self.kind == "regressor":
            return KNeighborsRegressor(n_neighbors=3)
        return KNeighborsClassifier(n_neighbors=3)

    @property
    def online_expert(self):
        """An expert that partial_fit can train."""
        if self.kind == "regressor":
            return LinearRegression()
        return SGDClassifier(loss="log_loss", random_state=0)

    def partial(self, X=None, y=None, **params):
        """A mixture after a first call of partial_fit (every class given)."""
        params.setdefault("expert", self.online_expert)
        params.setdefault("n_experts", 2)
        classes = {} if self.kind == "regressor" else {"classes": np.unique(self.y)}
        return self.make(**params).partial_fit(
            self.X if X is None else X, self.y if y is None else y, **classes
        )


@cache
def _fitted(kind):
    return Kit(kind).fit(n_experts=2)


KITS = {kind: Kit(kind) for kind in BOTH}


def _with_label(labels, index, label):
    labels = np.array(labels, dtype=object)
    labels[index] = label
    return labels


def _with(array, index, value):
    array = np.array(array, dtype=float)
    array[index] = value
    return array


def _frame(array):
    return pd.DataFrame(array, columns=["a", "b", "c"])


class _UnweightedOnlineRegressor(SGDRegressor):
    """An SGDRegressor whose partial_fit takes no sample_weight."""

    def partial_fit(self, X, y):
        return super().partial_fit(X, y)


def _warm_refit_on_fewer_features(k):
    model = k.fit(n_experts=2, warm_start=True)
    model.fit(k.X[:, :2], k.y)


def _dask(array, rows=20, columns=-1):
    """`array` as a dask array of `rows`-row chunks."""
    import dask.array as da

    chunks = (rows,) if array.ndim == 1 else (rows, columns)
    return da.from_array(array, chunks=chunks)


def _unknown_row_chunks(k):
    X = _dask(k.X)
    return X[X[:, 0] > -100.0]  # a filter: the chunk sizes become unknown


# ---------------------------------------------------------------------------
# The table.


@dataclass(frozen=True)
class Case:
    """One kind of bad input and how mixexp must refuse it."""

    id: str
    case: str  # what is wrong, as the page says it
    error: type  # the exception (any subclass passes)
    match: str  # pattern the message must match (re.search)
    says: str  # the message, as quoted on the page; must match too
    trigger: Callable[[Kit], object]
    kinds: tuple = BOTH
    # When scikit-learn words the refusal: its call that refuses the same
    # input, so that the test reads its message rather than the quote.
    sklearn_call: Callable[[Kit], object] | None = None

    def render(self):
        return f'- {self.case}: {self.error.__name__}: "{self.says}"'

    def quote_pattern(self):
        """The page's quote as a pattern the real message must start with.

        ``...`` stands for anything (an estimator's name, a repr); a
        ``{...}`` set of options matches its options in any order, since
        scikit-learn prints them in set order.
        """
        parts = re.split(r"(\{[^{}]*\}|\.\.\.)", self.says)
        pattern = "".join(
            ".*?"
            if part == "..."
            else r"\{[^{}]*\}"
            if part.startswith("{")
            else re.escape(part)
            for part in parts
        )
        return re.compile(pattern, re.DOTALL)


CASES = [
    # --- X and y -----------------------------------------------------------
    Case(
        "nan-X",
        "NaN in X",
        ValueError,
        r"Input X contains NaN",
        "Input X contains NaN.",
        lambda k: k.fit(X=_with(k.X, (3, 1), np.nan)),
    ),
    Case(
        "inf-X",
        "infinity in X",
        ValueError,
        r"Input X contains infinity",
        "Input X contains infinity or a value too large for dtype('float64').",
        lambda k: k.fit(X=_with(k.X, (5, 0), -np.inf)),
    ),
    Case(
        "nan-y",
        "NaN in y",
        ValueError,
        r"Input y contains NaN",
        "Input y contains NaN.",
        lambda k: k.fit(y=_with(k.y_float, 2, np.nan)),
    ),
    Case(
        "inf-y",
        "infinity in y",
        ValueError,
        r"Input y contains infinity",
        "Input y contains infinity or a value too large for dtype('float64').",
        lambda k: k.fit(y=_with(k.y_float, 2, np.inf)),
    ),
    Case(
        "1d-X",
        "1-D X",
        ValueError,
        r"(?s)^(?=.*\bX\b)(?=.*\b[12]-?D\b)",
        "X must be 2-D, of shape (n_samples, n_features); got a 1-D array.",
        lambda k: k.fit(X=k.X[:, 0]),
    ),
    Case(
        "length-mismatch",
        "X and y of different lengths",
        ValueError,
        r"(?s)^(?=.*\bX\b)(?=.*\by\b)(?=.*\b40\b)(?=.*\b39\b)",
        "X has 40 rows but y has 39.",
        lambda k: k.fit(y=k.y[:-1]),
    ),
    Case(
        "no-rows",
        "no rows",
        ValueError,
        r"(?s)^(?=.*\bX\b)(?=.*\b0 (sample|row))",
        "X has 0 rows (shape=(0, 3)); at least 1 is required.",
        lambda k: k.fit(X=k.X[:0], y=k.y[:0]),
    ),
    Case(
        "sparse-X",
        "sparse X (not supported)",
        TypeError,
        r"(?s)[Ss]parse.*\bX\b.*dense",
        "Sparse data was passed for X, but dense data is required. Use "
        "'.toarray()' to convert to a dense numpy array.",
        lambda k: k.fit(X=sp.csr_matrix(k.X)),
    ),
    Case(
        "sparse-y",
        "sparse y (not supported)",
        TypeError,
        r"(?s)^(?=.*[Ss]parse)(?=.*\by\b)",
        "Sparse data was passed for y, but dense data is required.",
        lambda k: k.fit(y=sp.csr_matrix(k.y_float.reshape(-1, 1))),
    ),
    Case(
        "single-class",
        "a target with a single class (classifier)",
        ValueError,
        r"(?s)^(?=.*\by\b)(?=.*\b(one|single|1) class)",
        "y holds one class only ('ant'); the classifier needs at least 2.",
        lambda k: k.fit(y=np.full(N_ROWS, "ant")),
        ("classifier",),
    ),
    Case(
        "2d-y-classifier",
        "a 2-D target for the classifier",
        ValueError,
        r"y should be a 1d array",
        "y should be a 1d array, got an array of shape (40, 2) instead.",
        lambda k: k.fit(y=np.column_stack([k.y, k.y])),
        ("classifier",),
    ),
    # --- n_experts and the option strings ------------------------------------
    Case(
        "n-experts-zero",
        "n_experts=0",
        InvalidParameterError,
        r"'n_experts' parameter .* must be an int in the range \[1, inf\)\. Got 0",
        "The 'n_experts' parameter of ... must be an int in the range [1, inf). "
        "Got 0 instead.",
        lambda k: k.fit(n_experts=0),
    ),
    Case(
        "n-experts-float",
        "n_experts=2.5",
        InvalidParameterError,
        r"'n_experts' parameter .* must be an int .*Got 2\.5",
        "The 'n_experts' parameter of ... must be an int in the range [1, inf). "
        "Got 2.5 instead.",
        lambda k: k.fit(n_experts=2.5),
    ),
    Case(
        "n-experts-bool",
        "n_experts=True",
        TypeError,
        r"n_experts.*True",
        "n_experts must be an int, got True (a bool).",
        lambda k: k.fit(n_experts=True),
    ),
    Case(
        "n-experts-above-rows",
        "more experts than rows",
        ValueError,
        r"n_experts=41 must be <= n_samples=40",
        "n_experts=41 must be <= n_samples=40: each expert needs rows to learn from.",
        lambda k: k.fit(n_experts=41),
    ),
    Case(
        "gate-string",
        "an unknown gate string",
        InvalidParameterError,
        r"'gate' parameter .*Got 'softmx'",
        "The 'gate' parameter of ... must be a str among {'constant', 'softmax'} "
        "or an object implementing 'fit' and 'predict_proba'. Got 'softmx' instead.",
        lambda k: k.fit(gate="softmx"),
    ),
    Case(
        "partition-string",
        "an unknown partition string",
        InvalidParameterError,
        r"'partition' parameter .*Got 'kmean'",
        "The 'partition' parameter of ... must be a str among {'gmm', 'kmeans', "
        "'random'}, an object implementing 'fit_predict' or an object implementing "
        "'fit' and 'predict_proba'. Got 'kmean' instead.",
        lambda k: k.fit(partition="kmean"),
    ),
    Case(
        "training-string",
        "an unknown training string",
        InvalidParameterError,
        r"'training' parameter .*Got 'soft'",
        "The 'training' parameter of ... must be a str among {'em', 'fixed', "
        "'hard'}. Got 'soft' instead.",
        lambda k: k.fit(training="soft"),
    ),
    Case(
        "pooling-string",
        "an unknown pooling string",
        InvalidParameterError,
        r"'pooling' parameter .*Got 'mean'",
        "The 'pooling' parameter of ... must be a str among {'argmax', "
        "'weighted'}. Got 'mean' instead.",
        lambda k: k.fit(pooling="mean"),
    ),
    Case(
        "top-k-above-experts",
        "top_k larger than the number of experts",
        ValueError,
        r"top_k=4 exceeds the number of experts 3",
        "top_k=4 exceeds the number of experts 3.",
        lambda k: k.fit(n_experts=3, top_k=4),
    ),
    Case(
        "argmax-with-top-k",
        "pooling='argmax' with top_k > 1",
        ValueError,
        r"pooling='argmax' keeps one expert, but top_k=2",
        "pooling='argmax' keeps one expert, but top_k=2: use pooling='weighted' "
        "with top_k, or top_k=None.",
        lambda k: k.fit(pooling="argmax", top_k=2),
    ),
    Case(
        "min-expert-load",
        "min_expert_load that the experts cannot all meet",
        ValueError,
        r"min_expert_load=0\.5 cannot be met by 3 experts",
        "min_expert_load=0.5 cannot be met by 3 experts: it must be below "
        "1 / n_experts.",
        lambda k: k.fit(n_experts=3, min_expert_load=0.5),
    ),
    Case(
        "warm-start-features",
        "warm_start refit on another number of features",
        ValueError,
        r"warm_start=True continues the previous fit, which had 3 features; "
        r"X has 2",
        "warm_start=True continues the previous fit, which had 3 features; X has "
        "2. Set warm_start=False to start afresh.",
        _warm_refit_on_fewer_features,
    ),
    # --- feature_groups ----------------------------------------------------
    Case(
        "groups-index-out-of-range",
        "feature_groups with a column index that X does not have",
        ValueError,
        r"feature_groups\[1\] has column index 7, out of range",
        "feature_groups[1] has column index 7, out of range for X with n_features=3.",
        lambda k: k.fit(feature_groups=[[0, 1], [2, 7]]),
    ),
    Case(
        "groups-unknown-name",
        "feature_groups naming a column that the DataFrame does not have",
        ValueError,
        r"feature_groups\[1\] names column 'z', which is not in X",
        "feature_groups[1] names column 'z', which is not in X.",
        lambda k: k.fit(X=_frame(k.X), feature_groups=[["a"], ["b", "z"]]),
    ),
    Case(
        "groups-names-without-frame",
        "feature_groups naming columns of an X without column names",
        ValueError,
        r"feature_groups\[0\] names column 'a', but X has no column names",
        "feature_groups[0] names column 'a', but X has no column names: fit on a "
        "pandas DataFrame to select columns by name, or use integer indices.",
        lambda k: k.fit(feature_groups=[["a"], ["b"]]),
    ),
    Case(
        "groups-empty-group",
        "feature_groups with an empty group",
        ValueError,
        r"feature_groups\[1\] is empty",
        "feature_groups[1] is empty; every expert needs at least one column.",
        lambda k: k.fit(feature_groups=[[0], []]),
    ),
    Case(
        "groups-mask-selects-nothing",
        "feature_groups with a boolean mask that selects no column",
        ValueError,
        r"feature_groups\[1\] selects no column",
        "feature_groups[1] selects no column; every expert needs one.",
        lambda k: k.fit(feature_groups=[[True, False, True], [False] * 3]),
    ),
    Case(
        "groups-mask-length",
        "feature_groups with a boolean mask of the wrong length",
        ValueError,
        r"feature_groups\[0\] is a boolean mask of length 2, but X has 3 features",
        "feature_groups[0] is a boolean mask of length 2, but X has 3 features.",
        lambda k: k.fit(feature_groups=[[True, False], [True, True, False]]),
    ),
    Case(
        "groups-no-groups",
        "feature_groups with no group",
        ValueError,
        r"feature_groups must hold at least one column selection",
        "feature_groups must hold at least one column selection.",
        lambda k: k.fit(feature_groups=[]),
    ),
    Case(
        "groups-float-column",
        "feature_groups with a column that is neither an index nor a name",
        TypeError,
        r"feature_groups\[0\] holds 0\.5",
        "feature_groups[0] holds 0.5; columns are selected by integer index, name "
        "or boolean mask.",
        lambda k: k.fit(feature_groups=[[0.5], [1]]),
    ),
    Case(
        "groups-none-group",
        "feature_groups with a group that is not a column selection (None)",
        TypeError,
        r"feature_groups\[0\]",
        "feature_groups[0] is None; columns are selected by integer index, name "
        "or boolean mask.",
        lambda k: k.fit(feature_groups=[None, [1]]),
    ),
    Case(
        "groups-count-vs-experts",
        "feature_groups and an expert list of different lengths",
        ValueError,
        r"expert is a list of 2 estimators but feature_groups has 3 groups",
        "expert is a list of 2 estimators but feature_groups has 3 groups; give "
        "one group per expert.",
        lambda k: k.fit(
            expert=[k.linear_expert, k.linear_expert],
            feature_groups=[[0], [1], [2]],
        ),
    ),
    # --- sample_weight -----------------------------------------------------
    Case(
        "weights-negative",
        "a negative sample_weight",
        ValueError,
        r"(?i)negative.*sample_weight",
        "Negative values in data passed to `sample_weight`.",
        lambda k: k.fit(sample_weight=_with(np.ones(N_ROWS), 4, -1.0)),
    ),
    Case(
        "weights-all-zero",
        "sample_weight all zero",
        ValueError,
        r"(?i)sample[_ ]weights?\b.*\bzero",
        "Sample weights must contain at least one non-zero number.",
        lambda k: k.fit(sample_weight=np.zeros(N_ROWS)),
        # scikit-learn refuses them from 1.7 on; before, mixexp does.
        sklearn_call=lambda k: _check_sample_weight(
            np.zeros(N_ROWS), k.X, ensure_non_negative=True
        ),
    ),
    Case(
        "weights-nan",
        "NaN in sample_weight",
        ValueError,
        r"Input sample_weight contains NaN",
        "Input sample_weight contains NaN.",
        lambda k: k.fit(sample_weight=_with(np.ones(N_ROWS), 0, np.nan)),
    ),
    Case(
        "weights-length",
        "sample_weight of the wrong length",
        ValueError,
        r"sample_weight\.shape == \(39,\), expected \(40,\)",
        "sample_weight.shape == (39,), expected (40,)!",
        lambda k: k.fit(sample_weight=np.ones(N_ROWS - 1)),
    ),
    # --- experts, gate and partition that lack something ------------------------
    Case(
        "expert-not-estimator",
        "an expert without predict",
        InvalidParameterError,
        r"'expert' parameter .*Got StandardScaler\(\)",
        "The 'expert' parameter of ... must be an object implementing 'fit' and "
        "'predict', an instance of 'list' or None. Got StandardScaler() instead.",
        lambda k: k.fit(expert=StandardScaler()),
    ),
    Case(
        "expert-list-item",
        "an expert list holding a non-estimator",
        TypeError,
        r"expert\[1\]='not an estimator' is not an estimator",
        "expert[1]='not an estimator' is not an estimator: it needs fit and predict.",
        lambda k: k.fit(expert=[k.linear_expert, "not an estimator"]),
    ),
    Case(
        "expert-list-empty",
        "an empty expert list",
        ValueError,
        r"expert is an empty list",
        "expert is an empty list; give at least one expert.",
        lambda k: k.fit(expert=[]),
    ),
    Case(
        "expert-no-weights-soft-em",
        "an expert without sample_weight under training='em'",
        ValueError,
        r"(?s)expert=.* does not accept sample_weight.*training='hard'",
        "expert=KNeighbors...(n_neighbors=3) does not accept sample_weight in "
        "fit, which soft EM needs to pass the responsibilities. Use "
        "training='hard' (each row goes to one expert) or an expert that takes "
        "sample_weight.",
        lambda k: k.fit(expert=k.unweighted_expert),
    ),
    Case(
        "expert-no-weights-given-weights",
        "an expert without sample_weight, and a non-uniform sample_weight",
        ValueError,
        r"(?s)expert=.* does not accept sample_weight .*cannot honour the "
        r"sample_weight",
        "expert=KNeighbors...(n_neighbors=3) does not accept sample_weight in "
        "fit, so it cannot honour the sample_weight passed to fit.",
        lambda k: k.fit(
            expert=k.unweighted_expert,
            training="hard",
            sample_weight=np.arange(N_ROWS) % 3 + 1.0,
        ),
    ),
    Case(
        "expert-no-predict-proba",
        "a classifier expert without predict_proba",
        ValueError,
        r"expert=LinearSVC\(\) has no predict_proba",
        "expert=LinearSVC() has no predict_proba; the experts of a "
        "MixtureOfExpertsClassifier must give class probabilities (for example "
        "SVC(probability=True) rather than SVC()).",
        lambda k: k.fit(expert=LinearSVC()),
        ("classifier",),
    ),
    Case(
        "gate-no-predict-proba",
        "a gate without predict_proba",
        InvalidParameterError,
        r"'gate' parameter .*Got SVC\(\)",
        "The 'gate' parameter of ... must be a str among {'constant', 'softmax'} "
        "or an object implementing 'fit' and 'predict_proba'. Got SVC() instead.",
        lambda k: k.fit(gate=SVC()),
    ),
    Case(
        "gate-no-weights",
        "a gate whose fit takes no sample_weight",
        TypeError,
        r"gate KNeighborsClassifier\(\) cannot be a gate: its fit does not take "
        r"sample_weight",
        "The gate KNeighborsClassifier() cannot be a gate: its fit does not take "
        "sample_weight, which is how soft targets are passed. Use a classifier "
        "that does, 'softmax' or 'constant'.",
        lambda k: k.fit(gate=KNeighborsClassifier()),
    ),
    Case(
        "partition-not-clusterer",
        "a partition without fit_predict or predict_proba",
        InvalidParameterError,
        r"'partition' parameter .*Got PCA\(\)",
        "The 'partition' parameter of ... must be a str among {'gmm', 'kmeans', "
        "'random'}, an object implementing 'fit_predict' or an object implementing "
        "'fit' and 'predict_proba'. Got PCA() instead.",
        lambda k: k.fit(partition=PCA()),
    ),
    Case(
        "partition-fixed-clusters",
        "a partition clusterer whose number of clusters cannot be set",
        ValueError,
        r"partition clusterer DBSCAN\(.*\) found \d+ clusters but n_experts=3",
        "The partition clusterer DBSCAN(eps=10.0) found 1 clusters but "
        "n_experts=3: use a clusterer whose number of clusters can be set "
        "(n_clusters or n_components).",
        lambda k: k.fit(n_experts=3, partition=DBSCAN(eps=10.0)),
    ),
    # --- prediction --------------------------------------------------------
    Case(
        "predict-not-fitted",
        "predict before fit",
        NotFittedError,
        r"This \S+ instance is not fitted yet",
        "This MixtureOfExperts... instance is not fitted yet. Call 'fit' with "
        "appropriate arguments before using this estimator.",
        lambda k: k.make().predict(k.X),
    ),
    Case(
        "predict-n-features",
        "a wrong number of features at predict time",
        ValueError,
        r"X has 2 features, but \S+ is expecting 3 features as input",
        "X has 2 features, but MixtureOfExperts... is expecting 3 features as input.",
        lambda k: k.fitted().predict(k.X[:, :2]),
    ),
    Case(
        "predict-nan",
        "NaN in X at predict time",
        ValueError,
        r"Input X contains NaN",
        "Input X contains NaN.",
        lambda k: k.fitted().predict(_with(k.X, (0, 0), np.nan)),
    ),
    Case(
        "predict-1d",
        "1-D X at predict time",
        ValueError,
        r"(?s)^(?=.*\bX\b)(?=.*\b[12]-?D\b)",
        "X must be 2-D, of shape (n_samples, n_features); got a 1-D array.",
        lambda k: k.fitted().predict(k.X[0]),
    ),
    Case(
        "predict-sparse",
        "sparse X at predict time",
        TypeError,
        r"(?s)[Ss]parse.*\bX\b.*dense",
        "Sparse data was passed for X, but dense data is required. Use "
        "'.toarray()' to convert to a dense numpy array.",
        lambda k: k.fitted().predict(sp.csr_matrix(k.X)),
    ),
    Case(
        "log-likelihood-outputs",
        "log_likelihood with another number of outputs than fit",
        ValueError,
        r"y has 2 outputs, but \w+ was fitted with 1",
        "y has 2 outputs, but MixtureOfExpertsRegressor was fitted with 1.",
        lambda k: k.fitted().log_likelihood(k.X, np.column_stack([k.y, k.y])),
        ("regressor",),
    ),
    # --- online EM (partial_fit) -------------------------------------------
    Case(
        "partial-fit-no-classes",
        "no classes on the first call of partial_fit (classifier)",
        ValueError,
        r"classes must be passed on the first call of partial_fit",
        "classes must be passed on the first call of partial_fit: every label "
        "the stream may hold (for example classes=np.unique(y_all)).",
        lambda k: k.make(expert=k.online_expert, n_experts=2).partial_fit(k.X, k.y),
        ("classifier",),
    ),
    Case(
        "partial-fit-other-classes",
        "other classes on a later call of partial_fit (classifier)",
        ValueError,
        r"classes=\['ant', 'bee'\] is not the same as on the first call",
        "classes=['ant', 'bee'] is not the same as on the first call of "
        "partial_fit (or in fit): ['ant', 'bee', 'cat'].",
        lambda k: k.partial().partial_fit(k.X, k.y, classes=["ant", "bee"]),
        ("classifier",),
    ),
    Case(
        "partial-fit-label-not-in-classes",
        "a label of y missing from the classes of the first call of partial_fit",
        ValueError,
        r"y contains labels not in classes=\['ant', 'bee'\]: \['cat'\]",
        "y contains labels not in classes=['ant', 'bee']: ['cat']. Pass every "
        "label the stream may hold to the first call of partial_fit.",
        lambda k: k.make(expert=k.online_expert, n_experts=2).partial_fit(
            k.X, k.y, classes=["ant", "bee"]
        ),
        ("classifier",),
    ),
    Case(
        "partial-fit-new-label",
        "a new label on a later call of partial_fit",
        ValueError,
        r"y contains labels not seen in fit .*\['dog'\]",
        "y contains labels not seen in fit (nor in the classes of the first call "
        "of partial_fit): ['dog'].",
        lambda k: k.partial().partial_fit(k.X, _with_label(k.y, 0, "dog")),
        ("classifier",),
    ),
    Case(
        "partial-fit-expert",
        "partial_fit with an expert that has neither sufficient statistics nor "
        "partial_fit",
        ValueError,
        r"expert=KNeighbors\S+\(n_neighbors=3\) cannot be trained by partial_fit",
        "expert=KNeighbors...(n_neighbors=3) cannot be trained by partial_fit: it "
        "has no partial_fit of its own, and it is not a linear expert whose "
        "sufficient statistics mixexp keeps. Use ..., or train with fit.",
        lambda k: k.partial(expert=k.unweighted_expert),
    ),
    Case(
        "partial-fit-default-classifier-expert",
        "partial_fit with the classifier's default expert (LogisticRegression)",
        ValueError,
        r"expert=None \(the default, LogisticRegression\(\)\) cannot be trained",
        "expert=None (the default, LogisticRegression()) cannot be trained by "
        "partial_fit: it has no partial_fit of its own, and it is not a linear "
        "expert whose sufficient statistics mixexp keeps. Use an expert with "
        "predict_proba and a partial_fit that takes sample_weight, such as "
        "SGDClassifier(loss='log_loss'), MLPClassifier or GaussianNB, or train "
        "with fit.",
        lambda k: k.partial(expert=None),
        ("classifier",),
    ),
    Case(
        "partial-fit-expert-without-weights",
        "partial_fit with an expert whose partial_fit takes no sample_weight",
        ValueError,
        r"has a partial_fit without sample_weight",
        "expert=_UnweightedOnlineRegressor() has a partial_fit without "
        "sample_weight, which online soft EM needs to pass the responsibilities. "
        "Use ..., or train with fit.",
        lambda k: k.partial(expert=_UnweightedOnlineRegressor()),
        ("regressor",),
    ),
    Case(
        "partial-fit-gate",
        "partial_fit with a classifier as gate",
        ValueError,
        r"partial_fit does not support gate=DecisionTreeClassifier\(\)",
        "partial_fit does not support gate=DecisionTreeClassifier(): only the "
        "softmax and constant gates have an online update. Use gate='softmax' or "
        "gate='constant', or train with fit.",
        lambda k: k.partial(gate=DecisionTreeClassifier()),
    ),
    Case(
        "partial-fit-training",
        "partial_fit with training='hard' or 'fixed'",
        ValueError,
        r"partial_fit does not support training='hard'",
        "partial_fit does not support training='hard': online EM is soft EM, "
        "and hard EM and a fixed partition need all the rows at once. Use "
        "training='em', or train with fit.",
        lambda k: k.partial(training="hard"),
    ),
    Case(
        "partial-fit-cv",
        "partial_fit with cv",
        ValueError,
        r"partial_fit does not support cv=3",
        "partial_fit does not support cv=3: the out-of-fold E-step refits every "
        "expert once per fold, on rows a stream does not keep. Use cv=None, or "
        "train with fit.",
        lambda k: k.partial(cv=3),
    ),
    Case(
        "partial-fit-capacity",
        "partial_fit with capacity_factor",
        ValueError,
        r"partial_fit does not support capacity_factor=1\.5",
        "partial_fit does not support capacity_factor=1.5: an expert's capacity "
        "is a share of all the rows of an M-step, which a stream does not have. "
        "Use capacity_factor=None, or train with fit.",
        lambda k: k.partial(capacity_factor=1.5),
    ),
    Case(
        "partial-fit-min-expert-load",
        "partial_fit with min_expert_load",
        ValueError,
        r"partial_fit does not support min_expert_load=0\.1",
        "partial_fit does not support min_expert_load=0.1: re-seeding an expert "
        "needs the rows the mixture explains worst, which a stream does not "
        "keep. Use min_expert_load=None, or train with fit.",
        lambda k: k.partial(min_expert_load=0.1),
    ),
    Case(
        "partial-fit-n-features",
        "another number of features on a later call of partial_fit",
        ValueError,
        r"X has 2 features, but \S+ is expecting 3 features as input",
        "X has 2 features, but MixtureOfExperts... is expecting 3 features as input.",
        lambda k: k.partial().partial_fit(k.X[:, :2], k.y),
    ),
    Case(
        "partial-fit-outputs",
        "another number of outputs on a later call of partial_fit",
        ValueError,
        r"y has 2 outputs, but \w+ was fitted with 1",
        "y has 2 outputs, but MixtureOfExpertsRegressor was fitted with 1.",
        lambda k: k.partial().partial_fit(k.X, np.column_stack([k.y, k.y])),
        ("regressor",),
    ),
    Case(
        "partial-fit-2d-y",
        "a 2-D target on a later call of the classifier's partial_fit",
        ValueError,
        r"y should be a 1d array",
        "y should be a 1d array, got an array of shape (40, 2) instead.",
        lambda k: k.partial().partial_fit(k.X, np.column_stack([k.y, k.y])),
        ("classifier",),
    ),
    Case(
        "partial-fit-n-experts-changed",
        "n_experts changed between calls of partial_fit",
        ValueError,
        r"partial_fit continues the fitted model, which has 2 experts",
        "partial_fit continues the fitted model, which has 2 experts, but the "
        "parameters now give 3. Call fit, or partial_fit on a fresh clone.",
        lambda k: k.partial().set_params(n_experts=3).partial_fit(k.X, k.y),
    ),
    Case(
        "partial-fit-learning-decay",
        "learning_decay outside [0, 1]",
        InvalidParameterError,
        r"'learning_decay' parameter .* Got 1\.5",
        "The 'learning_decay' parameter of ... must be a float in the range "
        "[0.0, 1.0]. Got 1.5 instead.",
        lambda k: k.partial(learning_decay=1.5),
    ),
    # --- likelihood families and gate covariates ---------------------------
    Case(
        "likelihood-poisson-negative-y",
        "negative y for Poisson experts (likelihood='poisson')",
        ValueError,
        r"likelihood='poisson' needs y >= 0",
        "likelihood='poisson' needs y >= 0 (counts); y has ... negative values. "
        "Use likelihood='gaussian' or 'laplace' for targets of any sign.",
        lambda k: k.fit(expert=PoissonRegressor()),
        ("regressor",),
    ),
    Case(
        "likelihood-gamma-non-positive-y",
        "y <= 0 for Gamma experts (likelihood='gamma')",
        ValueError,
        r"likelihood='gamma' needs y > 0",
        "likelihood='gamma' needs y > 0; y has ... values <= 0. Use "
        "likelihood='poisson' for counts with zeros, or 'gaussian' for targets of "
        "any sign.",
        lambda k: k.fit(expert=GammaRegressor(), y=np.abs(k.y) - 0.1),
        ("regressor",),
    ),
    Case(
        "likelihood-covariance-type",
        "a covariance_type other than 'diag' with a non-Gaussian family",
        ValueError,
        r"covariance_type='full' structures a Gaussian likelihood",
        "covariance_type='full' structures a Gaussian likelihood, but this "
        "mixture's family is 'poisson'. Leave covariance_type='diag' (the "
        "default), or use Gaussian experts (likelihood='gaussian').",
        lambda k: k.fit(
            expert=PoissonRegressor(), covariance_type="full", y=np.abs(k.y)
        ),
        ("regressor",),
    ),
    Case(
        "likelihood-mixed-families",
        "experts of different likelihood families",
        ValueError,
        r"The experts fit different likelihood families",
        "The experts fit different likelihood families (expert[0] "
        "(LinearRegression): gaussian, expert[1] (PoissonRegressor): poisson); "
        "one mixture has one family. Use experts of one family, or set "
        "likelihood= to the family to score them all by (their M-step is then "
        "approximate).",
        lambda k: k.fit(expert=[LinearRegression(), PoissonRegressor()], y=np.abs(k.y)),
        ("regressor",),
    ),
    Case(
        "gate-features-empty",
        "an empty gate_features",
        ValueError,
        r"gate_features is empty",
        "gate_features is empty; the gate needs at least one column.",
        lambda k: k.fit(gate_features=[]),
    ),
    Case(
        "gate-features-out-of-range",
        "a gate_features index out of range",
        ValueError,
        r"gate_features has column index 5, out of range",
        "gate_features has column index 5, out of range for X with n_features=3.",
        lambda k: k.fit(gate_features=[0, 5]),
    ),
    # --- dask arrays (a fit over chunks) ---------------------------------------
    Case(
        "dask-columns-chunked",
        "a dask X chunked along its columns",
        ValueError,
        r"X is chunked along its columns.*X\.rechunk\(\{1: -1\}\)",
        "X is chunked along its columns (chunks (2, 1)); every chunk must hold "
        "whole rows. Rechunk it with X.rechunk({1: -1}).",
        lambda k: k.fit(X=_dask(k.X, columns=2), y=_dask(k.y)),
        ("regressor",),
    ),
    Case(
        "dask-row-chunks-differ",
        "dask X and y of different row chunks",
        ValueError,
        r"y's row chunks differ from X's.*y\.rechunk",
        "y's row chunks differ from X's: every chunk of X needs the y of its own "
        "rows. Rechunk it with y.rechunk({0: X.chunks[0]}).",
        lambda k: k.fit(X=_dask(k.X), y=_dask(k.y, rows=15)),
        ("regressor",),
    ),
    Case(
        "dask-unknown-chunks",
        "a dask X whose row chunks have unknown sizes",
        ValueError,
        r"unknown sizes.*compute_chunk_sizes",
        "X's row chunks have unknown sizes; compute them first with "
        "X.compute_chunk_sizes().",
        lambda k: k.fit(X=_unknown_row_chunks(k), y=_dask(k.y)),
        ("regressor",),
    ),
    Case(
        "dask-y-only",
        "a dask y with an in-memory X",
        TypeError,
        r"y is a dask array but X is not",
        "y is a dask array but X is not: pass X as a dask array chunked along "
        "its rows (dask.array.from_array(X, chunks=(rows, -1))), or y as a NumPy "
        "array.",
        lambda k: k.fit(y=_dask(k.y)),
        ("regressor",),
    ),
    Case(
        "dask-not-finite",
        "NaN in a chunk of a dask X",
        ValueError,
        r"NaN or infinity in some chunk",
        "X or y contains NaN or infinity in some chunk; a fit on dask arrays "
        "takes finite values only. Impute them first (for example "
        "dask_ml.impute.SimpleImputer).",
        lambda k: k.fit(X=_dask(_with(k.X, (30, 1), np.nan)), y=_dask(k.y)),
        ("regressor",),
    ),
    Case(
        "dask-expert-needs-all-rows",
        "an expert whose fit is not a sum over rows, on dask arrays",
        ValueError,
        r"expert \(.*\) is fitted on all its rows at once.*not a sum over rows",
        "expert (...) is fitted on all its rows at once: its M-step is not a sum "
        "over rows, so it cannot be fitted over the chunks of a dask array. "
        "Use ..., or pass NumPy arrays (X.compute() if they fit in memory).",
        lambda k: k.fit(
            X=_dask(k.X),
            y=_dask(k.y),
            expert=DecisionTreeRegressor(max_depth=2)
            if k.kind == "regressor"
            else DecisionTreeClassifier(max_depth=2),
        ),
    ),
    Case(
        "dask-hard-em",
        "hard EM on dask arrays",
        ValueError,
        r"training='hard' is not supported on dask arrays",
        "training='hard' is not supported on dask arrays; set training='em', or "
        "pass NumPy arrays.",
        lambda k: k.fit(X=_dask(k.X), y=_dask(k.y), training="hard"),
        ("regressor",),
    ),
    Case(
        "dask-partition",
        "a partition other than k-means or random, on dask arrays",
        ValueError,
        r"partition='gmm' is not supported on dask arrays",
        "partition='gmm' is not supported on dask arrays; use 'kmeans' (k-means "
        "run over the chunks) or 'random'.",
        lambda k: k.fit(X=_dask(k.X), y=_dask(k.y), partition="gmm"),
        ("regressor",),
    ),
    Case(
        "dask-partial-fit",
        "a dask array passed to partial_fit",
        TypeError,
        r"partial_fit takes one batch of rows in memory; X is a dask collection",
        "partial_fit takes one batch of rows in memory; X is a dask collection. "
        "Fit a dask array over its chunks with fit(X, y), or feed its chunks to "
        "partial_fit one at a time with dask_ml.wrappers.Incremental.",
        lambda k: k.make(n_experts=2).partial_fit(
            _dask(k.X),
            k.y,
            **({"classes": np.unique(k.y)} if k.kind == "classifier" else {}),
        ),
    ),
    Case(
        "dask-mixed-steps",
        "least-squares and generalised linear experts together, on dask arrays",
        ValueError,
        r"mix least-squares experts",
        "The experts mix least-squares experts (LinearRegression, Ridge) and "
        "generalised linear ones; over the chunks of a dask array one mixture "
        "steps its experts one way. Use experts of one kind.",
        lambda k: k.fit(
            X=_dask(k.X),
            y=_dask(k.y),
            expert=[LinearRegression(), TweedieRegressor(power=1.0, link="log")],
            likelihood="gaussian",
        ),
        ("regressor",),
    ),
]

PAGE_HEADER = """\
# What mixexp does with bad input

mixexp refuses bad input when it is given, with a `ValueError` or a
`TypeError` (scikit-learn's own subclasses where they exist) whose message
names the argument at fault. Each line below is one case: what is wrong, the
exception raised, and what its message says (`...` stands for the estimator's
name or a repr).

`InvalidParameterError` (from `sklearn.utils._param_validation`) is both a
`ValueError` and a `TypeError`; `NotFittedError` (from `sklearn.exceptions`)
is both a `ValueError` and an `AttributeError`.

<!-- Generated from CASES in tests/test_validation.py, which also checks each
line against the exception actually raised. Do not edit the list by hand:
edit the table and run `python tests/test_validation.py`;
test_bad_input_page_lists_every_case fails when the two drift apart. -->

"""


def render_page():
    return PAGE_HEADER + "\n".join(case.render() for case in CASES) + "\n"


# ---------------------------------------------------------------------------
# The table's tests.


def _case_params():
    return [
        pytest.param(case, kind, id=f"{case.id}-{kind}")
        for case in CASES
        for kind in case.kinds
    ]


@pytest.mark.parametrize(("case", "kind"), _case_params())
def test_bad_input_is_refused_clearly(case, kind):
    with pytest.raises(case.error) as info:
        case.trigger(KITS[kind])
    message = str(info.value)
    assert re.search(case.match, message), (
        f"{case.case}: the message does not match {case.match!r}:\n{message}"
    )
    if case.sklearn_call is not None:
        # scikit-learn's words, read from it now; where this scikit-learn lets
        # the input through, mixexp refuses it in words the pattern checks.
        try:
            case.sklearn_call(KITS[kind])
        except case.error as refusal:
            assert message == str(refusal), f"{case.case}: not scikit-learn's words"
        return
    # The page quotes the message as it is (up to the elisions).
    assert case.quote_pattern().match(message), (
        f"{case.case}: the page quotes {case.says!r} but the message is:\n"
        f"{message}\nUpdate `says` in CASES and run python tests/test_validation.py."
    )


def test_the_table_is_well_formed():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids)
    descriptions = [case.case for case in CASES]
    assert len(set(descriptions)) == len(descriptions)
    for case in CASES:
        assert re.search(case.match, case.says), case.id  # the page quotes it
        assert issubclass(case.error, (ValueError, TypeError)), case.id
        assert set(case.kinds) <= set(BOTH) and case.kinds, case.id
        assert '"' not in case.says and "\n" not in case.says, case.id


def test_bad_input_page_lists_every_case():
    assert PAGE.exists(), "run `python tests/test_validation.py` to write it"
    listed = [line for line in PAGE.read_text().splitlines() if line.startswith("- ")]
    expected = [case.render() for case in CASES]
    assert listed == expected, (
        "docs/bad_input.md has drifted from CASES in tests/test_validation.py; "
        "run `python tests/test_validation.py` to regenerate it."
    )


# ---------------------------------------------------------------------------
# Bad input outside the table: every method, every sparse format, and what
# is accepted.

PREDICT_METHODS = {
    "regressor": ["predict", "predict_gate", "predict_expert", "score"],
    "classifier": [
        "predict",
        "predict_gate",
        "predict_expert",
        "predict_proba",
        "predict_log_proba",
        "score",
    ],
}
LABELLED = {"score", "log_likelihood", "bic", "aic"}


def _call(model, method, X_, kit):
    if method in LABELLED:
        return getattr(model, method)(X_, kit.y)
    return getattr(model, method)(X_)


def _methods():
    return [
        pytest.param(kind, method, id=f"{kind}-{method}")
        for kind in BOTH
        for method in [*PREDICT_METHODS[kind], "log_likelihood", "bic", "aic"]
    ]


@pytest.mark.parametrize(("kind", "method"), _methods())
def test_every_method_refuses_bad_X(kind, method):
    kit = KITS[kind]
    with pytest.raises(NotFittedError):
        _call(kit.make(), method, kit.X, kit)
    model = kit.fitted()
    with pytest.raises(ValueError, match=r"X has 2 features, but \w+ is expecting 3"):
        _call(model, method, kit.X[:, :2], kit)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        _call(model, method, _with(kit.X, (1, 2), np.nan), kit)
    with pytest.raises(ValueError, match="Input X contains infinity"):
        _call(model, method, _with(kit.X, (1, 2), np.inf), kit)
    with pytest.raises(TypeError, match=r"[Ss]parse"):
        _call(model, method, sp.csr_matrix(kit.X), kit)


SPARSE_FORMATS = [sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array]


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("to_sparse", SPARSE_FORMATS, ids=lambda f: f.__name__)
def test_sparse_X_is_supported_end_to_end_or_refused_with_a_type_error(kind, to_sparse):
    kit = KITS[kind]
    model = kit.make(n_experts=2)
    try:
        model.fit(to_sparse(kit.X), kit.y)
    except TypeError as exc:
        assert re.search(r"(?s)[Ss]parse.*\bX\b", str(exc)), str(exc)
        with pytest.raises(TypeError, match=r"[Ss]parse"):
            kit.fitted().predict(to_sparse(kit.X))
        return
    dense = kit.fit(n_experts=2)
    np.testing.assert_allclose(
        model.predict_gate(to_sparse(kit.X)), dense.predict_gate(kit.X)
    )
    if kind == "classifier":
        np.testing.assert_allclose(
            model.predict_proba(to_sparse(kit.X)), dense.predict_proba(kit.X)
        )
    else:
        np.testing.assert_allclose(
            model.predict(to_sparse(kit.X)), dense.predict(kit.X)
        )


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize(
    ("groups", "resolved"),
    [
        ([[0, 1], [1, 2]], [[0, 1], [1, 2]]),  # groups may overlap
        ([[0, 1, 2], [2]], [[0, 1, 2], [2]]),  # one inside another
        ([[0, 0, 2], [-1]], [[0, 2], [2]]),  # repeats and negative indices
        ([[True, False, True], 1], [[0, 2], [1]]),  # a mask and a bare index
    ],
)
def test_overlapping_and_repeated_feature_groups_are_accepted(kind, groups, resolved):
    kit = KITS[kind]
    model = kit.fit(feature_groups=groups)
    assert [list(g) for g in model.feature_groups_] == resolved
    assert [e.n_features_in_ for e in model.experts_] == [len(g) for g in resolved]
    assert np.all(np.isfinite(model.predict_gate(kit.X)))


def test_named_overlapping_feature_groups_are_accepted():
    kit = KITS["regressor"]
    model = kit.fit(X=_frame(kit.X), feature_groups=[["a", "b"], ["b", "c"], "c"])
    assert [list(g) for g in model.feature_groups_] == [[0, 1], [1, 2], [2]]
    assert model.n_experts_ == 3


@pytest.mark.parametrize("kind", BOTH)
def test_some_zero_weights_are_accepted(kind):
    kit = KITS[kind]
    weights = np.ones(N_ROWS)
    weights[::4] = 0.0
    model = kit.fit(sample_weight=weights, n_experts=2)
    assert np.isfinite(model.lower_bound_)
    assert model.expert_load_.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# Fit is atomic.


class _Scripted:
    """Mixin: ``fit`` raises ``error`` from its ``fail_on``-th call on.

    Calls are counted on the class, across the clones EM makes; tests set
    ``calls``, ``fail_on`` and ``error`` with monkeypatch. ``fail_on=0``
    never fails.
    """

    calls = 0
    fail_on = 0
    error = KeyboardInterrupt

    def fit(self, X, y, sample_weight=None):
        cls = type(self)
        cls.calls += 1
        if cls.fail_on and cls.calls >= cls.fail_on:
            raise cls.error(f"scripted failure on call {cls.calls}")
        return super().fit(X, y, sample_weight=sample_weight)


class ScriptedRegressor(_Scripted, LinearRegression):
    pass


class ScriptedClassifier(_Scripted, LogisticRegression):
    pass


class ScriptedGate(_Scripted, DecisionTreeClassifier):
    pass


SCRIPTED = {"regressor": ScriptedRegressor, "classifier": ScriptedClassifier}
X_NEW = np.random.RandomState(1).normal(size=(25, 3))


def _reference(kit, **params):
    """A fitted mixture whose experts (and gate) can be made to fail later."""
    params.setdefault("n_experts", 2)
    model = kit.make(SCRIPTED[kit.kind](), **params)
    model.fit(kit.X, kit.y)
    assert model.n_iter_ >= 3, "the interruptions below need a few EM iterations"
    return model


def _outputs(model):
    out = {"predict": model.predict(X_NEW), "predict_gate": model.predict_gate(X_NEW)}
    if hasattr(model, "predict_proba"):
        out["predict_proba"] = model.predict_proba(X_NEW)
    else:
        out["std"] = model.predict(X_NEW, return_std=True)[1]
    return out


def _fitted_state(model):
    """Every attribute that is not a constructor parameter, pickled."""
    params = model.get_params(deep=False)
    return {name: value for name, value in vars(model).items() if name not in params}


def _snapshot(model):
    state = _fitted_state(model)
    return sorted(state), pickle.dumps(state), _outputs(model)


def _assert_unchanged(model, snapshot):
    names, blob, outputs = snapshot
    assert sorted(_fitted_state(model)) == names
    assert pickle.dumps(_fitted_state(model)) == blob
    for name, value in _outputs(model).items():
        np.testing.assert_array_equal(value, outputs[name], err_msg=name)


def _nan_X(model, kit, monkeypatch):
    model.fit(_with(kit.X, (2, 2), np.nan), kit.y)


def _too_few_rows_other_features(model, kit, monkeypatch):
    # Fails after the new X has been validated (and its width recorded).
    model.fit(kit.X[:1, :2], kit.y[:1])


def _frame_that_fails_later(model, kit, monkeypatch):
    # A DataFrame would record feature_names_in_ before the failure.
    model.set_params(n_experts=3, feature_groups=[["a"], ["b"], ["zz"]])
    model.fit(_frame(kit.X), kit.y)


def _single_class(model, kit, monkeypatch):
    # classes_ is set from the new y before it is refused.
    model.fit(kit.X, np.full(N_ROWS, "bee"))


def _invalid_parameter(model, kit, monkeypatch):
    model.set_params(training="soft")
    model.fit(kit.X, kit.y)


def _expert_fails_inside_em(model, kit, monkeypatch):
    cls = SCRIPTED[kit.kind]
    monkeypatch.setattr(cls, "calls", 0)
    monkeypatch.setattr(cls, "fail_on", 5)  # in the third M-step of 2 experts
    monkeypatch.setattr(cls, "error", RuntimeError)
    model.fit(kit.X + 0.01, kit.y)


def _gate_fails_inside_em(model, kit, monkeypatch):
    monkeypatch.setattr(ScriptedGate, "calls", 0)
    monkeypatch.setattr(ScriptedGate, "fail_on", 3)
    monkeypatch.setattr(ScriptedGate, "error", ValueError)
    model.set_params(gate=ScriptedGate(max_depth=2))
    model.fit(kit.X, kit.y)


def _interrupt(**params):
    def scenario(model, kit, monkeypatch):
        cls = SCRIPTED[kit.kind]
        monkeypatch.setattr(cls, "calls", 0)
        monkeypatch.setattr(cls, "fail_on", 3)  # the second M-step of 2 experts
        monkeypatch.setattr(cls, "error", KeyboardInterrupt)
        # tol=0 and a random partition: EM goes on past the interruption.
        model.set_params(tol=0.0, partition="random", **params)
        model.fit(kit.X + 0.01, kit.y)

    return scenario


FAILED_REFITS = [
    ("nan-X", _nan_X, ValueError, BOTH),
    ("too-few-rows-other-width", _too_few_rows_other_features, ValueError, BOTH),
    ("dataframe-fails-later", _frame_that_fails_later, ValueError, BOTH),
    ("single-class", _single_class, ValueError, ("classifier",)),
    ("invalid-parameter", _invalid_parameter, InvalidParameterError, BOTH),
    ("expert-fails-in-em", _expert_fails_inside_em, RuntimeError, BOTH),
    ("gate-fails-in-em", _gate_fails_inside_em, ValueError, BOTH),
    ("interrupt", _interrupt(), KeyboardInterrupt, BOTH),
    ("interrupt-warm-start", _interrupt(warm_start=True), KeyboardInterrupt, BOTH),
    ("interrupt-hard", _interrupt(training="hard"), KeyboardInterrupt, BOTH),
    (
        "interrupt-parallel",
        _interrupt(n_jobs=2, n_init=2),
        KeyboardInterrupt,
        BOTH,
    ),
]


def _failed_refit_params():
    return [
        pytest.param(kind, scenario, error, id=f"{name}-{kind}")
        for name, scenario, error, kinds in FAILED_REFITS
        for kind in kinds
    ]


@pytest.mark.parametrize(("kind", "scenario", "error"), _failed_refit_params())
def test_failed_refit_keeps_the_previous_model(kind, scenario, error, monkeypatch):
    kit = KITS[kind]
    model = _reference(kit)
    snapshot = _snapshot(model)
    with pytest.raises(error):
        scenario(model, kit, monkeypatch)
    _assert_unchanged(model, snapshot)
    assert not hasattr(model, "feature_names_in_")
    assert model.n_features_in_ == 3


@pytest.mark.parametrize("kind", BOTH)
def test_interrupted_refit_can_be_resumed(kind, monkeypatch):
    kit = KITS[kind]
    model = _reference(kit)
    before = _outputs(model)
    params = model.get_params()
    with pytest.raises(KeyboardInterrupt):
        _interrupt()(model, kit, monkeypatch)
    monkeypatch.setattr(SCRIPTED[kind], "fail_on", 0)
    model.set_params(**params)
    model.fit(kit.X, kit.y)  # the same fit as the reference, uninterrupted
    for name, value in _outputs(model).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


FIRST_FITS = [
    ("nan-X", _nan_X, BOTH),
    ("single-class", _single_class, ("classifier",)),
    ("expert-fails-in-em", _expert_fails_inside_em, BOTH),
    ("interrupt", _interrupt(), BOTH),
]


@pytest.mark.parametrize(
    ("kind", "scenario"),
    [
        pytest.param(kind, scenario, id=f"{name}-{kind}")
        for name, scenario, kinds in FIRST_FITS
        for kind in kinds
    ],
)
def test_failed_first_fit_leaves_the_estimator_unfitted(kind, scenario, monkeypatch):
    kit = KITS[kind]
    model = kit.make(SCRIPTED[kind](), n_experts=2)
    before = dict(vars(model))
    with pytest.raises((ValueError, RuntimeError, KeyboardInterrupt)):
        scenario(model, kit, monkeypatch)
    assert vars(model).keys() == before.keys()
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    with pytest.raises(NotFittedError):
        model.predict(kit.X)


# ---------------------------------------------------------------------------
# An expert that fails inside fit names itself.


class TwoArgumentError(Exception):
    """An exception whose constructor cannot take a single message."""

    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code


EXPERT_ERRORS = [
    (ValueError, lambda: ValueError("matrix is singular")),
    (RuntimeError, lambda: RuntimeError("solver diverged")),
    (np.linalg.LinAlgError, lambda: np.linalg.LinAlgError("SVD did not converge")),
    (ZeroDivisionError, lambda: ZeroDivisionError("weights sum to zero")),
    (KeyError, lambda: KeyError("missing column")),
    (TwoArgumentError, lambda: TwoArgumentError(7, "disk full")),
]


def _failing_expert(kind, make_error, fail_on):
    base = LinearRegression if kind == "regressor" else LogisticRegression
    calls = {"n": 0}

    class FailingExpert(base):
        def fit(self, X, y, sample_weight=None):
            calls["n"] += 1
            if calls["n"] >= fail_on:
                raise make_error()
            return super().fit(X, y, sample_weight=sample_weight)

    return FailingExpert()


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize(
    ("error", "make_error"),
    EXPERT_ERRORS,
    ids=[error.__name__ for error, _ in EXPERT_ERRORS],
)
@pytest.mark.parametrize(
    ("training", "n_jobs", "fail_on"),
    [("em", None, 1), ("em", 2, 3), ("hard", None, 3)],
    ids=["first-fit", "in-em-parallel", "hard"],
)
def test_expert_exception_names_the_expert(
    kind, error, make_error, training, n_jobs, fail_on
):
    kit = KITS[kind]
    good = LinearRegression() if kind == "regressor" else LogisticRegression()
    bad = _failing_expert(kind, make_error, fail_on)
    model = kit.make([good, bad], training=training, n_jobs=n_jobs, partition="random")
    with pytest.raises(error) as info:
        model.fit(kit.X, kit.y)
    exc = info.value
    original = str(make_error())
    text = "\n".join([str(exc), *getattr(exc, "__notes__", [])])
    assert "expert 1 (FailingExpert)" in text, text
    assert original in text, text
    if isinstance(exc, TwoArgumentError):
        assert exc.code == 7  # the original exception, annotated
    with pytest.raises(NotFittedError):
        model.predict(kit.X)


@pytest.mark.parametrize("kind", BOTH)
def test_keyboard_interrupt_in_an_expert_is_not_wrapped(kind, monkeypatch):
    kit = KITS[kind]
    cls = SCRIPTED[kind]
    monkeypatch.setattr(cls, "calls", 0)
    monkeypatch.setattr(cls, "fail_on", 1)
    monkeypatch.setattr(cls, "error", KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        kit.make(cls(), n_experts=2).fit(kit.X, kit.y)
    assert type(info.value) is KeyboardInterrupt


# ---------------------------------------------------------------------------
# Regenerate the page: python tests/test_validation.py


def _write_page():
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(render_page())
    print(f"wrote {PAGE} ({len(CASES)} cases)")


if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["--write"]):
        sys.exit("usage: python tests/test_validation.py [--write]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _write_page()
