"""Small helpers shared by the estimators and the gates."""

import contextlib
import functools
import threading

import numpy as np
from joblib import effective_n_jobs
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import ThreadpoolController

# Largest seed drawn for a child estimator or an EM run.
MAX_SEED = np.iinfo(np.int32).max


# Arguments of exp are floored here: numpy's vectorised exp takes a slow
# path, element by element, for arguments whose result underflows (below
# about -708), three times slower where the result is zero and fifty where
# it is subnormal (benchmarks/kernels.py, item 10). Sharp gates and
# responsibilities have many such arguments; where none underflow, the
# extra pass (the minimum) costs about 40%. e^-707 (about 1e-307) is a
# normal number, and as good as zero beside the ones these arrays sum to;
# an argument of -inf (a zero probability, as a gate may give) keeps its
# exact zero.
_EXP_FLOOR = -707.0


def exp_floored(x, out=None):
    """``exp(max(x, -707))``: exp of log-probabilities, at vectorised speed.

    Arguments of -inf anywhere in `x` turn the floor off: their zeros stay
    exact. `out` (may be `x` itself) receives the result.
    """
    lowest = x.min(initial=0.0)
    if lowest >= _EXP_FLOOR or lowest == -np.inf:
        return np.exp(x, out=out)
    floored = np.maximum(x, _EXP_FLOOR, out=out)
    return np.exp(floored, out=floored)


def pair_products(zT, out):
    """The products ``z_a z_b`` (a <= b) of the rows of `zT`, into `out`.

    `zT` is (width, m), columns as rows; `out` is (width (width + 1) / 2, m)
    and receives them in the order of ``np.triu_indices(width)``, one slice
    of rows at a time. One matrix product of row weights with these gives
    every weighted Gram matrix at once (`symmetric_from_pairs` unpacks it).
    """
    width = zT.shape[0]
    offset = 0
    for a in range(width):
        np.multiply(zT[a:], zT[a], out=out[offset : offset + width - a])
        offset += width - a
    return out


def symmetric_from_pairs(sums, width):
    """Symmetric (..., width, width) matrices from `pair_products` sums.

    `sums` is (..., width (width + 1) / 2), in the order of
    ``np.triu_indices(width)``.
    """
    upper = np.triu_indices(width)
    matrices = np.empty((*sums.shape[:-1], width, width))
    matrices[..., upper[0], upper[1]] = sums
    matrices[..., upper[1], upper[0]] = sums
    return matrices


def take_rows(value, rows, n_samples):
    """Index a per-row fit parameter by `rows`; pass anything else through.

    Metadata routed to an expert (or a gate) may be per-row arrays, which must
    follow the rows that expert is fitted on, or scalars, which must not.
    """
    if hasattr(value, "__len__") and not isinstance(value, str):
        array = np.asarray(value)
        if array.ndim >= 1 and array.shape[0] == n_samples:
            return array[rows]
    return value


def set_random_states(estimator, seed):
    """Seed every unset ``random_state`` of an estimator (and its children)."""
    to_set = {
        key: int(seed)
        for key, value in estimator.get_params(deep=True).items()
        if (key == "random_state" or key.endswith("__random_state"))
        and (value is None or isinstance(value, np.random.RandomState))
    }
    if to_set:
        estimator.set_params(**to_set)


@functools.cache
def _blas_controllers():
    # Building a controller scans the process's loaded libraries (see
    # benchmarks/kernels.py for its cost): once per process is enough, as in
    # scikit-learn. Split by the scope of a library's limit: an OpenBLAS on
    # the OpenMP threading layer limits the calling thread only, the others
    # the whole process.
    controllers = ThreadpoolController().select(user_api="blas").lib_controllers
    per_thread = [lib for lib in controllers if _limits_one_thread(lib)]
    shared = [lib for lib in controllers if not _limits_one_thread(lib)]
    return per_thread, shared


def _limits_one_thread(lib):
    return (
        lib.internal_api == "openblas"
        and getattr(lib, "threading_layer", None) == "openmp"
    )


def _set_threads(lib, n_threads):
    """Set a process-wide limit from whichever thread runs this.

    threadpoolctl (>= 3.6) lets only one "controlling" thread set an
    OpenBLAS limit and silently ignores the others; mixexp's kernels may
    run in any thread, so control is taken for the call and given back.
    """
    clear = getattr(type(lib), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    lib.set_num_threads(n_threads)
    if clear is not None:
        clear(force=True)


class _SingleThreadedBlas:
    """BLAS at one thread while mixexp's own kernels run.

    mixexp's kernels (the linear experts' normal equations, the softmax
    gate's Newton steps, the E-step) are many small matrix products, which
    gain next to nothing from BLAS threads on idle cores, while the larger
    ones (the gate's Hessian) lose several-fold to them on busy cores, as
    when fits run side by side (benchmarks/kernels.py).
    The user's own estimators (the experts, a classifier gate) run with the
    user's settings. Three uses:

    - ``with single_threaded_blas:`` around a kernel;
    - ``with single_threaded_blas.kept():`` around a fit: the limit, once a
      kernel has taken it, stays between kernels (switching it costs more
      than a small kernel: the BLAS threads wake up again) and is lifted
      when the fit ends;
    - ``with single_threaded_blas.lifted():`` around a call into the user's
      estimators: the user's limits, until the next kernel.

    Most BLAS libraries have one, process-wide limit. Threads that hold it
    at the same time (fits side by side) are counted: the first one to
    take it sets it, the last one to let go restores what the first one
    found. A user estimator in another thread runs at one thread while a
    kernel does. A library whose limit is per thread (OpenBLAS on OpenMP)
    is limited in each holding thread alone.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._found = None
        self._local = threading.local()

    def _state(self):
        local = self._local
        if not hasattr(local, "holding"):
            local.holding, local.kernels, local.kept, local.found = False, 0, 0, None
        return local

    def _take(self, local):
        if local.holding:
            return
        per_thread, shared = _blas_controllers()
        if per_thread:
            local.found = [lib.get_num_threads() for lib in per_thread]
            for lib in per_thread:
                lib.set_num_threads(1)
        with self._lock:
            if self._holders == 0 and shared:
                self._found = [lib.get_num_threads() for lib in shared]
                for lib, n_threads in zip(shared, self._found, strict=True):
                    if n_threads != 1:
                        _set_threads(lib, 1)
            self._holders += 1
        local.holding = True

    def _let_go(self, local):
        if not local.holding:
            return
        per_thread, shared = _blas_controllers()
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and shared:
                for lib, n_threads in zip(shared, self._found, strict=True):
                    if n_threads != 1:
                        _set_threads(lib, n_threads)
                self._found = None
        if per_thread:
            for lib, n_threads in zip(per_thread, local.found, strict=True):
                lib.set_num_threads(n_threads)
        local.holding = False

    def __enter__(self):
        local = self._state()
        self._take(local)
        local.kernels += 1
        return self

    def __exit__(self, *exc_info):
        local = self._state()
        local.kernels -= 1
        if local.kernels == 0 and local.kept == 0:
            self._let_go(local)
        return False

    @contextlib.contextmanager
    def kept(self):
        """Keep the limit between kernels until the block ends."""
        local = self._state()
        local.kept += 1
        try:
            yield
        finally:
            local.kept -= 1
            if local.kernels == 0:
                self._let_go(local)

    @contextlib.contextmanager
    def lifted(self):
        """Run the block with the user's limits (a user estimator's call)."""
        self._let_go(self._state())
        yield


single_threaded_blas = _SingleThreadedBlas()


def runs_in_parallel(n_jobs):
    """Whether joblib would run calls with `n_jobs` in more than one worker."""
    return effective_n_jobs(n_jobs) > 1


def run_calls(calls, n_jobs):
    """Run ``(function, args)`` pairs, in parallel threads where it pays.

    Where joblib would run them one after another anyway (``n_jobs`` of 1,
    or ``None`` outside a ``parallel_config`` asking for more), they run in a
    plain loop: joblib's per-call cost, which copies the configuration and
    the warning filters into each call, is as large as a small expert's
    fit, and an EM fit makes thousands of calls.
    """
    if not runs_in_parallel(n_jobs):
        return [function(*args) for function, args in calls]
    return Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(function)(*args) for function, args in calls
    )
