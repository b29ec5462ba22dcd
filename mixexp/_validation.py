"""Checks of a mixture's inputs and parameters that its constraints cannot say.

The ``_parameter_constraints`` of the estimators say which values each
parameter accepts, and scikit-learn's helpers (``validate_data``,
``_check_sample_weight``) check the arrays. What is left is here: checks
that relate parameters to each other or to the data, each with a message
that names the argument at fault and the fix (``docs/bad_input.md`` lists
them all).
"""

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import _check_sample_weight, _num_samples


def _ndim(a):
    """Number of dimensions of an array-like, or None if it has none."""
    ndim = getattr(a, "ndim", None)
    if ndim is None:
        try:
            ndim = np.asarray(a).ndim
        except (ValueError, TypeError):  # ragged: validate_data says why
            return None
    return ndim


def check_2d(X):
    """Refuse a 1-D X with a message that says how to reshape it.

    Returns the number of dimensions of X (None if it has none).
    """
    ndim = _ndim(X)
    if ndim == 1:
        raise ValueError(
            "X must be 2-D, of shape (n_samples, n_features); got a 1-D array. "
            "Reshape your data with X.reshape(-1, 1) if it is a single feature, "
            "or X.reshape(1, -1) if it is a single row."
        )
    return ndim


def check_X_y_shapes(X, y):
    """Refuse X and y that cannot pair up, naming both, before validation.

    scikit-learn's own checks say the same in terms of samples and arrays;
    these messages say which argument is at fault and how to fix it.
    """
    ndim = check_2d(X)
    if sp.issparse(y):
        raise TypeError(
            "Sparse data was passed for y, but dense data is required. Use "
            "y.toarray() to convert it to a dense numpy array."
        )
    if ndim != 2:
        return
    n_rows = _num_samples(X)
    if n_rows == 0:
        shape = getattr(X, "shape", None) or np.asarray(X).shape
        raise ValueError(f"X has 0 rows (shape={shape}); at least 1 is required.")
    if y is not None and (_ndim(y) or 0) >= 1 and _num_samples(y) != n_rows:
        raise ValueError(
            f"X has {n_rows} rows but y has {_num_samples(y)}. Pass one target "
            "per row of X."
        )


def check_sample_weight(sample_weight, X):
    """Row weights as a float array: non-negative, with a positive sum."""
    sample_weight = _check_sample_weight(
        sample_weight, X, dtype=np.float64, ensure_non_negative=True
    )
    if not sample_weight.sum() > 0:  # scikit-learn < 1.7 lets it through
        raise ValueError("sample_weight sums to zero: at least one row needs weight.")
    return sample_weight


def check_n_experts(n_experts):
    """Refuse a bool, which the ``int`` constraint would let through."""
    if isinstance(n_experts, (bool, np.bool_)):
        raise TypeError(f"n_experts must be an int, got {n_experts!r} (a bool).")


def expert_templates(expert, n_experts, feature_groups, default):
    """The unfitted template of each expert (not yet cloned).

    Parameters
    ----------
    expert : estimator, list of estimators or None
        The mixture's ``expert`` parameter; None means `default`.
    n_experts : int
        Used when `expert` is one estimator and `feature_groups` is None.
    feature_groups : list or None
        Its length sets the number of experts, when given.
    default : estimator

    Returns
    -------
    list of estimators
    """
    if isinstance(expert, list):
        if len(expert) == 0:
            raise ValueError("expert is an empty list; give at least one expert.")
        templates = list(expert)
        for k, est in enumerate(templates):
            if not (hasattr(est, "fit") and hasattr(est, "predict")):
                raise TypeError(
                    f"expert[{k}]={est!r} is not an estimator: it needs fit and "
                    "predict."
                )
    else:
        template = default if expert is None else expert
        count = len(feature_groups) if feature_groups is not None else n_experts
        templates = [template] * count
    if feature_groups is not None and len(feature_groups) != len(templates):
        raise ValueError(
            f"expert is a list of {len(templates)} estimators but feature_groups "
            f"has {len(feature_groups)} groups; give one group per expert."
        )
    return templates


def check_expert_weights(templates, names, takes_weights, training, uniform):
    """Refuse experts that cannot take the weights the fit must give them.

    Parameters
    ----------
    templates : list of estimators
    names : list of str
        How each expert is named in messages (``expert`` or ``expert[k]``).
    takes_weights : list of bool
        Whether each expert's fit takes ``sample_weight``.
    training : {"em", "hard", "fixed"}
    uniform : bool
        Whether the user's ``sample_weight`` is the same for every row.
    """
    for est, name, takes in zip(templates, names, takes_weights, strict=True):
        if takes:
            continue
        if training == "em":
            raise ValueError(
                f"{name}={est!r} does not accept sample_weight in fit, which soft "
                "EM needs to pass the responsibilities. Use training='hard' "
                "(each row goes to one expert) or an expert that takes "
                "sample_weight."
            )
        if not uniform:
            raise ValueError(
                f"{name}={est!r} does not accept sample_weight in fit, so it "
                "cannot honour the sample_weight passed to fit."
            )


def check_routing_params(top_k, pooling, min_expert_load, n_experts):
    """Refuse pooling and load settings that the number of experts cannot meet."""
    if top_k is not None:
        if top_k > n_experts:
            raise ValueError(
                f"top_k={top_k} exceeds the number of experts {n_experts}."
            )
        if pooling == "argmax" and top_k != 1:
            raise ValueError(
                f"pooling='argmax' keeps one expert, but top_k={top_k}: use "
                "pooling='weighted' with top_k, or top_k=None."
            )
    if min_expert_load is not None and min_expert_load >= 1 / n_experts:
        raise ValueError(
            f"min_expert_load={min_expert_load} cannot be met by {n_experts} "
            "experts: it must be below 1 / n_experts."
        )
