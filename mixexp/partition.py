"""Initial partitions of the rows into subtasks, and feature-column groups.

EM needs a starting point: responsibilities that say, for each row, which
expert should learn it first. They come from clustering the (standardised)
inputs, or at random. Separately, feature-column groups give each expert its
own columns.
"""

import numbers
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import has_fit_parameter

from mixexp._em import one_hot
from mixexp._utils import single_threaded_blas

__all__ = ["check_partition", "initial_responsibilities", "resolve_feature_groups"]

PARTITIONS = ("kmeans", "gmm", "random")


def check_partition(partition):
    """Raise a TypeError unless `partition` is a known name or a clusterer.

    Parameters
    ----------
    partition : str or object
        The ``partition`` parameter of a mixture.

    Raises
    ------
    TypeError
        If `partition` is an object with neither ``fit_predict`` nor both
        ``fit`` and ``predict_proba``.

    See Also
    --------
    initial_responsibilities : The responsibilities a partition starts EM from.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from mixexp.partition import check_partition
    >>> check_partition(KMeans(n_clusters=3))
    >>> check_partition("kmeans")
    """
    if isinstance(partition, str):
        return
    if hasattr(partition, "fit_predict") or (
        hasattr(partition, "fit") and hasattr(partition, "predict_proba")
    ):
        return
    raise TypeError(
        f"partition={partition!r} is not a clusterer: it needs fit_predict (or "
        "fit and predict_proba). Use 'kmeans', 'gmm', 'random' or a clusterer "
        "such as sklearn.cluster.KMeans."
    )


def initial_responsibilities(X, partition, n_experts, sample_weight, random_state):
    """Return the responsibilities that start EM, one row per sample.

    Each row says how much each expert is responsible for that sample at the
    start of EM, before any expert or gate is fitted.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Training inputs. They are standardised (with `sample_weight`) before
        they are clustered; ``partition="random"`` ignores their values and
        uses only their number of rows.
    partition : {"kmeans", "gmm", "random"} or clusterer
        ``"kmeans"``: one-hot k-means clusters; ``"gmm"``: a Gaussian
        mixture's posterior probabilities; ``"random"``: rows drawn from a
        flat Dirichlet distribution. A clusterer instance is cloned; its
        ``n_clusters`` or ``n_components`` parameter, if it has one, is set
        to `n_experts`, then its ``predict_proba`` (if any) or its labels
        give the responsibilities. Clustering is done on standardised `X`.
    n_experts : int
        Number of experts, the number of columns of the result. A clusterer
        without ``n_clusters`` or ``n_components`` must find exactly this
        many clusters.
    sample_weight : ndarray of shape (n_samples,)
        Weight of each row, used to standardise `X` and passed to the
        clusterer's ``fit`` when it accepts ``sample_weight``.
    random_state : int, RandomState instance or None
        Seeds the Dirichlet draws of ``partition="random"``, or else the
        ``random_state`` of the clusterer (k-means, the Gaussian mixture, or
        a clusterer instance that has one). Pass an int for reproducible
        responsibilities.

    Returns
    -------
    ndarray of shape (n_samples, n_experts)
        Responsibility of each expert for each row; rows sum to 1. Hard
        partitions (k-means, or a clusterer's labels) give one-hot rows.

    Raises
    ------
    ValueError
        If `partition` is an unknown string, the clusterer's probabilities
        are not of shape (n_samples, n_experts), or its labels name more
        than `n_experts` clusters (or, when its number of clusters cannot be
        set, a number other than `n_experts`).
    TypeError
        If `partition` is neither a string nor a clusterer (see
        :func:`check_partition`).

    See Also
    --------
    check_partition : Check that a partition is a known name or a clusterer.
    resolve_feature_groups : Column indices of each expert's feature group.
    mixexp.MixtureOfExpertsRegressor : The mixture whose ``partition``
        parameter these responsibilities come from.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.partition import initial_responsibilities
    >>> X = np.array([[0.0, 0.0], [0.1, 0.2], [5.0, 5.0], [5.2, 4.9]])
    >>> initial_responsibilities(
    ...     X, "kmeans", n_experts=2, sample_weight=np.ones(4), random_state=0
    ... )
    array([[1., 0.],
           [1., 0.],
           [0., 1.],
           [0., 1.]])
    >>> resp = initial_responsibilities(
    ...     X, "random", n_experts=3, sample_weight=np.ones(4), random_state=0
    ... )
    >>> resp.shape
    (4, 3)
    >>> np.allclose(resp.sum(axis=1), 1.0)
    True
    """
    rng = check_random_state(random_state)
    n_samples = X.shape[0]
    kind, value = initial_partition(X, partition, n_experts, sample_weight, rng)
    if kind == "random":
        return rng.dirichlet(np.ones(n_experts), size=n_samples)
    if kind == "proba":
        return value
    return one_hot(value, n_experts)


def initial_partition(X, partition, n_experts, sample_weight, rng):
    """What `initial_responsibilities` builds its rows from.

    Returns ``("random", None)`` for ``partition="random"``, whose rows
    are then drawn from `rng` (a RandomState, not yet drawn from);
    ``("proba", proba)``, (n_samples, n_experts), for a clusterer's
    probabilities; ``("labels", labels)``, (n_samples,) ints in ``[0,
    n_experts)``, for clusters. `rng` is drawn from as
    `initial_responsibilities` draws from it.
    """
    n_samples = X.shape[0]
    if isinstance(partition, str) and partition == "random":
        return "random", None
    Xs = StandardScaler().fit_transform(X, sample_weight=sample_weight)
    seed = rng.randint(np.iinfo(np.int32).max)
    if isinstance(partition, str):
        if partition == "kmeans":
            clusterer = KMeans(n_clusters=n_experts, n_init=1, random_state=seed)
        elif partition == "gmm":
            clusterer = GaussianMixture(
                n_components=n_experts, reg_covar=1e-4, random_state=seed
            )
        else:
            raise ValueError(
                f"partition={partition!r} is not a known partition; use one of "
                f"{PARTITIONS} or a clusterer instance."
            )
        sized = True
    else:
        check_partition(partition)
        clusterer = clone(partition)
        params = clusterer.get_params(deep=False)
        sized = False
        for name in ("n_clusters", "n_components"):
            if name in params:
                clusterer.set_params(**{name: n_experts})
                sized = True
        if "random_state" in params:
            clusterer.set_params(random_state=seed)

    fit_kwargs = {}
    if has_fit_parameter(clusterer, "sample_weight"):
        fit_kwargs["sample_weight"] = sample_weight
    # At one BLAS thread, as scikit-learn's k-means runs anyway: its own
    # thread limit, taken and restored inside mixexp's, cannot then race with
    # mixexp's kernels when fits run side by side in threads.
    with warnings.catch_warnings(), single_threaded_blas:
        if sized:
            # Fewer distinct points than clusters: the empty clusters become
            # experts without rows, which EM re-seeds (and says so).
            warnings.simplefilter("ignore", ConvergenceWarning)
        if hasattr(clusterer, "predict_proba") and not isinstance(clusterer, KMeans):
            clusterer.fit(Xs, **fit_kwargs)
            proba = np.asarray(clusterer.predict_proba(Xs), dtype=float)
            if proba.shape != (n_samples, n_experts):
                raise ValueError(
                    f"The partition clusterer {partition!r} gave probabilities of "
                    f"shape {proba.shape}; expected (n_samples, n_experts)="
                    f"{(n_samples, n_experts)}."
                )
            return "proba", proba
        labels = np.asarray(clusterer.fit_predict(Xs, **fit_kwargs))
    found, labels = np.unique(labels, return_inverse=True)
    if found.shape[0] > n_experts or (not sized and found.shape[0] != n_experts):
        raise ValueError(
            f"The partition clusterer {partition!r} found {found.shape[0]} "
            f"clusters but n_experts={n_experts}: use a clusterer whose number "
            "of clusters can be set (n_clusters or n_components)."
        )
    return "labels", labels


def resolve_feature_groups(feature_groups, n_features, feature_names):
    """Return the column indices of each expert's feature group.

    Parameters
    ----------
    feature_groups : list
        One selection per expert: a list of integer indices (negative ones
        count from the end), of column names (only when the estimator was
        fitted on a DataFrame), a boolean mask of length ``n_features``, or a
        single integer or name.
    n_features : int
        Number of columns of `X`; integer indices must lie in
        ``[-n_features, n_features)``.
    feature_names : ndarray of str of shape (n_features,) or None
        Column names of `X` (an estimator's ``feature_names_in_``), used to
        resolve names; None when `X` has no column names, in which case a
        selection by name raises a ValueError.

    Returns
    -------
    list of ndarray of int
        One array per group, in the order of `feature_groups`: its sorted,
        unique, non-negative column indices. Groups may overlap.

    Raises
    ------
    TypeError
        If `feature_groups` is not a list-like of selections, or a selection
        holds something other than integers, names or booleans.
    ValueError
        If `feature_groups` or one of its selections is empty, a boolean mask
        has the wrong length or selects nothing, an index is out of range, or
        a name is unknown.

    See Also
    --------
    initial_responsibilities : The responsibilities that start EM.
    check_partition : Check that a partition is a known name or a clusterer.
    mixexp.MixtureOfExpertsRegressor : The mixture whose ``feature_groups``
        parameter is resolved here.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.partition import resolve_feature_groups
    >>> resolve_feature_groups([[2, 0, 0], [True, False, False, True]], 4, None)
    [array([0, 2]), array([0, 3])]
    >>> names = np.array(["age", "height", "weight"], dtype=object)
    >>> resolve_feature_groups([["weight", "age"], -1], 3, names)
    [array([0, 2]), array([2])]
    """
    if isinstance(feature_groups, (str, bytes)) or not hasattr(
        feature_groups, "__len__"
    ):
        raise TypeError(
            "feature_groups must be a list with one column selection per expert; "
            f"got {feature_groups!r}."
        )
    if len(feature_groups) == 0:
        raise ValueError("feature_groups must hold at least one column selection.")
    names = (
        None if feature_names is None else {n: i for i, n in enumerate(feature_names)}
    )
    return [
        _resolve_group(group, f"feature_groups[{k}]", "every expert", n_features, names)
        for k, group in enumerate(feature_groups)
    ]


def resolve_gate_features(gate_features, n_features, feature_names):
    """Column indices the gate sees: sorted, unique, non-negative.

    `gate_features` is one selection, as one entry of `feature_groups` (see
    :func:`resolve_feature_groups`); None selects every column (and gives
    None).
    """
    if gate_features is None:
        return None
    names = (
        None if feature_names is None else {n: i for i, n in enumerate(feature_names)}
    )
    return _resolve_group(gate_features, "gate_features", "the gate", n_features, names)


def _resolve_group(group, where, who, n_features, names):
    if isinstance(group, (str, numbers.Integral)):
        group = [group]
    if not hasattr(group, "__iter__"):
        raise TypeError(
            f"{where} is {group!r}; columns are selected by integer index, name "
            "or boolean mask."
        )
    items = np.asarray(list(group), dtype=object)
    if items.size == 0:
        raise ValueError(f"{where} is empty; {who} needs at least one column.")
    if all(isinstance(v, (bool, np.bool_)) for v in items):
        if items.size != n_features:
            raise ValueError(
                f"{where} is a boolean mask of length {items.size}, but X has "
                f"{n_features} features."
            )
        indices = np.flatnonzero(items.astype(bool))
        if indices.size == 0:
            raise ValueError(f"{where} selects no column; {who} needs one.")
        return indices
    indices = []
    for v in items:
        if isinstance(v, str):
            if names is None:
                raise ValueError(
                    f"{where} names column {v!r}, but X has no column names: fit "
                    "on a pandas DataFrame to select columns by name, or use "
                    "integer indices."
                )
            if v not in names:
                raise ValueError(f"{where} names column {v!r}, which is not in X.")
            indices.append(names[v])
        elif isinstance(v, numbers.Integral):
            if not -n_features <= v < n_features:
                raise ValueError(
                    f"{where} has column index {v}, out of range for X with "
                    f"n_features={n_features}."
                )
            indices.append(int(v) % n_features)
        else:
            raise TypeError(
                f"{where} holds {v!r}; columns are selected by integer index, "
                "name or boolean mask."
            )
    return np.unique(indices)
