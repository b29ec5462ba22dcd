"""Helpers shared by the estimators: parallel calls and BLAS thread limits."""

import threading

import numpy as np
import pytest
from joblib import parallel_config
from threadpoolctl import threadpool_info, threadpool_limits

from mixexp._utils import run_calls, single_threaded_blas, take_rows


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


@pytest.fixture
def two_blas_threads():
    """BLAS at two threads for the test (the suite runs it at one)."""
    if not _blas_threads():
        pytest.skip("no BLAS library found by threadpoolctl")
    with threadpool_limits(limits=2, user_api="blas"):
        yield _blas_threads()


def test_single_threaded_blas_limits_and_restores(two_blas_threads):
    with single_threaded_blas:
        assert set(_blas_threads()) == {1}
        with single_threaded_blas:  # nested: still one thread
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == two_blas_threads


def test_single_threaded_blas_restores_after_an_error(two_blas_threads):
    with pytest.raises(ZeroDivisionError), single_threaded_blas:
        raise ZeroDivisionError
    assert _blas_threads() == two_blas_threads


def test_single_threaded_blas_overlapping_threads_restore_once(two_blas_threads):
    """Kernels in two threads overlap: the first in sets the limit, the last
    out lifts it, and what the first one found is what comes back (entered
    and left in the order A in, B in, A out, B out)."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with single_threaded_blas:
            a_in.set()
            b_in.wait(5)
        seen["after a"] = _blas_threads()
        a_out.set()

    def second():
        a_in.wait(5)
        with single_threaded_blas:
            b_in.set()
            a_out.wait(5)
            seen["b alone"] = _blas_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert set(seen["after a"]) == {1}  # b is still in its kernel
    assert set(seen["b alone"]) == {1}
    assert _blas_threads() == two_blas_threads


def test_take_rows_indexes_per_row_values_only():
    rows = np.array([0, 2])
    np.testing.assert_array_equal(take_rows([5, 6, 7], rows, 3), [5, 7])
    assert take_rows("abc", rows, 3) == "abc"
    assert take_rows(0.5, rows, 3) == 0.5
    np.testing.assert_array_equal(take_rows([1, 2], rows, 3), [1, 2])
