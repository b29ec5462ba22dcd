"""Fitting on a dask cluster through joblib's "dask" backend.

The module starts its own small ``distributed.LocalCluster`` (two worker
processes) and checks that ``joblib.parallel_config(backend="dask")`` sends
the expert fits, or the ``n_init`` restarts, to the cluster's workers and
gives the same model as a sequential fit. It is skipped when the
``distributed`` extra is not installed.
"""

import logging
import os
import warnings

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.linear_model import LogisticRegression, Ridge

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes, make_xor

distributed = pytest.importorskip("distributed")


def _where_fitted():
    """(worker address or None, process id) of the code calling it."""
    try:
        address = distributed.get_worker().address
    except ValueError:  # not running in a dask worker
        address = None
    return address, os.getpid()


# Experts that record where they were fitted. They live at module level so
# that the worker processes can unpickle them (by importing this module).
class _RecordingRidge(Ridge):
    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight=sample_weight)
        self.fitted_on_ = _where_fitted()
        return self


class _RecordingLogisticRegression(LogisticRegression):
    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight=sample_weight)
        self.fitted_on_ = _where_fitted()
        return self


@pytest.fixture(scope="module")
def client():
    # Two single-threaded worker processes: the work is pickled to and from
    # other processes, as on a real cluster. The scheduler and its HTTP
    # server (which runs even without the dashboard) take random ports, so
    # that parallel test runs do not clash.
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def regression_data():
    return make_regimes(n_samples=300, n_regimes=3, n_features=3, random_state=0)


@pytest.fixture(scope="module")
def classification_data():
    return make_xor(n_samples=300, flip=0.05, random_state=0)


# A loose tol keeps the number of EM iterations (each one a round of tasks
# on the cluster) small; lower_bounds_ still compares every one of them.
CASES = {
    "regressor-soft-em": (MixtureOfExpertsRegressor, {}),
    "regressor-hard-em": (MixtureOfExpertsRegressor, {"training": "hard"}),
    "regressor-n_init": (
        MixtureOfExpertsRegressor,
        {"n_init": 2, "expert": _RecordingRidge()},
    ),
    "regressor-feature_groups": (
        MixtureOfExpertsRegressor,
        {"feature_groups": [[0, 1], [1, 2], [0, 2]]},
    ),
    "classifier-soft-em": (MixtureOfExpertsClassifier, {"n_experts": 4}),
    "classifier-hard-em": (
        MixtureOfExpertsClassifier,
        {"n_experts": 4, "training": "hard"},
    ),
    "classifier-n_init": (
        MixtureOfExpertsClassifier,
        {"n_experts": 4, "n_init": 2, "expert": _RecordingLogisticRegression()},
    ),
    "classifier-feature_groups": (
        MixtureOfExpertsClassifier,
        {"feature_groups": [[0], [1], [0, 1]]},
    ),
}


def _assert_same_model(local, remote, X):
    assert remote.n_iter_ == local.n_iter_
    np.testing.assert_allclose(
        remote.lower_bounds_, local.lower_bounds_, rtol=1e-12, atol=0
    )
    np.testing.assert_allclose(
        remote.predict_gate(X), local.predict_gate(X), rtol=1e-12, atol=1e-15
    )
    if hasattr(local, "predict_proba"):
        np.testing.assert_allclose(
            remote.predict_proba(X), local.predict_proba(X), rtol=1e-12, atol=1e-15
        )
        np.testing.assert_array_equal(remote.predict(X), local.predict(X))
    else:
        np.testing.assert_allclose(
            remote.predict(X), local.predict(X), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("Estimator, params", CASES.values(), ids=CASES)
def test_same_model_on_the_cluster(
    client, regression_data, classification_data, Estimator, params
):
    X, y = (
        regression_data
        if Estimator is MixtureOfExpertsRegressor
        else classification_data
    )
    local = Estimator(random_state=0, tol=1e-2, n_jobs=1, **params).fit(X, y)
    with (
        distributed.get_task_stream(client) as tasks,
        parallel_config(backend="dask"),
    ):
        remote = Estimator(random_state=0, tol=1e-2, n_jobs=-1, **params).fit(X, y)

    _assert_same_model(local, remote, X)

    # The work went to the cluster: the expert fits, or, with several
    # restarts and no more workers than restarts, the restarts (each fitting
    # its experts in its worker), ran as tasks on its workers.
    workers = set(client.scheduler_info()["workers"])
    ran = [(str(task["key"]), task["worker"]) for task in tasks.data]
    kinds = ("_single_run",) if remote.n_init > 1 else ("_fit_expert", "_fit_linear")
    on = [worker for key, worker in ran if any(kind in key for kind in kinds)]
    assert on
    assert set(on) <= workers

    if isinstance(remote.expert, (_RecordingRidge, _RecordingLogisticRegression)):
        # Independent of how joblib names its tasks: in sequence every expert
        # is fitted here, outside any worker; under the dask backend, in the
        # cluster's worker processes.
        assert {e.fitted_on_ for e in local.experts_} == {(None, os.getpid())}
        for address, pid in (e.fitted_on_ for e in remote.experts_):
            assert address in workers
            assert pid != os.getpid()


def test_fit_over_dask_chunks_runs_its_passes_on_the_workers(client, regression_data):
    # A fit on dask arrays: every pass over the row chunks is a round of
    # tasks on the cluster (the client is dask's default scheduler here),
    # and the model is the one the threaded scheduler gives.
    import dask
    import dask.array as da

    X, y = regression_data
    Xd, yd = da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100)
    params = {"n_experts": 3, "partition": "random", "random_state": 0, "tol": 1e-2}
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        # Older dask warns that a client is active; the threads are meant.
        warnings.filterwarnings("ignore", "Running on a single-machine scheduler")
        threaded = MixtureOfExpertsRegressor(**params).fit(Xd, yd)
    with distributed.get_task_stream(client) as tasks:
        remote = MixtureOfExpertsRegressor(**params).fit(Xd, yd)

    _assert_same_model(threaded, remote, X)
    workers = set(client.scheduler_info()["workers"])
    on = [task["worker"] for task in tasks.data if "_run_block" in str(task["key"])]
    # At least a pass per EM iteration, each a task per chunk (three).
    assert len(on) >= 3 * remote.n_iter_
    assert set(on) <= workers
