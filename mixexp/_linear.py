"""The M-step of linear-regression experts by weighted normal equations.

An EM iteration refits every expert on the same rows with new weights. For
:class:`~sklearn.linear_model.LinearRegression` experts, scikit-learn's fit
solves each weighted least-squares problem by an SVD of the rescaled rows
(LAPACK ``gelsd``), which costs several times more than forming the
``d x d`` weighted Gram matrix when ``n >> d``, plus validation and copies
made anew at each call (``benchmarks/kernels.py`` times both). Here the same
minimiser comes from the Gram matrix of the centred, correlation-scaled
columns and its eigendecomposition, and the result is an ordinary fitted
``LinearRegression``. The experts of one EM step are solved together: each
forms its own Gram matrix on its own rows, and the eigendecompositions run
once on the stacked matrices, so on small data an iteration does not pay
the fixed cost of a fit once per expert.

The Gram matrices are summed over blocks of rows: each block is gathered,
transposed into a small buffer (every pass then runs along contiguous
memory, faster than along rows of a few features: benchmarks/kernels.py),
centred on its own weighted mean and merged with the blocks before it by the
pairwise update of Chan, Golub and LeVeque (1979), "Updating formulae and a
pairwise algorithm for computing sample variances". So no copy of ``X``,
transposed or per expert, is ever made, and the centring is as exact as a
two-pass one.

The normal equations square the condition number of the centred, scaled
columns. Directions whose eigenvalue falls below ``1000 d eps`` times the
largest are treated as rank-deficient and get no weight (the least-squares
solution of minimum norm in the scaled coordinates), so an ill-conditioned
expert gives predictions as accurate as the data pin down, not noise.
"""

import numpy as np
from sklearn.linear_model import LinearRegression

from mixexp._utils import pair_products, symmetric_from_pairs

__all__ = [
    "fit_linear_regressions",
    "is_plain_linear_regression",
]

# Relative eigenvalue (per feature) of the scaled Gram matrix below which a
# direction counts as rank-deficient: rounding leaves eigenvalues of about
# eps times the largest where the columns are exactly dependent, so the cut
# sits a thousand times above that, at singular values about 1e-6 of the
# largest.
_RANK_TOLERANCE = 1e3 * np.finfo(float).eps

# The cost of the shared pass that forms every expert's normal equations
# together, in passes of one expert over all rows: fixed, and per expert.
# ``benchmarks/kernels.py`` (item 8) times both passes at 100,000 x 20 for
# K = 2 to 64 and 10% to all of the rows kept: a least-squares fit gives
# about 36 ms + 1.6 ms per expert for the shared pass, 8.7 ms per expert and
# full set of rows for the own ones (4.1 and 0.18 in these units); these
# constants pick the faster pass in all 24 cases there.
_SHARED_FIXED_COST = 5.0
_SHARED_EXPERT_COST = 0.15

# Formed together, an expert's Gram matrix comes from moments about the
# overall mean: a column whose second moment there exceeds its spread about
# the expert's own mean by more than this factor (1e4: four of sixteen
# digits lost) is left to the expert's own centred pass.
_SHARED_MAX_CANCELLATION = 1e4

# Bytes of one block of the shared pass's column products: larger than a
# cache-sized block, as each block also costs a loop over the experts to
# gather their weights (at 100,000 x 20 and 64 experts, 95 ms per pass
# instead of 107 with all rows kept, 133 instead of 174 with 90%).
_SHARED_BLOCK_BYTES = 2**23

# Bytes of one block of rows (transposed, with the targets): a few MiB, so
# that a block stays in cache while it is centred, weighted and multiplied.
_BLOCK_BYTES = 2**21


def is_plain_linear_regression(estimator):
    """Whether `estimator` is a ``LinearRegression`` this module can fit.

    Subclasses may change ``fit``, and ``positive=True`` is a constrained
    problem: both keep scikit-learn's own fit.
    """
    return type(estimator) is LinearRegression and not estimator.positive


def fit_linear_regressions(templates, X_parts, y, weights, rows, sample_weight=None):
    """Fit plain LinearRegression templates, each on its own rows and weights.

    The K weighted least-squares problems of an EM step are formed one by
    one (each on its own rows, centred on its own weighted mean) and solved
    together: the eigendecompositions and the bookkeeping run once on
    stacked (K, d, d) arrays, so the fixed cost of a step does not grow
    with the number of experts.

    Parameters
    ----------
    templates : list of K LinearRegression
        Unfitted; each one's ``fit_intercept`` is honoured. They are not
        modified: the fitted experts are shallow copies.
    X_parts : list of K ndarrays of shape (n_samples, n_features_k)
        Finite float64 inputs of each expert (the same array for experts
        that share their columns). Never copied whole.
    y : ndarray of shape (n_samples,) or (n_samples, n_targets)
    weights : list of K ndarrays of shape (n_samples,) or None, or ndarray
        Non-negative row weights of each expert (``None``: all 1), with a
        positive sum on its rows (times `sample_weight`); or an array of
        shape (n_samples, K), the experts' weights as columns (EM's
        responsibilities), whose blocks of rows then need no gathering.
    rows : list of K ndarrays of int or None
        The rows each expert is fitted on; ``None`` for all rows.
    sample_weight : ndarray of shape (n_samples,), default=None
        Row weights shared by every expert, multiplied into each expert's
        `weights` on its own rows only (EM passes the responsibilities as
        `weights`: no (n, K) array of products is made).

    Returns
    -------
    list of K LinearRegression
        With ``coef_``, ``intercept_``, ``rank_``, ``singular_`` and
        ``n_features_in_`` set as ``LinearRegression.fit`` sets them.
    """
    widths = {X.shape[1] for X in X_parts}
    if len(widths) > 1:  # column groups of different sizes cannot be stacked
        weights = list(weights.T) if isinstance(weights, np.ndarray) else weights
        return [
            fit_linear_regressions([t], [X], y, [w], [r], sample_weight)[0]
            for t, X, w, r in zip(templates, X_parts, weights, rows, strict=True)
        ]
    targets = y.reshape(y.shape[0], -1)
    intercepts = np.array([t.fit_intercept for t in templates])
    moments = weighted_moments(
        X_parts, targets, weights, rows, intercepts, sample_weight
    )
    return regressions_from_moments(templates, moments, targets.shape[1], y.ndim)


def weighted_moments(X_parts, targets, weights, rows, fit_intercept, sample_weight):
    """Each expert's weighted moments of its columns and the targets.

    Parameters
    ----------
    X_parts, weights, rows, sample_weight
        As for :func:`fit_linear_regressions` (the columns of equal width;
        `weights` a list, or an (n_samples, K) array of them as columns).
    targets : ndarray of shape (n_samples, n_targets)
    fit_intercept : ndarray of bool of shape (K,)
        Whether each expert's moments are centred on its weighted mean.

    Returns
    -------
    list of K tuples ``(scatter, total, mean)``
        ``scatter``, of shape (d + m, d + m), sums the weighted products of
        the columns (features, then targets) about ``mean``, their weighted
        means (zero without an intercept); ``total`` sums the weights.
    """
    matrix = weights if isinstance(weights, np.ndarray) else None
    if matrix is not None:
        weights = list(matrix.T)
    shared = _shares_dense_rows(X_parts, weights, rows, fit_intercept)
    moments = [None] * len(X_parts)
    if shared:
        moments = _shared_normal_equations(
            X_parts[0], targets, weights, rows, sample_weight, matrix
        )
    return [
        moment
        if moment is not None
        else _normal_equations(X, targets, w, r, intercept, sample_weight)
        for moment, X, w, r, intercept in zip(
            moments, X_parts, weights, rows, fit_intercept, strict=True
        )
    ]


def regressions_from_moments(templates, moments, n_targets, y_ndim, ridge=None):
    """Fitted LinearRegression (or Ridge) experts from their moments.

    Parameters
    ----------
    templates : list of K LinearRegression or Ridge
        Unfitted; not modified: the fitted experts are shallow copies.
    moments : list of K tuples ``(scatter, total, mean)``
        See :func:`weighted_moments`.
    n_targets : int
        The last `n_targets` columns of the moments are the targets.
    y_ndim : int
        1 for a single target given as a vector (``coef_`` of shape (d,)).
    ridge : ndarray of shape (K,), default=None
        Each expert's ridge penalty on the coefficients, in the units of
        the scatter (zero, or None, for least squares).

    Returns
    -------
    list of K fitted estimators, with the attributes their ``fit`` sets.
    """
    scatter, total, mean = (np.stack(part) for part in zip(*moments, strict=True))
    n_features = scatter.shape[1] - n_targets
    intercepts = np.array([t.fit_intercept for t in templates])
    gram = scatter[:, :n_features, :n_features]
    moment = scatter[:, :n_features, n_features:]
    x_mean, y_mean = mean[:, :n_features], mean[:, n_features:]
    if ridge is not None and np.any(ridge > 0):
        diagonal = np.arange(n_features)
        gram = gram.copy()
        gram[:, diagonal, diagonal] += np.asarray(ridge)[:, np.newaxis]
    coef, rank, singular = _solve_normal_equations(
        gram, moment, total, x_mean, intercepts
    )
    intercept = y_mean - np.einsum("kd,kdm->km", x_mean, coef)
    fitted = []
    for k, template in enumerate(templates):
        estimator = _shallow_copy(template)
        estimator.n_features_in_ = n_features
        if type(template) is LinearRegression:
            estimator.rank_ = int(rank[k])
            estimator.singular_ = singular[k]
        else:  # Ridge, solved as its "cholesky" solver solves it
            estimator.n_iter_ = None
            estimator.solver_ = "cholesky"
        if y_ndim == 1:
            estimator.coef_ = coef[k, :, 0].copy()
            estimator.intercept_ = float(intercept[k, 0]) if intercepts[k] else 0.0
        else:
            estimator.coef_ = np.ascontiguousarray(coef[k].T)
            estimator.intercept_ = intercept[k] if intercepts[k] else 0.0
        fitted.append(estimator)
    return fitted


def least_squares_from_moments(templates, moments, n_targets, y_ndim, ridge=None):
    """Least-squares experts from their moments, and their residual scatter.

    The residual scatter of a linear expert is a quadratic form in the
    moments it was solved from, ``S_yy - B^T S_xy - S_yx B + B^T S_xx B``
    about zero: no pass over the rows is needed for the Gaussian family's
    noise scale.

    Parameters
    ----------
    templates, n_targets, y_ndim, ridge
        As for :func:`regressions_from_moments`.
    moments : tuple ``(scatter, total, mean)``
        Each expert's moments stacked: (K, d + m, d + m), (K,) and (K, d + m),
        about each one's weighted mean (see :func:`weighted_moments`).

    Returns
    -------
    experts : list of K fitted estimators
    residual : ndarray of shape (K, m, m)
        Each expert's weighted residual scatter (``sum_i w_ik e_i e_i^T``).
    """
    scatter, total, mean = moments
    intercepts = np.array([t.fit_intercept for t in templates])
    # Without an intercept an expert's moments are about zero.
    outer = mean[:, :, np.newaxis] * mean[:, np.newaxis, :]
    raw = scatter + (~intercepts * total)[:, np.newaxis, np.newaxis] * outer
    about = np.where(intercepts[:, np.newaxis], mean, 0.0)
    kept = [(raw[k], total[k], about[k]) for k in range(len(templates))]
    experts = regressions_from_moments(templates, kept, n_targets, y_ndim, ridge)
    residual = np.empty((len(templates), n_targets, n_targets))
    n_features = raw.shape[1] - n_targets
    for k, expert in enumerate(experts):
        coef = np.reshape(expert.coef_, (n_targets, n_features)).T  # (d, m)
        xx = raw[k, :n_features, :n_features]
        xy = raw[k, :n_features, n_features:]
        yy = raw[k, n_features:, n_features:]
        cross = coef.T @ xy
        residual[k] = yy - cross - cross.T + coef.T @ xx @ coef
    return experts, residual


def _normal_equations(X, targets, weights, rows, fit_intercept, sample_weight):
    """Weighted moments of one expert's centred rows (features, targets).

    Summed over blocks of `rows` (all rows if None), each centred on its own
    weighted mean and merged by the pairwise update (see the module's
    docstring). Returns the scatter matrix of the centred, weighted columns,
    the total weight and the weighted means (zero without an intercept), as
    :func:`weighted_moments`.
    """
    n_rows = X.shape[0] if rows is None else rows.size
    width = X.shape[1] + targets.shape[1]
    block_rows = min(max(256, _BLOCK_BYTES // (8 * width)), n_rows)
    block = np.empty((width, block_rows))  # features, then targets
    # Gathered once: np.take from a strided column (EM's responsibilities)
    # copies the whole column first.
    all_weights = _row_weights(weights, sample_weight, rows, n_rows)
    # A column-major X (a pandas DataFrame's values, often) is gathered
    # from its transpose, along contiguous columns: gathering its rows, each
    # spread over all columns, is several times slower (benchmarks/kernels.py).
    XT = X.T if X.flags.f_contiguous and not X.flags.c_contiguous else None
    total, mean, full = 0.0, np.zeros(width), np.zeros((width, width))
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        picked = slice(start, stop) if rows is None else rows[start:stop]
        z = block[:, : stop - start]
        if rows is None:
            z[: X.shape[1]] = X[picked].T if XT is None else XT[:, picked]
            z[X.shape[1] :] = targets[picked].T
        else:  # np.take: no slower than fancy indexing on a row-major X, 2 to
            # 8 times faster on a column-major one (benchmarks/kernels.py, item 2)
            z[: X.shape[1]] = (
                np.take(X, picked, axis=0).T
                if XT is None
                else np.take(XT, picked, axis=1)
            )
            z[X.shape[1] :] = np.take(targets, picked, axis=0).T
        w = all_weights[start:stop]
        weight = w.sum()
        if not weight > 0:
            continue
        if fit_intercept:
            block_mean = z @ w / weight
            z -= block_mean[:, np.newaxis]
        z *= np.sqrt(w)
        gram = z @ z.T
        if fit_intercept and total > 0:
            # Chan et al.'s update: the two blocks' means differ by delta.
            delta = block_mean - mean
            merged = total + weight
            gram += (total * weight / merged) * np.outer(delta, delta)
            mean += (weight / merged) * delta
        elif fit_intercept:
            mean = block_mean
        full += gram
        total += weight
    return full, total, mean


def _shares_dense_rows(X_parts, weights, rows, fit_intercept):
    """Whether the experts' normal equations are best formed together.

    They can be when every expert sees the same columns and fits an
    intercept. A pass of its own costs each expert in proportion to the
    rows it keeps; the shared pass costs all rows once, plus a little per
    expert (`_SHARED_FIXED_COST`, `_SHARED_EXPERT_COST`): it pays with many
    overlapping experts (a soft EM from a random start, or many local
    experts), not with a few that have specialised.
    """
    n_experts = len(X_parts)
    if not all(fit_intercept) or any(w is None for w in weights):
        return False
    if any(X is not X_parts[0] for X in X_parts):
        return False
    n_samples = X_parts[0].shape[0]
    kept = sum(n_samples if r is None else r.size for r in rows)
    cost = _SHARED_FIXED_COST + _SHARED_EXPERT_COST * n_experts
    return kept > cost * n_samples


def _shared_normal_equations(X, targets, weights, rows, sample_weight, matrix=None):
    """Every expert's `_normal_equations` on its rows, formed together.

    Per block of rows, the columns (features, then targets) are centred on
    their overall weighted mean ``c`` and the products of every pair of
    them formed once; one matrix product with the (K, rows) weights then
    sums each expert's weight, first moments and second moments. Each
    expert's Gram matrix about its own mean follows as ``S2 / W - m m^T``
    (times W): exact in exact arithmetic, with a cancellation that grows as
    ``|m - c|^2 / variance``. An expert whose columns lose more than
    `_SHARED_MAX_CANCELLATION` that way is left to `_normal_equations`
    (None in its place).

    With `matrix`, the (n, K) array whose columns are `weights`, and every
    expert on all rows, a block of its rows enters the product as it is
    (transposed by the matrix product, not copied); the row weights
    `sample_weight` then weigh the products instead, or the sums when all
    rows weigh the same.

    Returns
    -------
    list of K tuples ``(scatter, total, mean)`` (see `weighted_moments`) or None
    """
    n_samples, n_features = X.shape
    width = n_features + targets.shape[1]
    n_experts = len(weights)
    rows = [r if r is None or np.all(r[1:] > r[:-1]) else np.unique(r) for r in rows]
    overall = sample_weight if sample_weight is not None else np.ones(n_samples)
    centre = np.concatenate([overall @ X, overall @ targets]) / overall.sum()
    n_sums = pair_sums_width(width)
    block_rows = min(max(256, _SHARED_BLOCK_BYTES // (8 * n_sums)), n_samples)
    features = np.empty((n_sums, block_rows))
    as_columns = matrix is not None and all(r is None for r in rows)
    # With the weights as columns, row weights that are all alike (one
    # pass to tell) scale the sums once instead of every block's products.
    alike = as_columns and (
        sample_weight is None or bool(np.all(sample_weight == sample_weight[0]))
    )
    block_weights = None if as_columns else np.empty((n_experts, block_rows))
    sums = np.zeros((n_experts, n_sums))
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        m = stop - start
        block = centred_pair_features(
            X[start:stop], targets[start:stop], centre, features[:, :m]
        )
        if as_columns:
            if not alike:
                block *= sample_weight[start:stop]
            sums += matrix[start:stop].T @ block.T
            continue
        for k, (w, kept) in enumerate(zip(weights, rows, strict=True)):
            if kept is None:
                block_weights[k, :m] = w[start:stop]
                continue
            # The expert's rows in this block, of the increasing `kept`.
            lo, hi = np.searchsorted(kept, (start, stop))
            block_weights[k, :m] = 0.0
            block_weights[k, kept[lo:hi] - start] = w[kept[lo:hi]]
        if sample_weight is not None:
            block_weights[:, :m] *= sample_weight[start:stop]
        sums += block_weights[:, :m] @ block.T
    if alike and sample_weight is not None:
        sums *= sample_weight[0]
    return moments_from_pair_sums(sums, width, centre)


def pair_sums_width(width):
    """Rows of `centred_pair_features` for `width` columns: the constant,
    the columns and their products."""
    return 1 + width + width * (width + 1) // 2


def centred_pair_features(X, targets, centre, out):
    """A block's rows ``[1, c, c_a c_b (a <= b)]`` as columns, into `out`.

    ``c`` are the columns (features, then targets) less `centre`. One
    matrix product of the experts' (K, rows) weights with them sums every
    expert's weight, first and second moments about `centre` at once
    (`moments_from_pair_sums` turns the sums into moments).

    Parameters
    ----------
    X : ndarray of shape (m, d)
    targets : ndarray of shape (m, t)
    centre : ndarray of shape (d + t,)
    out : ndarray of shape (`pair_sums_width` (d + t), m)

    Returns
    -------
    out
    """
    n_features, width = X.shape[1], X.shape[1] + targets.shape[1]
    out[0] = 1.0
    z = out[1 : 1 + width]
    np.subtract(X.T, centre[:n_features, np.newaxis], out=z[:n_features])
    np.subtract(targets.T, centre[n_features:, np.newaxis], out=z[n_features:])
    pair_products(z, out[1 + width :])
    return out


def moments_from_pair_sums(sums, width, centre):
    """Each expert's moments from its sums over `centred_pair_features`.

    The Gram matrix about the expert's own mean follows as ``S2 - W m m^T``:
    exact in exact arithmetic, with a cancellation that grows as ``|m -
    centre|^2 / variance``. An expert whose columns would lose more than
    `_SHARED_MAX_CANCELLATION` that way, or that has no weight, gets None
    (its moments need a pass of their own, `_normal_equations`).

    Parameters
    ----------
    sums : ndarray of shape (K, `pair_sums_width` (width))
    width : int
    centre : ndarray of shape (width,)

    Returns
    -------
    list of K tuples ``(scatter, total, mean)`` (see `weighted_moments`) or None
    """
    total = sums[:, 0]
    seconds = symmetric_from_pairs(sums[:, 1 + width :], width)
    problems = []
    for k, second in enumerate(seconds):
        if not total[k] > 0:
            problems.append(None)
            continue
        mean = sums[k, 1 : 1 + width] / total[k]
        gram = second - total[k] * np.outer(mean, mean)
        spread = np.diagonal(gram)
        raw = np.diagonal(second)
        if np.any(raw > _SHARED_MAX_CANCELLATION * np.maximum(spread, 0.0)):
            problems.append(None)
            continue
        problems.append((gram, total[k], mean + centre))
    return problems


def _row_weights(weights, sample_weight, rows, n_rows):
    """The product of the two optional weights on `rows` (all 1 if neither)."""
    factors = [
        factor if rows is None else np.take(factor, rows)
        for factor in (weights, sample_weight)
        if factor is not None
    ]
    if not factors:
        return np.ones(n_rows)
    if len(factors) == 1:
        return factors[0]
    return factors[0] * factors[1]


def _solve_normal_equations(gram, moment, total, x_mean, fit_intercept):
    """Minimum-norm solutions of stacked normal equations.

    Parameters
    ----------
    gram : ndarray of shape (K, d, d)
    moment : ndarray of shape (K, d, m)
    total : ndarray of shape (K,)
        Sum of each problem's weights.
    x_mean : ndarray of shape (K, d)
    fit_intercept : ndarray of bool of shape (K,)

    Returns
    -------
    coef : ndarray of shape (K, d, m)
    rank : ndarray of int of shape (K,)
    singular : ndarray of shape (K, d)
        Singular values of each weighted, centred design, largest first.
    """
    n_features = gram.shape[1]
    # A constant column centres to rounding noise, not to zero: drop it (the
    # intercept carries it) rather than fit the noise. Its weighted spread is
    # on the Gram matrix's diagonal.
    spread = np.sqrt(np.diagonal(gram, axis1=1, axis2=2) / total[:, np.newaxis])
    constant = (spread <= 1e-12 * np.abs(x_mean)) & fit_intercept[:, np.newaxis]
    if constant.any():
        varying = ~constant
        gram = gram * (varying[:, :, np.newaxis] & varying[:, np.newaxis, :])
        moment = moment * varying[:, :, np.newaxis]
    scale = np.sqrt(np.diagonal(gram, axis1=1, axis2=2))
    scale[scale == 0.0] = 1.0
    values, vectors = np.linalg.eigh(
        gram / (scale[:, :, np.newaxis] * scale[:, np.newaxis, :])
    )
    keep = values > _RANK_TOLERANCE * n_features * np.maximum(values[:, -1:], 0.0)
    inverse = np.divide(1.0, values, out=np.zeros_like(values), where=keep)
    projected = vectors.transpose(0, 2, 1) @ (moment / scale[:, :, np.newaxis])
    coef = vectors @ (projected * inverse[:, :, np.newaxis])
    coef /= scale[:, :, np.newaxis]
    singular = np.sqrt(np.clip(np.linalg.eigvalsh(gram)[:, ::-1], 0.0, None))
    return coef, keep.sum(axis=1), singular


def _shallow_copy(estimator):
    # An unfitted clone holds only scalar parameters: sharing them is a
    # clone, without copy.copy's pickling protocol (ten times the cost,
    # benchmarks/kernels.py; an EM fit makes thousands).
    twin = object.__new__(type(estimator))
    twin.__dict__.update(estimator.__dict__)
    return twin
