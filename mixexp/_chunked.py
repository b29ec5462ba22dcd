"""Exact EM over the row chunks of dask arrays: every step a map-reduce pass.

A fit on dask arrays never gathers X. Each piece of an EM iteration that
reads the rows is a sum over them, computed chunk by chunk on the active
dask scheduler (threads, processes or a ``distributed.Client``) and
reduced pairwise:

- the E-step and, under its responsibilities, each expert's weighted
  moments of its columns and the targets (``_linear.weighted_moments``),
  from which LinearRegression and Ridge experts are solved exactly, and the
  Gaussian family's noise scale follows (the residual scatter of a linear
  expert is a quadratic form in the same moments);
- generalised linear experts (Poisson, Gamma, logistic), which cannot be
  refitted on all their rows at once: the gradient and Hessian of their
  objectives, for one Newton step each per iteration, checked in one more
  pass (``_glm_steps.py``; a generalised M-step);
- the softmax gate's loss, gradient and Hessian: the gate takes the very
  Newton steps it takes in memory (``gating._SoftmaxFit``), each evaluation
  a pass, so a line search's trial costs a pass and a fresh Hessian one
  more. The constant gate needs only the responsibilities' sums;
- the initial partition: replayed random draws, or k-means run over the
  chunks.

Nothing of size n x K outlives a task: a chunk recomputes its
responsibilities from the model that produced them (`Model`) or from the
initial partition (`RandomStart`, `ClusterStart`) whenever a pass needs
them. The moments of blocks are merged by the pairwise update of Chan,
Golub and LeVeque (1979), as ``_linear.py`` merges its blocks, so with
least-squares experts the result equals the in-memory fit up to rounding.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.cluster import kmeans_plusplus
from sklearn.linear_model import LinearRegression, Ridge

from mixexp import _em, _softmax
from mixexp._convergence import objective_plateaued
from mixexp._family import check_target_counts
from mixexp._glm_steps import STEP_LENGTHS, NewtonExpert, newton_kind
from mixexp._likelihood import (
    MEAN_FLOOR,
    NOISE_VARIANCE_FLOOR,
    CategoricalLikelihood,
    GammaLikelihood,
    GaussianLikelihood,
    PoissonLikelihood,
    gamma_dispersion,
    noise_floor_of,
)
from mixexp._linear import least_squares_from_moments, weighted_moments
from mixexp._mstep import _NEGLIGIBLE_RESPONSIBILITY
from mixexp._penalty import expert_priors
from mixexp._run import Acceleration, accelerable
from mixexp._utils import MAX_SEED, single_threaded_blas
from mixexp.gating import (
    ConstantGate,
    SoftmaxGate,
    _ConstantFit,
    _SoftmaxFit,
    _standardisation_of,
)

__all__ = ["is_dask_collection", "lazy_rows", "standard_deviation"]


def is_dask_collection(data):
    """Whether `data` is a dask collection (array, DataFrame, Series)."""
    return type(data).__module__.partition(".")[0] in ("dask", "dask_expr")


# ----------------------------------------------------------------------
# Checks of the data and the settings.


def check_chunked_data(X, y, sample_weight):
    """X, y and the weights as dask arrays of the same row chunks.

    A NumPy `y` or `sample_weight` (an n-vector, small beside X) is split
    into X's row chunks; a dask one must already have them.
    """
    import dask.array as da

    arrays = {"X": X, "y": y, "sample_weight": sample_weight}
    for name, value in arrays.items():
        if (
            value is not None
            and is_dask_collection(value)
            and not hasattr(value, "chunks")
        ):
            raise TypeError(
                f"{name} is a {type(value).__name__}; fitting over chunks takes dask "
                f"arrays. Convert it with {name}.to_dask_array(lengths=True)."
            )
    if not is_dask_collection(X):
        raise TypeError(
            "y is a dask array but X is not: pass X as a dask array chunked along "
            "its rows (dask.array.from_array(X, chunks=(rows, -1))), or y as a "
            "NumPy array."
        )
    if X.ndim != 2:
        raise ValueError(
            f"X must be 2-dimensional; got a dask array of shape {X.shape}."
        )
    if any(np.isnan(size) for size in X.chunks[0]):
        raise ValueError(
            "X's row chunks have unknown sizes; compute them first with "
            "X.compute_chunk_sizes()."
        )
    if len(X.chunks[1]) > 1:
        raise ValueError(
            f"X is chunked along its columns (chunks {X.chunks[1]}); every chunk "
            "must hold whole rows. Rechunk it with X.rechunk({1: -1})."
        )
    rows = X.chunks[0]
    checked = [X]
    for name, value, ndims in (
        ("y", y, (1, 2)),
        ("sample_weight", sample_weight, (1,)),
    ):
        if value is None:
            checked.append(None)
            continue
        if not is_dask_collection(value):
            value = np.asarray(value)
        if value.ndim not in ndims or value.shape[0] != X.shape[0]:
            raise ValueError(
                f"{name} must have one entry per row of X ({X.shape[0]}); got "
                f"shape {value.shape}."
            )
        if not is_dask_collection(value):
            value = da.from_array(value, chunks=(rows, *value.shape[1:]))
        if value.chunks[0] != rows:
            raise ValueError(
                f"{name}'s row chunks differ from X's: every chunk of X needs the "
                f"{name} of its own rows. Rechunk it with "
                f"{name}.rechunk({{0: X.chunks[0]}})."
            )
        if value.ndim == 2 and len(value.chunks[1]) > 1:
            value = value.rechunk({1: -1})
        checked.append(value)
    return checked


def check_chunked_settings(estimator, templates, gate):
    """Raise for what a fit over chunks cannot do, naming the fix.

    Returns how the experts are stepped: "moments" (solved from their
    weighted moments) or "newton" (one Newton step per iteration).
    """
    classifier = not hasattr(estimator, "covariance_type")
    kinds = []
    for k, template in enumerate(templates):
        newton = newton_kind(template)
        if classifier:
            kind = "newton" if newton == "logistic" else None
        elif _sums_over_rows(template):
            kind = "moments"
        else:
            kind = "newton" if newton in ("poisson", "gamma") else None
        if kind is None:
            which = (
                "expert" if not isinstance(estimator.expert, list) else f"expert[{k}]"
            )
            supported = (
                "LogisticRegression experts (an L2 or no penalty, any solver but "
                "liblinear)"
                if classifier
                else "LinearRegression or Ridge experts (with a scalar alpha and "
                "positive=False), or PoissonRegressor, GammaRegressor or a log-link "
                "TweedieRegressor"
            )
            raise ValueError(
                f"{which} ({type(template).__name__}) is fitted on all its rows at "
                "once: its M-step is not a sum over rows, so it cannot be fitted "
                f"over the chunks of a dask array. Use {supported}, or pass NumPy "
                "arrays (X.compute() if they fit in memory)."
            )
        kinds.append(kind)
    if len(set(kinds)) > 1:
        raise ValueError(
            "The experts mix least-squares experts (LinearRegression, Ridge) and "
            "generalised linear ones; over the chunks of a dask array one mixture "
            "steps its experts one way. Use experts of one kind."
        )
    if not isinstance(gate, SoftmaxGate | ConstantGate):
        raise ValueError(
            f"gate={estimator.gate!r} cannot be fitted over the chunks of a dask "
            "array; use gate='softmax' or gate='constant', or pass NumPy arrays."
        )
    unsupported = {
        "training": (estimator.training != "em", "'em'"),
        "cv": (estimator.cv is not None, "None"),
        "capacity_factor": (estimator.capacity_factor is not None, "None"),
        "min_expert_load": (estimator.min_expert_load is not None, "None"),
        "feature_groups": (estimator.feature_groups is not None, "None"),
        "warm_start": (bool(estimator.warm_start), "False"),
    }
    for param, (given, default) in unsupported.items():
        if given:
            raise ValueError(
                f"{param}={getattr(estimator, param)!r} is not supported on dask "
                f"arrays; set {param}={default}, or pass NumPy arrays."
            )
    if not (
        isinstance(estimator.partition, str)
        and estimator.partition in ("random", "kmeans")
    ):
        raise ValueError(
            f"partition={estimator.partition!r} is not supported on dask arrays; "
            "use 'kmeans' (k-means run over the chunks) or 'random'."
        )
    return kinds[0]


def _sums_over_rows(template):
    """Whether the expert's fit comes from its weighted moments alone."""
    if type(template) is LinearRegression:
        return not template.positive
    if type(template) is Ridge:
        return np.ndim(template.alpha) == 0 and not template.positive
    return False


# ----------------------------------------------------------------------
# Passes.


class ChunkedRows:
    """The rows of a fit as aligned delayed blocks of X, y and the weights.

    `map_reduce` runs a function on every block, on the active dask
    scheduler, and sums (or merges) the results pairwise.
    """

    def __init__(self, X, y, sample_weight, classes=None):
        self.classes = classes  # a classifier's labels: y is encoded by them
        self.n_samples, self.n_features = X.shape
        self.sizes = X.chunks[0]
        self.y_ndim = y.ndim
        self.n_targets = 1 if y.ndim == 1 else y.shape[1]
        weights = (
            [None] * len(self.sizes)
            if sample_weight is None
            else list(sample_weight.to_delayed(optimize_graph=False).ravel())
        )
        self.blocks = list(
            zip(
                # Unoptimised, each keeps its own keys: the tasks of a y
                # computed from X then share X's chunks instead of fusing
                # their own copy of X's generation (which doubled the work
                # of every pass, benchmarks/out_of_core.py).
                X.to_delayed(optimize_graph=False).ravel(),
                y.to_delayed(optimize_graph=False).ravel(),
                weights,
                strict=True,
            )
        )

    def map_reduce(self, function, *args):
        """``sum over blocks i of function(X_i, y_i, w_i, i, *args)``."""
        import dask

        shared = [dask.delayed(arg, pure=False, traverse=False) for arg in args]
        run = dask.delayed(_run_block, pure=True)
        classes = dask.delayed(self.classes, pure=False, traverse=False)
        parts = [
            run(function, X, y, w, index, classes, *shared)
            for index, (X, y, w) in enumerate(self.blocks)
        ]
        combine = dask.delayed(add_results, pure=True)
        while len(parts) > 1:
            pairs = [
                combine(a, b) for a, b in zip(parts[::2], parts[1::2], strict=False)
            ]
            parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
        return dask.compute(parts[0])[0]


def _run_block(function, X, y, w, index, classes, *args):
    X = np.asarray(X, dtype=np.float64)
    if classes is None:
        y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)
    else:  # encoded as the classifier's LabelEncoder encodes them
        y = np.searchsorted(classes, np.asarray(y))
    w = np.ones(X.shape[0]) if w is None else np.asarray(w, dtype=np.float64)
    with single_threaded_blas:
        return function(X, y, w, index, classes, *args)


@dataclass
class Moments:
    """Weighted moments about the weighted mean, merged pairwise.

    ``scatter`` (..., p, p), ``total`` (...,), ``mean`` (..., p): several
    sets at once (one per expert) along the leading axes.
    """

    scatter: np.ndarray
    total: np.ndarray
    mean: np.ndarray

    def merge(self, other):
        total = self.total + other.total
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(total > 0, other.total / total, 0.0)
            product = np.where(total > 0, self.total * other.total / total, 0.0)
        delta = other.mean - self.mean
        outer = delta[..., :, np.newaxis] * delta[..., np.newaxis, :]
        return Moments(
            self.scatter + other.scatter + product[..., np.newaxis, np.newaxis] * outer,
            total,
            self.mean + share[..., np.newaxis] * delta,
        )


def add_results(a, b):
    """Sum two blocks' results: dicts, tuples and arrays entry by entry."""
    if isinstance(a, dict):
        return {key: add_results(a[key], b[key]) for key in a}
    if isinstance(a, tuple | list):
        return type(a)(add_results(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Moments | Rows):
        return a.merge(b)
    if a is None:
        return None
    return a + b


def _column_moments(X, w):
    total = w.sum()
    mean = w @ X / total if total > 0 else np.zeros(X.shape[1])
    spread = w @ (X - mean) ** 2
    return Moments(np.diag(spread), np.asarray(total), mean)


def _data_summary(X, y, w, index, classes, gate_columns):
    """Checks and column moments of a block: the fit's first pass."""
    y = np.reshape(y, (X.shape[0], -1)).astype(np.float64)
    finite = bool(np.isfinite(X).all() and np.isfinite(y).all())
    columns = _column_moments(X, w)
    return {
        "not_finite": 0 if finite else 1,
        "negative_weights": int(np.count_nonzero(~(w >= 0))),
        "negative_y": int(np.count_nonzero(y < 0)),
        "not_positive_y": int(np.count_nonzero(y <= 0)),
        "gate": columns
        if gate_columns is None
        else _column_moments(X[:, gate_columns], w),
        "y": _column_moments(y, w),
        "X": columns,
    }


# ----------------------------------------------------------------------
# Where a block's responsibilities come from.


@dataclass
class RandomStart:
    """``partition="random"``: flat Dirichlet rows, softened.

    Each block's generator state is the one the in-memory partition's
    generator has reached at the block's first row, so the rows equal the
    in-memory draws.
    """

    states: list
    n_experts: int

    def responsibilities(self, X, y, index):
        rng = np.random.RandomState()
        rng.set_state(self.states[index])
        resp = rng.dirichlet(np.ones(self.n_experts), size=X.shape[0])
        return np.asfortranarray(_em.soften(resp)), None


@dataclass
class ClusterStart:
    """k-means clusters (of the standardised rows), one-hot and softened."""

    centres: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def responsibilities(self, X, y, index):
        labels = _nearest(self.centres, (X - self.mean) / self.scale)
        resp = _em.one_hot(labels, self.centres.shape[0])
        return np.asfortranarray(_em.soften(resp)), None


@dataclass
class Model:
    """A fitted mixture's parts: its E-step gives the responsibilities."""

    experts: list
    scale: object
    gate: object  # fitted
    family: object
    outputs_of: object
    gate_columns: object

    def log_gate(self, X):
        gate_X = X if self.gate_columns is None else X[:, self.gate_columns]
        return self.gate._predict_log_proba(gate_X)

    def responsibilities(self, X, y, index):
        outputs = self.outputs_of(self.experts, [X] * len(self.experts))
        log_lik = self.family.log_likelihood(y, outputs, self.scale)
        return _em.posterior(self.log_gate(X), log_lik, overwrite=True)


def random_start(sizes, n_experts, rng):
    """`RandomStart` whose draws equal ``rng.dirichlet(ones, size=n)``'s.

    Drawn once on the client, block by block (one block's rows at a time),
    to record where each block starts in the generator's stream.
    """
    states = []
    alpha = np.ones(n_experts)
    for size in sizes:
        states.append(rng.get_state())
        rng.dirichlet(alpha, size=size)
    return RandomStart(states, n_experts)


def cluster_start(data, summary, n_experts, rng):
    """`ClusterStart` from k-means run over the chunks.

    Seeded by k-means++ on a sample of rows drawn from every chunk (a few
    hundred per cluster: the only rows that reach the client), then Lloyd's
    iterations, each a pass: every chunk sends the weighted sums of its
    rows per nearest centre.
    """
    moments = summary["X"]
    mean = moments.mean
    scale = np.sqrt(np.diagonal(moments.scatter) / moments.total)
    scale[~(scale > 1e-12 * np.maximum(np.abs(mean), 1.0))] = 1.0
    seed = rng.randint(np.iinfo(np.int32).max)
    share = min(1.0, _KMEANS_SAMPLE_PER_CLUSTER * n_experts / data.n_samples)
    sample = data.map_reduce(_block_sample, mean, scale, share, seed)
    if sample.rows.shape[0] < n_experts:
        sample = Rows(
            *(
                np.resize(part, (n_experts, *part.shape[1:]))
                for part in (sample.rows, sample.weights)
            )
        )
    with single_threaded_blas:
        centres, _ = kmeans_plusplus(
            sample.rows,
            n_experts,
            sample_weight=sample.weights,
            random_state=seed,
        )
    for _ in range(_KMEANS_MAX_PASSES):
        sums, counts = data.map_reduce(_block_cluster_sums, mean, scale, centres)
        moved = np.where(
            counts[:, np.newaxis] > 0,
            sums / np.maximum(counts, 1e-300)[:, np.newaxis],
            centres,
        )
        shift = np.sum((moved - centres) ** 2)
        centres = moved
        if shift <= _KMEANS_TOL * n_experts:
            break
    return ClusterStart(centres, mean, scale)


# k-means over chunks: rows sampled per cluster to seed it, its passes at
# most, and the total squared shift of the (standardised) centres per
# cluster below which it stops.
_KMEANS_SAMPLE_PER_CLUSTER = 300
_KMEANS_MAX_PASSES = 20
_KMEANS_TOL = 1e-6


@dataclass
class Rows:
    """Rows gathered from blocks (a sample), merged by stacking."""

    rows: np.ndarray
    weights: np.ndarray

    def merge(self, other):
        return Rows(
            np.vstack([self.rows, other.rows]),
            np.concatenate([self.weights, other.weights]),
        )


def _block_sample(X, y, w, index, classes, mean, scale, share, seed):
    rng = np.random.RandomState((seed + index) % (2**32))
    picked = np.flatnonzero((rng.rand(X.shape[0]) < share) & (w > 0))
    return Rows((X[picked] - mean) / scale, w[picked])


def _nearest(centres, Z):
    distances = (
        np.einsum("ij,ij->i", Z, Z)[:, np.newaxis]
        - 2.0 * Z @ centres.T
        + np.einsum("ij,ij->i", centres, centres)
    )
    return np.argmin(distances, axis=1)


def _block_cluster_sums(X, y, w, index, classes, mean, scale, centres):
    Z = (X - mean) / scale
    labels = _nearest(centres, Z)
    onehot = np.zeros((centres.shape[0], X.shape[0]))
    onehot[labels, np.arange(X.shape[0])] = w
    return onehot @ Z, onehot.sum(axis=1)


# ----------------------------------------------------------------------
# The statistics of an M-step.


@dataclass
class Targets:
    """What one E-step gives the M-step: its source and the sums over rows.

    ``source`` recomputes the responsibilities of any block; ``load`` sums
    each expert's weights ``w_i r_ik``; ``log_likelihood`` (a Model's E-step
    only) is the weighted sum of log p(y | x); ``gate_start`` the softmax
    gate's loss and gradient at its current parameters. Least-squares
    experts get their ``moments`` (a `Moments` of shape (K, d + m));
    generalised linear ones their weighted target sums and, once they have
    parameters, the sums of their objective's value, gradient and Hessian
    there (``newton``).
    """

    source: object
    load: np.ndarray
    moments: Moments = None
    target_sums: np.ndarray = None
    newton: list = None
    log_likelihood: float = None
    gate_start: tuple = None


def _block_targets(X, y, w, index, classes, source, experts_at, gate_at):
    """A block's share of `Targets` (see `targets_of`)."""
    resp, log_prob = source.responsibilities(X, y, index)
    n_experts = resp.shape[1]
    result = {
        "load": w @ resp,
        "log_likelihood": None if log_prob is None else float(w @ log_prob),
        "moments": None,
        "target_sums": None,
        "newton": None,
        "gate_start": None,
    }
    kind, state = experts_at
    if kind == "moments":
        result["moments"] = _block_moments(X, y, w, resp, state)
    else:
        specs, thetas = state
        weighted = resp * w[:, np.newaxis]
        if classes is None:
            result["target_sums"] = weighted.T @ y
        else:
            result["target_sums"] = np.stack(
                [np.bincount(y, weighted[:, k], len(classes)) for k in range(n_experts)]
            )
        if thetas is not None:
            result["newton"] = [
                spec.block_sums(theta, X, y, weighted[:, k])
                for k, (spec, theta) in enumerate(zip(specs, thetas, strict=True))
            ]
    if gate_at is not None:
        flat, mean_, scale, total_weight, gate_columns = gate_at
        gate_X = X if gate_columns is None else X[:, gate_columns]
        result["gate_start"] = _softmax.softmax_objective(
            flat,
            gate_X,
            mean_,
            scale,
            np.ascontiguousarray(resp.T),
            w / total_weight,
            0.0,
        )
    return result


def _block_moments(X, y, w, resp, intercepts):
    """Each expert's weighted moments on a block, as the M-step weighs rows."""
    n_experts = resp.shape[1]
    negligible = _NEGLIGIBLE_RESPONSIBILITY * w
    weights, rows = [], []
    for k in range(n_experts):
        share = resp[:, k]
        kept = np.flatnonzero(w * share > negligible)
        weights.append(share)
        rows.append(None if kept.size == X.shape[0] else kept)
    moments = weighted_moments([X] * n_experts, y, weights, rows, intercepts, w)
    scatter, total, mean = (np.stack(part) for part in zip(*moments, strict=True))
    return Moments(scatter, total, mean)


def targets_of(data, source, experts_at, gate_at=None):
    """The `Targets` of `source`'s responsibilities: one pass."""
    sums = data.map_reduce(_block_targets, source, experts_at, gate_at)
    return Targets(source=source, **sums)


def _block_newton_trials(X, y, w, index, classes, source, specs, thetas, steps, floor):
    """Each generalised linear expert's objective sums along its step."""
    resp, _ = source.responsibilities(X, y, index)
    trials = []
    for k, (spec, theta, step) in enumerate(zip(specs, thetas, steps, strict=True)):
        s = resp[:, k] * w
        losses = spec.block_trials(theta, step, X, y, s)
        deviances = None
        if spec.kind == "gamma":
            deviances = spec.block_deviances(theta, step, X, y, s, floor)
        trials.append((losses, deviances))
    return trials


def _block_gate_loss(X, y, w, index, classes, source, flat, gate_at, gradient):
    resp, _ = source.responsibilities(X, y, index)
    mean, scale, total_weight, gate_columns = gate_at
    gate_X = X if gate_columns is None else X[:, gate_columns]
    return _softmax.softmax_objective(
        flat,
        gate_X,
        mean,
        scale,
        np.ascontiguousarray(resp.T),
        w / total_weight,
        0.0,
        None,
        gradient,
    )


def _block_gate_hessian(X, y, w, index, classes, flat, gate_at, n_experts, sample):
    """The block's part of the gate's Hessian over the global sample of rows
    (`_softmax.hessian_sample`), and the sample's weight in the block."""
    mean, scale, total_weight, gate_columns = gate_at
    offsets, step = sample
    rows = slice(-offsets[index] % step, None, step)
    gate_X = (X if gate_columns is None else X[:, gate_columns])[rows]
    weights = w[rows] / total_weight
    if weights.size == 0:  # a block shorter than the step, between samples
        size = (gate_X.shape[1] + 1) * n_experts
        return np.zeros((size, size)), 0.0
    probaT = _softmax.softmax_probaT(flat, gate_X, mean, scale, n_experts)
    hessian = _softmax.softmax_hessian(gate_X, mean, scale, probaT, weights, 0.0)
    return hessian, weights.sum()


# ----------------------------------------------------------------------
# The gates, fitted over chunks.


class ChunkedSoftmaxFit(_SoftmaxFit):
    """A :class:`SoftmaxGate` fitted over chunks, as ``_SoftmaxFit`` in memory.

    The solver is the in-memory one (its Newton steps, kept curvature and
    evidence updates); only its evaluations are passes: the loss and
    gradient on a `Targets`' responsibilities, and the Hessian. The
    truncated Newton steps of many experts would cost a pass per
    conjugate-gradient product, so the exact steps are taken at any size.
    """

    def __init__(self, gate, data, summary, n_experts, gate_columns):
        # The parent's __init__ standardises an in-memory X: set its state
        # from the first pass's moments instead.
        moments = summary["gate"]
        self.gate = gate
        self.X = self.weights = None
        self.data = data
        self.n_experts = n_experts
        self.reuse, self.warn = True, False
        self.total = float(moments.total)
        self.mean, self.scale = _standardisation_of(
            moments.mean, np.diagonal(moments.scatter) / self.total
        )
        self.gate_columns = gate_columns
        self.params = None
        self.alpha = self.gamma = None
        self.penalty = 0.0
        self.n_iter = 0
        self._curvature = self._curvature_penalty = self._data_hessian = None
        self._data_hessian_at = None
        self._evaluated = None
        self.truncated = False

    @property
    def gate_at(self):
        return self.mean, self.scale, self.total, self.gate_columns

    def start_at(self):
        """Where the next M-step's gate steps start (for `targets_of`)."""
        if self.params is None:
            return None
        return (self.params.ravel(), *self.gate_at)

    def _objective_function(self, targets, scaled, penalty_scale):
        known = targets.gate_start
        start = None if self.params is None else self.params.ravel()

        def objective(flat, gradient=True):
            if known is not None and start is not None and np.array_equal(flat, start):
                loss, grad = known
            else:
                loss, grad = self.data.map_reduce(
                    _block_gate_loss, targets.source, flat, self.gate_at, gradient
                )
            coef = flat.reshape(-1, self.n_experts)[1:]
            loss = loss + 0.5 * penalty_scale * np.sum(coef**2)
            if grad is not None:
                grad = grad.copy()
                grad.reshape(-1, self.n_experts)[1:] += penalty_scale * coef
            return loss, grad

        return objective

    def _hessian_at(self, flat, penalty_scale):
        # The rows of the in-memory fit's sample, by their global index.
        step = _softmax.hessian_sample(self.data.n_samples).step
        offsets = np.concatenate([[0], np.cumsum(self.data.sizes)[:-1]])
        hessian, total = self.data.map_reduce(
            _block_gate_hessian, flat, self.gate_at, self.n_experts, (offsets, step)
        )
        if not total > 0:  # no weight in the sample: all rows, then
            hessian, total = self.data.map_reduce(
                _block_gate_hessian,
                flat,
                self.gate_at,
                self.n_experts,
                ([0] * len(offsets), 1),
            )
        self._data_hessian, self._data_hessian_at = hessian / total, flat.copy()
        return _softmax.add_penalty(self._data_hessian, penalty_scale, self.n_experts)


class ChunkedConstantFit(_ConstantFit):
    """A :class:`ConstantGate` fitted over chunks: the shares of `load`."""

    def __init__(self, gate, data, summary, n_experts, gate_columns):
        self.gate = gate
        self.total = float(summary["gate"].total)
        self.n_samples, self.n_features = data.n_samples, data.n_features
        self.n_experts = n_experts
        self.proportions = None

    def start_at(self):
        return None

    def improve(self, targets, exact):
        self.proportions = targets.load / self.total


# ----------------------------------------------------------------------
# One EM run.


@dataclass
class ChunkedSetup:
    """A fit over chunks' data and settings (the estimator's, checked)."""

    data: ChunkedRows
    summary: dict
    templates: list
    kind: str  # "moments" or "newton": how the experts are stepped
    family: object
    outputs_of: object
    gate_columns: object
    partition: object
    max_iter: int
    tol: float
    verbose: int

    @property
    def total(self):
        return float(self.summary["gate"].total)


def summarise(data, gate_columns):
    """The first pass: checks, and the moments that set scales and floors."""
    summary = data.map_reduce(_data_summary, gate_columns)
    if summary["not_finite"]:
        raise ValueError(
            "X or y contains NaN or infinity in some chunk; a fit on dask arrays "
            "takes finite values only. Impute them first (for example "
            "dask_ml.impute.SimpleImputer)."
        )
    if summary["negative_weights"]:
        raise ValueError("sample_weight must be non-negative; some weights are not.")
    if not float(summary["gate"].total) > 0:
        raise ValueError("sample_weight sums to zero: no row would count in the fit.")
    return summary


def chunked_family(name, summary, covariance_type):
    """The likelihood family, configured from the targets' chunked moments
    as the in-memory fit configures it from the targets."""
    if name == "categorical":
        return CategoricalLikelihood()
    check_target_counts(name, summary["negative_y"], summary["not_positive_y"])
    moments = summary["y"]
    mean = moments.mean
    var = np.diagonal(moments.scatter) / moments.total
    if name == "gaussian":
        return GaussianLikelihood(noise_floor_of(mean, var), covariance_type)
    mean_floor = MEAN_FLOOR * max(float(mean.mean()), 1.0)
    if name == "poisson":
        return PoissonLikelihood(mean_floor)
    relative = np.where(var > 0, var / mean**2, 1.0)
    return GammaLikelihood(NOISE_VARIANCE_FLOOR * relative, mean_floor)


@dataclass
class _ExpertState:
    """The experts between M-steps: generalised linear ones keep their
    parameters (least-squares ones are solved afresh each time)."""

    specs: list = None
    thetas: list = None

    def at(self, kind):
        """What `_block_targets` needs of the experts."""
        if kind == "moments":
            return kind, self.specs
        return kind, (self.specs, self.thetas)


def chunked_run(setup, gate_template, seed):
    """One EM run over chunks from a fresh initial partition."""
    data, templates = setup.data, setup.templates
    n_experts = len(templates)
    rng = np.random.RandomState(seed)
    if isinstance(setup.partition, str) and setup.partition == "random":
        source = random_start(data.sizes, n_experts, rng)
    else:
        source = cluster_start(data, setup.summary, n_experts, rng)
    fit_type = (
        ChunkedSoftmaxFit
        if isinstance(gate_template, SoftmaxGate)
        else ChunkedConstantFit
    )
    gate = fit_type(
        clone(gate_template), data, setup.summary, n_experts, setup.gate_columns
    )
    rng.randint(MAX_SEED, size=n_experts)  # the experts' seeds, as in memory
    total = setup.total
    n_classes = 0 if data.classes is None else len(data.classes)
    if setup.kind == "moments":
        state = _ExpertState(np.array([t.fit_intercept for t in templates]))
    else:
        state = _ExpertState([NewtonExpert.of(t, total, n_classes) for t in templates])
    targets = targets_of(data, source, state.at(setup.kind), gate.start_at())
    history, converged, reseeded_at = [], False, 0
    accelerated = _acceleration(setup, gate)
    for n_iter in range(1, setup.max_iter + 1):
        mstep_load = targets.load
        experts, scale, expert_penalty = _experts_step(setup, targets, state)
        with single_threaded_blas:
            gate.improve(targets, exact=False)
        model = Model(
            experts,
            scale,
            gate.fitted(),
            setup.family,
            setup.outputs_of,
            setup.gate_columns,
        )
        targets = targets_of(data, model, state.at(setup.kind), gate.start_at())
        penalty = gate.penalty + (expert_penalty or 0.0)
        objective = (targets.log_likelihood - penalty) / total
        if accelerated is not None and accelerated.squarem.add(
            accelerated.point(gate, experts, scale)
        ):
            em_point = experts, scale, expert_penalty
            jump = _jump(setup, gate, accelerated, em_point, state, objective)
            if jump is not None:
                experts, scale, model, targets, objective = jump
        previous = history[-1] if history else None
        history.append(objective)
        if setup.verbose >= 2:
            change = np.nan if previous is None else objective - previous
            print(f"  Iteration {n_iter}\t objective change {change:.5g}")
        converged = (
            previous is not None and abs(objective - previous) < setup.tol
        ) or (
            # Not every expert's penalty is known (see _run.py): the
            # objective may wander; stop once it stops rising.
            expert_penalty is None
            and objective_plateaued(history[reseeded_at:], setup.tol)
        )
        if converged:
            break
    return ChunkedResult(
        experts=experts,
        gate=model.gate,
        scale=scale,
        history=history,
        n_iter=n_iter,
        converged=converged,
        expert_load=mstep_load / total,
        n_reseeds=np.zeros(n_experts, dtype=int),
        load_balance=_load_balance(data, model),
    )


def _acceleration(setup, gate):
    """SQUAREM's state when the in-memory fit would be accelerated (see
    ``_run._accelerates``; over chunks EM is soft, without ``cv`` or a
    capacity), so that both take the same steps; else None."""
    if not (
        setup.kind == "moments"
        and setup.data.y_ndim == 1
        and accelerable(
            setup.templates, setup.family, gate, setup.summary["gate"].mean.shape[0]
        )
    ):
        return None
    y, X = setup.summary["y"], setup.summary["X"]
    unit = _standardisation_of(X.mean, np.diagonal(X.scatter) / float(X.total))
    return Acceleration(
        float(y.scatter[0, 0] / y.total),
        [unit] * len(setup.templates),
        setup.family.floor,
    )


def _jump(setup, gate, accelerated, em_point, state, em_objective):
    """The pass at SQUAREM's jump, kept if it scores at least EM's point
    (as ``_run._jump``): the experts, scale, model, targets and objective
    there, or None (the gate moved back; EM's own pass stands)."""
    experts, scale, expert_penalty = em_point
    squarem = accelerated.squarem
    em_params = gate.params
    for step in squarem.steps():
        moved_experts, moved_scale = accelerated.move(
            squarem.point_at(step), gate, experts, scale
        )
        model = Model(
            moved_experts,
            moved_scale,
            gate.fitted(),
            setup.family,
            setup.outputs_of,
            setup.gate_columns,
        )
        targets = targets_of(setup.data, model, state.at(setup.kind), gate.start_at())
        penalty = gate.penalty + (expert_penalty or 0.0)
        objective = (targets.log_likelihood - penalty) / setup.total
        if objective >= em_objective:
            squarem.settle(step)
            return moved_experts, moved_scale, model, targets, objective
    gate.move_to(em_params)
    squarem.settle(None)
    return None


def _load_balance(data, model):
    """`routing.load_balance` of the fitted gate on the training rows: a
    pass of the gate alone, once the fit has ended."""
    dispatched, gate_sum = data.map_reduce(_block_gate_usage, model)
    n_experts = gate_sum.shape[0]
    return n_experts * float(
        (dispatched / data.n_samples) @ (gate_sum / data.n_samples)
    )


def _block_gate_usage(X, y, w, index, classes, model):
    proba = np.exp(model.log_gate(X))
    dispatched = np.bincount(np.argmax(proba, axis=1), minlength=proba.shape[1])
    return dispatched.astype(float), proba.sum(axis=0)


@dataclass
class ChunkedResult:
    experts: list
    gate: object
    scale: object
    history: list
    n_iter: int
    converged: bool
    expert_load: np.ndarray
    load_balance: float
    checkpoint: object = None  # no warm start continues a fit over chunks
    n_reseeds: np.ndarray = None

    @property
    def lower_bound(self):
        return self.history[-1]


def _experts_step(setup, targets, state):
    """The experts' M-step and the family's scale, from the sums."""
    if setup.kind == "moments":
        experts, scale = _least_squares_step(setup, targets)
    else:
        experts, scale = _newton_step(setup, targets, state)
    family = setup.family
    priors = expert_priors(
        experts, setup.templates, targets.load, setup.total, family.name
    )
    if scale is not None and family.name == "gaussian":
        scale = family.scale_from_scatter(*scale, priors)
    return experts, scale, family.penalty(priors, scale)


def _least_squares_step(setup, targets):
    """Least-squares experts solved from their moments, and their residual
    scatter (for the Gaussian scale)."""
    templates = setup.templates
    moments = targets.moments
    # Ridge's weights sum to the mixture's total (see _penalty.py): its
    # penalty, against the responsibilities' moments, is alpha W_k / W.
    ridge = np.array(
        [
            t.alpha * targets.load[k] / setup.total if type(t) is Ridge else 0.0
            for k, t in enumerate(templates)
        ]
    )
    experts, residual = least_squares_from_moments(
        templates,
        (moments.scatter, moments.total, moments.mean),
        setup.data.n_targets,
        setup.data.y_ndim,
        ridge,
    )
    return experts, (moments.total.copy(), residual)


def _newton_step(setup, targets, state):
    """Generalised linear experts: one checked Newton step each (the first
    M-step sets their intercepts alone), and the Gamma dispersion."""
    data, specs = setup.data, state.specs
    n_features = data.n_features
    load = targets.load
    if state.thetas is None:
        thetas = [
            spec.start(sums, total, n_features)
            for spec, sums, total in zip(specs, targets.target_sums, load, strict=True)
        ]
        steps = [np.zeros_like(theta) for theta in thetas]
        slopes = None
    else:
        thetas = state.thetas
        moves = [
            spec.direction(theta, grad, hessian, total)
            for spec, theta, (_, grad, hessian), total in zip(
                specs, thetas, targets.newton, load, strict=True
            )
        ]
        steps = [step for step, _ in moves]
        slopes = [slope for _, slope in moves]
    gamma = setup.family.name == "gamma"
    trials = None
    if slopes is not None or gamma:
        floor = getattr(setup.family, "mean_floor", None)
        trials = data.map_reduce(
            _block_newton_trials, targets.source, specs, thetas, steps, floor
        )
    if slopes is not None:
        chosen = [
            spec.chosen(theta, step, slope, value, losses, total)
            for spec, theta, step, slope, (value, _, _), (losses, _), total in zip(
                specs, thetas, steps, slopes, targets.newton, trials, load, strict=True
            )
        ]
    else:  # the intercept-only start: no step
        chosen = [(theta, 0.0) for theta in thetas]
    state.thetas = [theta for theta, _ in chosen]
    experts = [
        spec.fitted(template, theta, n_features, _encoded(data.classes))
        for spec, template, theta in zip(
            specs, setup.templates, state.thetas, strict=True
        )
    ]
    scale = None
    if gamma:
        deviance = np.zeros((len(specs), 1))
        for k, ((_, deviances), (_, length)) in enumerate(
            zip(trials, chosen, strict=True)
        ):
            # Deviances at a zero-length step (the expert kept), then along it.
            at = 0 if length == 0.0 else 1 + STEP_LENGTHS.index(length)
            deviance[k] = deviances[at] / load[k] if load[k] > 0 else 0.0
        scale = np.maximum(gamma_dispersion(deviance), setup.family.floor)
    return experts, scale


def _encoded(classes):
    """A classifier's experts see the labels encoded (as in memory)."""
    return None if classes is None else np.arange(len(classes))


# ----------------------------------------------------------------------
# Prediction.


def lazy_rows(method, X, n_features, n_columns=None, dtype=np.float64, y=None):
    """``method`` on each row chunk of dask array `X`, as a lazy dask array.

    `n_columns` None gives a vector (one value per row), else an
    (n, n_columns) array. With `y`, ``method(X_chunk, y_chunk)``.
    """
    import dask.array as da

    if not hasattr(X, "chunks") or X.ndim != 2:
        raise ValueError(
            f"X must be a 2-dimensional dask array; got {type(X).__name__} of "
            f"shape {getattr(X, 'shape', None)}."
        )
    if X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but the mixture was fitted with "
            f"{n_features}."
        )
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    if y is not None:  # a vector per row: blockwise pairs the row chunks
        y = check_chunked_data(X, y, None)[1]
        y_index = "i" if y.ndim == 1 else "ik"
        return da.blockwise(
            method, "i", X, "ij", y, y_index, dtype=dtype, concatenate=True
        )
    drop = {"drop_axis": 1} if n_columns is None else {}
    chunks = None if n_columns is None else (X.chunks[0], (n_columns,))
    return da.map_blocks(method, X, chunks=chunks, dtype=dtype, **drop)


def standard_deviation(predict, X):
    """The second output of ``predict(X, return_std=True)``."""
    return predict(X, return_std=True)[1]
