"""The public estimators: mixture-of-experts regressor and classifier."""

import functools

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import get_tags
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from mixexp._base import _BaseMixtureOfExperts
from mixexp._chunked import is_dask_collection, lazy_rows, standard_deviation
from mixexp._family import FAMILIES, family_of, make_likelihood, resolve_family
from mixexp._likelihood import COVARIANCE_TYPES, CategoricalLikelihood, align_proba
from mixexp._linear import is_plain_linear_regression
from mixexp._mstep import fit_weighted, fit_weighted_classifier
from mixexp._utils import single_threaded_blas
from mixexp._validation import expert_templates

_SHARED_HEAD_PARAMETERS = """
    expert : estimator or list of estimators, default=None
        The template of every expert (cloned once per expert and EM step),
        or a list of estimators, one per expert, whose length then sets the
        number of experts. ``None`` means {default_expert}. Under soft EM
        (``training="em"``) an expert must accept ``sample_weight`` in
        ``fit``; a :class:`~sklearn.pipeline.Pipeline` passes it to its last
        step.

    n_experts : int, default=3
        Number of experts. Ignored when `expert` is a list or
        `feature_groups` is set: their length sets it.
"""

_SHARED_PARAMETERS = """
    gate : {"softmax", "constant"} or estimator, default="softmax"
        The model of which expert to trust for an input:

        - ``"softmax"``: multinomial logistic regression on the inputs,
          fitted on the responsibilities (:class:`~mixexp.gating.SoftmaxGate`
          with ``alpha="auto"``, a penalty set by the data; pass an
          instance to fix ``alpha``; ``SoftmaxGate(alpha=0.0)`` is the
          unpenalised maximum-likelihood gate);
        - ``"constant"``: mixing proportions that do not depend on the input
          (:class:`~mixexp.gating.ConstantGate`), the classic finite mixture;
        - any classifier with ``predict_proba`` whose ``fit`` takes
          ``sample_weight``, fitted on the soft responsibilities
          (:class:`~mixexp.gating.ClassifierGate`).

    partition : {"kmeans", "gmm", "random"} or clusterer, default="kmeans"
        The initial subtasks: k-means clusters of the standardised inputs,
        the posterior of a Gaussian mixture on them, random
        responsibilities, or any clusterer instance (its ``n_clusters`` or
        ``n_components`` is set to the number of experts). Under soft EM a
        hard partition is softened (80% of a row's weight on its cluster).
        When every expert and the gate take missing values (NaN in `X`,
        scikit-learn's ``allow_nan`` tag: HistGradientBoosting, trees, a
        constant gate), the mixture passes them through to them; the
        clustering then sees each missing value as its column's mean, in a
        copy used only for the initial partition (and for re-seeding).

    feature_groups : list of column selections, default=None
        One selection per expert: integer indices, column names (when `X` is
        a DataFrame) or a boolean mask. Expert ``k`` then sees only its
        columns; the gate sees all of them, or those of `gate_features`.
        Groups may overlap.

    gate_features : column selection, default=None
        The columns the gate sees: integer indices, column names (when `X`
        is a DataFrame) or a boolean mask, like one entry of
        `feature_groups`. ``None`` means all of them. With `feature_groups`
        for the experts, this is the concomitant-variable model of
        flexmix: the gate decides from some columns (say, a region), the
        experts predict from others. `predict_gate` reads only these
        columns. The initial partition still clusters all columns.

    training : {"em", "hard", "fixed"}, default="em"
        ``"em"``: soft EM, each expert fitted on all rows weighted by its
        responsibilities. ``"hard"``: classification EM, each row given to its
        most responsible expert (works for experts without
        ``sample_weight``). ``"fixed"``: keep the initial partition, fit each
        expert on its cluster and the gate to the partition, no EM (the
        divide-and-conquer baseline).

    pooling : {"weighted", "argmax"}, default="weighted"
        How predictions combine the experts: the gate-weighted sum of their
        outputs, or the output of the most trusted expert alone.

    top_k : int, default=None
        With ``pooling="weighted"``, pool only each row's `top_k` most
        trusted experts, their gate weights renormalised. ``top_k=1`` gives
        the same predictions as ``pooling="argmax"``, ``top_k=n_experts``
        the same as ``None``. Predictions stay row-wise.

    capacity_factor : float, default=None
        Switch-style expert capacity during training: no expert is fitted on
        more than ``ceil(n_samples / n_experts * capacity_factor)`` rows in
        an M-step. Under ``training="hard"`` each row goes to its most
        responsible expert that has room (rows taken in order of
        responsibility); under soft EM each expert keeps its most responsible
        rows. ``None`` means no limit. It never affects ``predict``.

    overflow : {"next", "drop"}, default="next"
        Under ``training="hard"`` with a capacity, where a row goes when its
        expert is full: to its next choice with room, or out of every
        expert's fit for that step (counted in `dropped_fraction_`).

    cv : int, cross-validation generator or iterable, default=None
        Compute the expert likelihoods of the E-step out of fold: the
        responsibility of a row comes from experts fitted without it (as in
        :class:`~sklearn.ensemble.StackingRegressor`). Flexible experts
        (deep trees, k-NN) otherwise memorise their rows, every row's
        likelihood under its own expert is near perfect, and EM locks in.
        Costs one extra fit per fold and expert each iteration. ``None``:
        in-sample likelihoods.

    min_expert_load : float, default=None
        Keep experts in use: an expert whose share of the responsibility
        falls below this is re-seeded on the rows the mixture explains worst
        (at most 3 times per expert). Must be below ``1 / n_experts``.
        ``None`` re-seeds only experts that collapse (share about zero),
        with a warning.

    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.

    tol : float, default=1e-4
        EM stops when the mean log-likelihood (per unit of sample weight)
        changes by less than `tol` between iterations.

    learning_decay : float, default=0.7
        Online EM (`partial_fit`) only; `fit` ignores it. How fast the
        weight of each new batch in the running statistics decreases: the
        ``t``-th call after the first blends its batch in with step size
        ``rho_t = (learning_offset + t) ** -learning_decay``. Values in
        (0.5, 1] satisfy the conditions under which online EM converges
        (Cappé and Moulines, 2009); smaller ones forget old batches
        faster, for a stream that drifts; 0 keeps only the last batch. The
        name and default are those of
        :class:`~sklearn.decomposition.LatentDirichletAllocation`.

    learning_offset : float, default=10.0
        Online EM (`partial_fit`) only; `fit` ignores it. A positive
        offset that down-weights the first batches (see `learning_decay`):
        the step size starts at ``(learning_offset + 1) ** -learning_decay``
        (0.19 with the defaults) and reaches 0.02 after about 250 calls.

    n_init : int, default=1
        Number of initial partitions tried; the run with the highest final
        log-likelihood is kept.

    warm_start : bool, default=False
        If True, `fit` continues from the previous solution (its
        responsibilities on the new data) instead of a new partition, and
        `n_init` is ignored.

    random_state : int, RandomState instance or None, default=None
        Seeds the partition and every expert's and gate's ``random_state``
        that is left unset. Pass an int for reproducible results.

    n_jobs : int, default=None
        Number of parallel workers (joblib, threads preferred;
        ``joblib.parallel_config`` can send the work to another backend):
        with ``n_init > 1`` they run the restarts, each fitting its experts
        one after another; otherwise they fit the experts of each M-step.
        It pays for experts that are slow to fit (trees, forests, boosting);
        plain linear experts are fastest with ``n_jobs=1``, solved together.
        ``None`` means 1 unless in a joblib context. The result does not
        depend on it.

    verbose : int, default=0
        1 prints each initialisation and its outcome; 2 also prints every
        EM iteration.
"""

_SHARED_ATTRIBUTES = """
    experts_ : list of estimators
        The fitted experts, in the order of the gate's outputs.

    gate_ : SoftmaxGate, ConstantGate or ClassifierGate
        The fitted gate.

    n_experts_ : int
        Number of experts.

    feature_groups_ : list of ndarray of int or None
        Column indices seen by each expert.

    gate_features_ : ndarray of int or None
        Column indices seen by the gate (None: all of them).

    n_iter_ : int
        EM iterations of the kept run, up to the kept solution.

    converged_ : bool
        Whether the kept run converged before `max_iter`.

    lower_bound_ : float
        The objective EM maximised, at the kept solution: the weighted mean
        per-row log-likelihood of the training data, less the penalties
        divided by the total weight: the softmax gate's L2 penalty, and each
        expert's where it is known (Ridge, L2 LogisticRegression, Poisson
        and Tweedie GLMs; see the user guide's "Choosing the likelihood").
        Without penalties (``alpha=0``, a constant gate, LinearRegression
        experts) it is exactly the mean log-likelihood. Soft EM with experts
        whose fit maximises their weighted (penalised) likelihood never
        lowers it. Other experts (trees, k-NN, boosting) make EM
        approximate: a run then also stops once the objective stops rising
        for three iterations. Hard EM and the out-of-fold E-step (`cv`) may
        lower it: they keep the iteration where it was highest.

    lower_bounds_ : list of float
        `lower_bound_` after each EM iteration of the kept run, up to the
        kept solution.

    expert_load_ : ndarray of shape (`n_experts_`,)
        Each expert's share of the training weight in the last M-step: its
        summed responsibilities (weighted by ``sample_weight``) over the
        total weight. Sums to 1 unless rows were dropped by a capacity; with
        a capacity no share exceeds ``ceil(n / K * capacity_factor) / n``.

    dropped_fraction_ : float
        Share of the training weight left out of every expert's fit in the
        last M-step (non-zero only with `capacity_factor`).

    load_balance_ : float
        The Switch Transformer's load statistic on the training data:
        ``n_experts * sum_k f_k P_k``, with ``f_k`` the share of rows whose
        most trusted expert is ``k`` and ``P_k`` the mean gate probability
        of ``k``; 1 when the load is even, up to ``n_experts`` when one
        expert takes everything.

    n_reseeds_ : ndarray of shape (`n_experts_`,)
        How many times each expert collapsed (its share of the responsibility
        fell to about zero) and was re-seeded on the rows the mixture
        explained worst.

    n_batch_iter_ : int
        Steps of online EM taken by `partial_fit` since the model was last
        fitted (0 after `fit`; the first call of `partial_fit` counts as
        one).

    n_features_in_ : int
        Number of features seen during `fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during `fit`. Defined only when `X` has
        feature names that are all strings.
"""

_NOTES = """
    The model is ``p(y | x) = sum_k g_k(x) p_k(y | x)``. EM alternates an
    M-step (each expert refitted with ``sample_weight = w * R[:, k]``, the
    gate refitted on the responsibilities ``R``) and an E-step (``R``
    recomputed as each expert's posterior share of each row), in log space.
"""

# What partial_fit does, shared by both estimators' docstrings.
_PARTIAL_FIT_NOTES = """
        Each call is one step of online EM (Cappé and Moulines, 2009): an
        E-step on the batch with the current model; running statistics
        blended with the batch's by the step size ``rho_t = (learning_offset
        + t) ** -learning_decay``; an M-step from them. Linear experts
        (``LinearRegression``, ``Ridge``) keep their weighted moments and
        solve their normal equations; experts with a ``partial_fit`` of
        their own (SGD, MLP, naive Bayes) are updated by it with
        ``sample_weight = w * R[:, k]``; the softmax gate takes a
        stochastic majorisation-minimisation step on Böhning's quadratic
        bound, the constant gate keeps the running mean responsibilities;
        the likelihood's scales are running weighted averages. A Ridge
        expert's ``alpha`` and the gate's ``alpha_`` penalise against all
        the weight seen so far, as `fit` would on the whole stream.

        The first call on an unfitted mixture fits it on its batch by EM
        (`fit`: the initial partition, `n_init`, `max_iter` and `tol`
        apply), then seeds the running statistics from that batch. After
        `fit`, the first call seeds them from its batch under the fitted
        model and continues from it. Either way the batch should hold
        enough rows for every expert (a few times the number of features
        per expert). `training`, `cv`, `capacity_factor`,
        `min_expert_load` and classifier gates are not supported, nor are
        experts without ``partial_fit`` other than linear ones: each is
        refused with a ValueError. After each call `lower_bound_` is the
        batch's mean log-likelihood under the model before the step (each
        batch is scored before it is learnt from), `expert_load_` the
        running shares of the experts, and `n_batch_iter_` counts the
        calls.
"""

# The end of both partial_fit docstrings' parameters, their Returns and Notes.
_PARTIAL_FIT_TAIL = (
    """sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights within the batch (each batch enters
            the running statistics with the step size of its call, whatever
            its size); their sum counts towards the weight seen, against
            which penalties are set.

        Returns
        -------
        self : object
            The updated mixture.

        Notes
        -----"""
    + _PARTIAL_FIT_NOTES
)

_REFERENCES = """
    .. [1] R. A. Jacobs, M. I. Jordan, S. J. Nowlan and G. E. Hinton,
       "Adaptive mixtures of local experts", Neural Computation 3(1), 1991.
    .. [2] M. I. Jordan and R. A. Jacobs, "Hierarchical mixtures of experts
       and the EM algorithm", Neural Computation 6(2), 1994.
"""


def _estimator_doc(
    summary, default_expert, attributes, see_also, examples, notes="", parameters=""
):
    """A mixture's docstring: its own sections around the shared ones."""
    return (
        summary
        + "\n    Parameters\n    ----------"
        + _SHARED_HEAD_PARAMETERS.format(default_expert=default_expert)
        + parameters
        + _SHARED_PARAMETERS
        + "\n    Attributes\n    ----------"
        + _SHARED_ATTRIBUTES
        + attributes
        + "\n    See Also\n    --------"
        + see_also
        + "\n\n    Notes\n    -----"
        + _NOTES
        + notes
        + "\n    References\n    ----------"
        + _REFERENCES
        + examples
    )


def _weighted_sum(weights, outputs):
    """``sum_k weights[:, k] * outputs[k]``, skipping experts with no weight."""
    total = np.zeros_like(outputs[next(iter(outputs))])
    for k, out in outputs.items():
        total += weights[:, k, np.newaxis] * out
    return total


def _check_finite_output(out, experts, k):
    """Refuse an expert's NaN or infinite output before it is pooled."""
    if not np.isfinite(out).all():
        bad = int(np.sum(~np.isfinite(out).all(axis=1)))
        raise ValueError(
            f"expert {k} ({type(experts[k]).__name__}) gave NaN or infinite "
            f"outputs on {bad} of {out.shape[0]} rows; a mixture cannot pool "
            "them. Check that expert on these inputs (its scaling, its "
            "regularisation) or replace it."
        )
    return out


def _used_experts(weights):
    return np.flatnonzero(np.any(weights > 0, axis=0))


def _regression_outputs(experts, X_parts, used=None):
    """Each expert's predictions (n, m): a list, or a dict over `used`."""
    ks = list(range(len(experts)) if used is None else used)
    batched = _batched_linear_outputs(experts, X_parts, ks)
    outputs = {
        k: batched[k] if k in batched else _predict_expert(experts, k, X_parts[k])
        for k in ks
    }
    return list(outputs.values()) if used is None else outputs


def _batched_linear_outputs(experts, X_parts, ks):
    """The predictions of the single-target LinearRegression experts that
    share one X, from one matrix product (a pass over X for all of them,
    not one each): {k: (n, 1) view}."""
    linear = [
        k
        for k in ks
        if is_plain_linear_regression(experts[k])
        and experts[k].coef_.ndim == 1
        and X_parts[k] is X_parts[ks[0]]
    ]
    if len(linear) < 2:
        return {}
    coef = np.array([experts[k].coef_ for k in linear])
    intercept = np.array([experts[k].intercept_ for k in linear], dtype=float)
    X = X_parts[linear[0]]
    with single_threaded_blas:
        outT = coef @ X.T
    outT += intercept[:, np.newaxis]
    return {
        k: _check_finite_output(outT[i].reshape(-1, 1), experts, k)
        for i, k in enumerate(linear)
    }


def _predict_expert(experts, k, X):
    expert = experts[k]
    if is_plain_linear_regression(expert):
        # LinearRegression.predict's own formula, without re-validating X
        # (the mixture validated it) at every EM step.
        coef = expert.coef_
        with single_threaded_blas:
            out = X @ (coef if coef.ndim == 1 else coef.T) + expert.intercept_
    else:
        with single_threaded_blas.lifted():
            out = np.asarray(expert.predict(X), dtype=np.float64)
    return _check_finite_output(out.reshape(X.shape[0], -1), experts, k)


def _class_outputs(experts, X_parts, used=None, *, n_classes):
    """Each expert's class probabilities (n, C), aligned to the classes."""

    def proba(k):
        est = experts[k]
        with single_threaded_blas.lifted():
            out = np.asarray(est.predict_proba(X_parts[k]), dtype=np.float64)
        _check_finite_output(out, experts, k)
        return align_proba(out, np.asarray(est.classes_, dtype=int), n_classes)

    if used is None:
        return [proba(k) for k in range(len(experts))]
    return {k: proba(k) for k in used}


class MixtureOfExpertsRegressor(RegressorMixin, _BaseMixtureOfExperts):
    __doc__ = _estimator_doc(
        summary="""Mixture of experts for regression, trained by EM.

    Each expert ``k`` is a regressor ``f_k`` whose prediction is the mean of
    its predictive law (Gaussian by default, or the Laplace, Poisson or
    Gamma law its loss fits: `likelihood`); the gate gives the probability
    ``g_k(x)`` that expert ``k`` is the one to trust at ``x``. Prediction
    pools the experts: ``sum_k g_k(x) f_k(x)`` (the mixture mean) or the
    most trusted expert's ``f_k(x)``.
""",
        default_expert=":class:`~sklearn.linear_model.LinearRegression`",
        parameters="""
    likelihood : {"auto", "gaussian", "laplace", "poisson", "gamma"}, \
            default="auto"
        The law of ``y`` around each expert's prediction, which scores the
        experts in the E-step. ``"auto"`` reads it off the experts' loss, so
        that an expert's weighted fit is its family's exact M-step:
        ``"poisson"`` for PoissonRegressor, ``TweedieRegressor(power=1)``
        and Poisson losses or criteria of boosting and trees; ``"gamma"``
        for GammaRegressor, ``TweedieRegressor(power=2)`` and Gamma losses;
        ``"laplace"`` for ``QuantileRegressor(quantile=0.5)`` and
        absolute-error losses; a nested mixture's own family; otherwise
        ``"gaussian"``. Experts of different families are an error. An
        explicit family that an expert does not fit is scored anyway, with
        an :class:`~mixexp.exceptions.ApproximateMStepWarning`. Poisson
        needs ``y >= 0``, Gamma ``y > 0``.

    covariance_type : {"diag", "full", "tied", "spherical"}, default="diag"
        With the Gaussian family and several outputs, the structure of each
        expert's noise covariance, as in
        :class:`~sklearn.mixture.GaussianMixture`: ``"diag"``, independent
        outputs; ``"full"``, a covariance matrix per expert; ``"tied"``,
        one matrix shared by the experts; ``"spherical"``, one variance per
        expert. Other families allow only ``"diag"``.
""",
        attributes="""
    likelihood_ : str
        The likelihood family used (`likelihood` resolved).

    noise_std_ : ndarray of shape (`n_experts_`,) or (`n_experts_`, n_outputs)
        Gaussian family only: each expert's noise scale per output
        (maximum likelihood, floored at a millionth of the variance of
        ``y``).

    covariances_ : ndarray
        Gaussian family only: the noise covariances, in the shape
        GaussianMixture gives its `covariances_` for `covariance_type`:
        (`n_experts_`, n_outputs) for "diag", (`n_experts_`, n_outputs,
        n_outputs) for "full", (n_outputs, n_outputs) for "tied",
        (`n_experts_`,) for "spherical". Full and tied matrices include the
        floor on their diagonal.

    dispersion_ : ndarray of shape (`n_experts_`,) or (`n_experts_`, n_outputs)
        Laplace and Gamma families only: each expert's scale, the Laplace
        ``b`` (the weighted mean absolute residual; variance ``2 b^2``) or
        the Gamma dispersion ``phi`` (one over the shape, by maximum
        likelihood; variance ``phi mu^2``).
""",
        see_also="""
    MixtureOfExpertsClassifier : The same model for class labels.
    sklearn.mixture.GaussianMixture : EM for mixtures without inputs.""",
        examples="""
    Examples
    --------
    >>> from mixexp import MixtureOfExpertsRegressor
    >>> from mixexp.datasets import make_regimes
    >>> X, y = make_regimes(n_samples=600, n_regimes=3, random_state=0)
    >>> moe = MixtureOfExpertsRegressor(n_experts=3, n_init=3, random_state=0).fit(X, y)
    >>> round(moe.score(X, y), 3)
    0.998
    >>> moe.predict_gate(X[:4]).max(axis=1).round(2)  # one expert trusted per row
    array([1., 1., 1., 1.])
    >>> sorted(moe.expert_load_.round(2).tolist())  # the regimes' shares
    [0.22, 0.38, 0.4]

    Counts from two Poisson regressions: Poisson experts are scored by the
    Poisson likelihood their fit maximises.

    >>> import numpy as np
    >>> from sklearn.linear_model import PoissonRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 3, size=(2000, 1))
    >>> slope = np.where(rng.rand(2000) < 0.5, 0.6, -0.4)
    >>> y = rng.poisson(np.exp(np.where(slope > 0, 0.5, 2.0) + slope * X[:, 0]))
    >>> counts = MixtureOfExpertsRegressor(
    ...     PoissonRegressor(alpha=0), n_experts=2, gate="constant", n_init=3,
    ...     random_state=0,
    ... ).fit(X, y)
    >>> counts.likelihood_
    'poisson'
    >>> coefs = [[e.intercept_, e.coef_[0]] for e in counts.experts_]
    >>> np.round(sorted(coefs), 1)  # intercepts and slopes (0.5, 0.6), (2, -0.4)
    array([[ 0.5,  0.6],
           [ 1.9, -0.4]])

    Data that do not fit in memory: on dask arrays chunked along rows, EM
    runs over the chunks (here from the same random start as in memory,
    which it then follows to the same model).

    >>> import dask.array as da
    >>> X, y = make_regimes(n_samples=600, n_regimes=3, random_state=0)
    >>> params = dict(n_experts=3, partition="random", random_state=0)
    >>> X_dask = da.from_array(X, chunks=(200, -1))
    >>> y_dask = da.from_array(y, chunks=200)
    >>> chunked = MixtureOfExpertsRegressor(**params).fit(X_dask, y_dask)
    >>> in_memory = MixtureOfExpertsRegressor(**params).fit(X, y)
    >>> bool(abs(chunked.lower_bound_ - in_memory.lower_bound_) < 1e-6)
    True
    >>> chunked.predict(X_dask)  # lazy, as the fit
    dask.array<...>
    """,
    )

    _parameter_constraints: dict = {
        **_BaseMixtureOfExperts._parameter_constraints,
        "likelihood": [StrOptions({"auto", *FAMILIES})],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
    }

    def __init__(
        self,
        expert=None,
        *,
        n_experts=3,
        likelihood="auto",
        covariance_type="diag",
        gate="softmax",
        partition="kmeans",
        feature_groups=None,
        gate_features=None,
        training="em",
        pooling="weighted",
        top_k=None,
        capacity_factor=None,
        overflow="next",
        cv=None,
        min_expert_load=None,
        max_iter=100,
        tol=1e-4,
        learning_decay=0.7,
        learning_offset=10.0,
        n_init=1,
        warm_start=False,
        random_state=None,
        n_jobs=None,
        verbose=0,
    ):
        super().__init__(
            expert,
            n_experts=n_experts,
            gate=gate,
            partition=partition,
            feature_groups=feature_groups,
            gate_features=gate_features,
            training=training,
            pooling=pooling,
            top_k=top_k,
            capacity_factor=capacity_factor,
            overflow=overflow,
            cv=cv,
            min_expert_load=min_expert_load,
            max_iter=max_iter,
            tol=tol,
            learning_decay=learning_decay,
            learning_offset=learning_offset,
            n_init=n_init,
            warm_start=warm_start,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.likelihood = likelihood
        self.covariance_type = covariance_type

    _y_numeric = True
    _fit_one = staticmethod(fit_weighted)

    def _default_expert(self):
        return LinearRegression()

    def _check_expert(self, expert, name):
        if not hasattr(expert, "predict"):
            raise ValueError(f"{name}={expert!r} has no predict method.")

    def _validate_targets(self, y, reset, classes=None):
        y = np.asarray(y, dtype=np.float64)
        if reset:
            self._n_outputs = 1 if y.ndim == 1 else y.shape[1]
            self._y_ndim = y.ndim
        elif (1 if y.ndim == 1 else y.shape[1]) != self._n_outputs:
            raise ValueError(
                f"y has {1 if y.ndim == 1 else y.shape[1]} outputs, but "
                f"{type(self).__name__} was fitted with {self._n_outputs}."
            )
        return y.reshape(y.shape[0], -1), y

    def _likelihood_for(self, templates, y, sample_weight):
        family = resolve_family(self.likelihood, templates)
        return make_likelihood(family, self.covariance_type, y, sample_weight)

    def _chunked_family_name(self, templates):
        family = resolve_family(self.likelihood, templates)
        if family == "laplace" or any(family_of(t) != family for t in templates):
            raise ValueError(
                f"likelihood={self.likelihood!r} is not supported on dask arrays "
                "with these experts: over chunks each expert is fitted for the "
                "family its own loss belongs to (Gaussian for LinearRegression and "
                "Ridge, Poisson or Gamma for those GLMs). Set likelihood='auto'."
            )
        if self.covariance_type != "diag" and family != "gaussian":
            make_likelihood(family, self.covariance_type, None, None)  # refuses
        return family

    def _chunked_targets(self, y):
        self._n_outputs = 1 if y.ndim == 1 else y.shape[1]
        self._y_ndim = y.ndim
        return None

    def _outputs_function(self):
        return _regression_outputs

    _online_experts = (
        "LinearRegression or Ridge (running sufficient statistics), or an "
        "expert with a partial_fit that takes sample_weight, such as "
        "SGDRegressor"
    )

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the mixture with one batch of a stream (online EM).

        Call it once per batch; after each call the mixture predicts.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The batch's inputs, with the features of the first call.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Its targets.
        {weight_and_notes}
        Examples
        --------
        >>> import numpy as np
        >>> from mixexp import MixtureOfExpertsRegressor
        >>> from mixexp.datasets import make_regimes
        >>> X, y = make_regimes(n_samples=6000, n_regimes=2, random_state=0)
        >>> moe = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
        >>> for batch in np.array_split(np.arange(5000), 10):
        ...     moe = moe.partial_fit(X[batch], y[batch])
        >>> moe.n_batch_iter_
        10
        >>> round(moe.score(X[5000:], y[5000:]), 2)  # R^2 on held-out rows
        1.0
        """
        return self._partial_fit(X, y, sample_weight, classes=None)

    partial_fit.__doc__ = partial_fit.__doc__.format(weight_and_notes=_PARTIAL_FIT_TAIL)

    def predict(self, X, return_std=False):
        """Pooled prediction of the experts.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The rows to label.
        return_std : bool, default=False
            Also return the standard deviation of the predictive mixture
            pooled the same way: ``sqrt(sum_k w_k (sigma_k^2 + (f_k - mean)^2))``
            with the pooling weights ``w`` (the gate, its top `top_k`, or the
            most trusted expert alone). It includes each expert's noise and
            the disagreement between experts.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            ``sum_k w_k(x) f_k(x)``: the mixture mean with
            ``pooling="weighted"``, the most trusted expert's prediction with
            ``pooling="argmax"``.
        y_std : ndarray of the same shape
            Only when `return_std` is True.
        """
        if is_dask_collection(X):
            return self._lazy_predict(X, return_std)
        X = self._check_predict_X(X)
        weights = self._pooling_weights(X)
        used = _used_experts(weights)
        outputs = self._expert_outputs(self.experts_, self._X_parts(X), used=used)
        pred = _weighted_sum(weights, outputs)
        if not return_std:
            return pred[:, 0] if self._y_ndim == 1 else pred
        # The spread about the pooled mean, summed term by term: the textbook
        # E[f^2] - E[f]^2 cancels catastrophically when |f| >> the spread.
        variance = _weighted_sum(
            weights,
            {
                k: self._likelihood.variance(out, self._scale, k) + (out - pred) ** 2
                for k, out in outputs.items()
            },
        )
        std = np.sqrt(variance)
        if self._y_ndim == 1:
            return pred[:, 0], std[:, 0]
        return pred, std

    def _lazy_predict(self, X, return_std):
        check_is_fitted(self)
        columns = None if self._y_ndim == 1 else self._n_outputs
        pred = lazy_rows(self.predict, X, self.n_features_in_, columns)
        if not return_std:
            return pred
        std = lazy_rows(
            functools.partial(standard_deviation, self.predict),
            X,
            self.n_features_in_,
            columns,
        )
        return pred, std

    def _n_expert_parameters(self, expert):
        if isinstance(expert, _BaseMixtureOfExperts):
            return expert._n_parameters()
        if isinstance(expert, DummyRegressor):
            # A fitted mean or median per output; a given constant is free.
            return 0 if expert.strategy == "constant" else expert.constant_.size
        if hasattr(expert, "coef_") and hasattr(expert, "intercept_"):
            n_intercepts = np.size(expert.intercept_)
            if not getattr(expert, "fit_intercept", True):
                n_intercepts = 0
            return np.size(expert.coef_) + n_intercepts
        return None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            tags.target_tags.multi_output = all(
                get_tags(est).target_tags.multi_output
                for est in expert_templates(
                    self.expert,
                    self.n_experts,
                    self.feature_groups,
                    self._default_expert(),
                )
            )
        except (TypeError, ValueError, AttributeError):
            tags.target_tags.multi_output = False
        return tags


class MixtureOfExpertsClassifier(ClassifierMixin, _BaseMixtureOfExperts):
    __doc__ = _estimator_doc(
        summary="""Mixture of experts for classification, trained by EM.

    Each expert ``k`` is a probabilistic classifier ``p_k(c | x)``; the gate
    gives the probability ``g_k(x)`` that expert ``k`` is the one to trust at
    ``x``. ``predict_proba`` pools the experts: ``sum_k g_k(x) p_k(c | x)``
    or the most trusted expert's probabilities. Experts are fitted on the
    encoded labels; an expert that never saw a class gives it a floor
    probability of 1e-12, so every expert's probabilities are aligned to
    `classes_`.
""",
        default_expert=":class:`~sklearn.linear_model.LogisticRegression`",
        attributes="""
    classes_ : ndarray of shape (n_classes,)
        The class labels.
""",
        see_also="""
    MixtureOfExpertsRegressor : The same model for continuous targets.
    sklearn.ensemble.VotingClassifier : Fixed-weight pooling of classifiers.""",
        notes="""
    An expert whose rows all carry one class (possible with
    ``training="hard"``) is fitted as a constant
    :class:`~sklearn.dummy.DummyClassifier` for that step, since most
    classifiers refuse a single class.
""",
        examples="""
    Examples
    --------
    >>> from mixexp import MixtureOfExpertsClassifier
    >>> from mixexp.datasets import make_xor
    >>> X, y = make_xor(n_samples=400, random_state=0)
    >>> moe = MixtureOfExpertsClassifier(n_experts=4, random_state=0).fit(X, y)
    >>> round(moe.score(X, y), 3)
    0.998
    >>> moe.predict_proba(X[:4]).round(2)
    array([[0., 1.],
           [0., 1.],
           [1., 0.],
           [1., 0.]])
    >>> moe.predict(X[:4])
    array([1, 1, 0, 0])
    """,
    )

    _y_numeric = False

    def _default_expert(self):
        return LogisticRegression()

    # An expert's rows may hold one class (under hard EM): see the function.
    _fit_one = staticmethod(fit_weighted_classifier)

    def _check_expert(self, expert, name):
        if not hasattr(expert, "predict_proba"):
            raise ValueError(
                f"{name}={expert!r} has no predict_proba; the experts of a "
                "MixtureOfExpertsClassifier must give class probabilities (for "
                "example SVC(probability=True) rather than SVC())."
            )

    def _validate_targets(self, y, reset, classes=None):
        if reset:
            check_classification_targets(y)
            y = column_or_1d(y, warn=True)
            self.le_ = LabelEncoder().fit(y if classes is None else classes)
            self.classes_ = self.le_.classes_
            if self.classes_.shape[0] < 2:
                source = "y" if classes is None else "classes"
                raise ValueError(
                    f"{source} holds one class only ({self.classes_.tolist()[0]!r}); "
                    "the classifier needs at least 2. A mixture of experts learns "
                    "which class each row has: give it rows of several classes."
                )
            unknown = np.setdiff1d(y, self.classes_)
            if unknown.size:
                raise ValueError(
                    f"y contains labels not in classes={self.classes_.tolist()}: "
                    f"{unknown.tolist()}. Pass every label the stream may hold "
                    "to the first call of partial_fit."
                )
        else:
            y = column_or_1d(y)
            unknown = np.setdiff1d(y, self.classes_)
            if unknown.size:
                raise ValueError(
                    f"y contains labels not seen in fit (nor in the classes of the "
                    f"first call of partial_fit): {unknown.tolist()}."
                )
        encoded = self.le_.transform(y)
        return encoded, encoded

    def _likelihood_for(self, templates, y, sample_weight):
        return CategoricalLikelihood()

    def _chunked_family_name(self, templates):
        return "categorical"

    def _chunked_targets(self, y):
        import dask

        if y.ndim != 1:
            raise ValueError(
                f"y should be a 1d array, got a dask array of shape {y.shape} instead."
            )
        classes = np.unique(dask.compute(y.map_blocks(np.unique).ravel())[0])
        self.le_ = LabelEncoder().fit(classes)
        self.classes_ = self.le_.classes_
        if self.classes_.shape[0] < 2:
            raise ValueError(
                f"y holds one class only ({self.classes_.tolist()[0]!r}); the "
                "classifier needs at least 2."
            )
        return self.classes_

    def _outputs_function(self):
        return functools.partial(_class_outputs, n_classes=self.classes_.shape[0])

    def _n_expert_parameters(self, expert):
        if isinstance(expert, _BaseMixtureOfExperts):
            return expert._n_parameters()
        if isinstance(expert, DummyClassifier):
            return len(expert.classes_) - 1
        if hasattr(expert, "coef_") and hasattr(expert, "intercept_"):
            coef = np.atleast_2d(expert.coef_)
            n_rows = coef.shape[0]
            per_class = coef.shape[1] + (
                1 if getattr(expert, "fit_intercept", True) else 0
            )
            # A multinomial model is defined up to one class's parameters.
            return per_class * (n_rows - 1 if n_rows > 1 else 1)
        return None

    _online_experts = (
        "an expert with predict_proba and a partial_fit that takes "
        "sample_weight, such as SGDClassifier(loss='log_loss'), MLPClassifier "
        "or GaussianNB"
    )

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Update the mixture with one batch of a stream (online EM).

        Call it once per batch; after each call the mixture predicts.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The batch's inputs, with the features of the first call.
        y : array-like of shape (n_samples,)
            Its class labels, all among `classes`.
        classes : array-like of shape (n_classes,), default=None
            Every label the stream may hold. Required on the first call
            (unless the mixture was fitted by `fit`, whose labels it then
            keeps), as in :meth:`sklearn.linear_model.SGDClassifier.partial_fit`;
            later calls may omit it or must give the same labels.
        {weight_and_notes}
        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.linear_model import SGDClassifier
        >>> from mixexp import MixtureOfExpertsClassifier
        >>> from mixexp.datasets import make_xor
        >>> X, y = make_xor(n_samples=5000, random_state=0)
        >>> moe = MixtureOfExpertsClassifier(
        ...     SGDClassifier(loss="log_loss"), n_experts=2, random_state=0
        ... )
        >>> for batch in np.array_split(np.arange(4000), 8):
        ...     moe = moe.partial_fit(X[batch], y[batch], classes=[0, 1])
        >>> moe.n_batch_iter_
        8
        >>> round(moe.score(X[4000:], y[4000:]), 1)  # held-out accuracy
        1.0
        """
        return self._partial_fit(
            X, y, sample_weight, classes=self._partial_fit_classes(classes)
        )

    partial_fit.__doc__ = partial_fit.__doc__.format(weight_and_notes=_PARTIAL_FIT_TAIL)

    def _partial_fit_classes(self, classes):
        """The classes a first call learns; None when they are known.

        As scikit-learn's online classifiers: required on the first call,
        the same ones (or none) afterwards.
        """
        if classes is not None:
            classes = np.unique(column_or_1d(classes))
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError(
                    "classes must be passed on the first call of partial_fit: "
                    "every label the stream may hold (for example "
                    "classes=np.unique(y_all))."
                )
            return classes
        if classes is not None and not np.array_equal(classes, self.classes_):
            raise ValueError(
                f"classes={classes.tolist()} is not the same as on the first call "
                f"of partial_fit (or in fit): {self.classes_.tolist()}."
            )
        return None

    def predict_proba(self, X):
        """Pooled class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The rows to classify.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of `classes_`; rows sum to 1.
        """
        if is_dask_collection(X):
            check_is_fitted(self)
            n_classes = len(self.classes_)
            return lazy_rows(self.predict_proba, X, self.n_features_in_, n_classes)
        X = self._check_predict_X(X)
        weights = self._pooling_weights(X)
        outputs = self._expert_outputs(
            self.experts_, self._X_parts(X), used=_used_experts(weights)
        )
        proba = _weighted_sum(weights, outputs)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Logarithm of `predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The rows to classify, as for :meth:`predict_proba`.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Natural logarithm of the pooled class probabilities.
        """
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """Most probable class under the pooled probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from `classes_`.
        """
        if is_dask_collection(X):
            check_is_fitted(self)
            return lazy_rows(
                self.predict, X, self.n_features_in_, dtype=self.classes_.dtype
            )
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
