"""Small helpers shared by the estimators and the gates."""

import functools

import numpy as np
from joblib import effective_n_jobs
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import ThreadpoolController


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


@functools.cache
def _threadpool_controller():
    # Building a controller scans the process's loaded libraries (about
    # 3 ms): once per process is enough, as in scikit-learn.
    return ThreadpoolController()


def limit_blas_threads(n_threads):
    """Context manager limiting BLAS to `n_threads` threads."""
    return _threadpool_controller().limit(limits=n_threads, user_api="blas")


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
