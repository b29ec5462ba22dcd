"""Helpers shared by the estimators: parallel calls and BLAS thread limits."""

import threading

import numpy as np
import pytest
from joblib import parallel_config
from threadpoolctl import threadpool_info

from mixexp._utils import limit_blas_threads, run_calls, take_rows


def _whoami(value):
    return value, threading.get_ident()


@pytest.mark.parametrize("n_jobs", [None, 1])
def test_run_calls_sequential_in_the_calling_thread(n_jobs):
    results = run_calls([(_whoami, (k,)) for k in range(5)], n_jobs)
    assert [value for value, _ in results] == list(range(5))
    assert {ident for _, ident in results} == {threading.get_ident()}


def test_run_calls_parallel_keeps_order_and_uses_workers():
    results = run_calls([(_whoami, (k,)) for k in range(8)], 2)
    assert [value for value, _ in results] == list(range(8))
    assert threading.get_ident() not in {ident for _, ident in results}


def test_run_calls_honours_parallel_config():
    """n_jobs=None defers to joblib's context, as scikit-learn's n_jobs does."""
    with parallel_config(backend="threading", n_jobs=2):
        results = run_calls([(_whoami, (k,)) for k in range(8)], None)
    assert [value for value, _ in results] == list(range(8))
    assert threading.get_ident() not in {ident for _, ident in results}


def _blas_threads():
    return [
        info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"
    ]


def test_limit_blas_threads_limits_and_restores():
    before = _blas_threads()
    if not before:
        pytest.skip("no BLAS library found by threadpoolctl")
    with limit_blas_threads(1):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before


def test_take_rows_indexes_per_row_values_only():
    rows = np.array([0, 2])
    np.testing.assert_array_equal(take_rows([5, 6, 7], rows, 3), [5, 7])
    assert take_rows("abc", rows, 3) == "abc"
    assert take_rows(0.5, rows, 3) == 0.5
    np.testing.assert_array_equal(take_rows([1, 2], rows, 3), [1, 2])
