"""Beyond one machine: a hyperparameter search on a Dask cluster through joblib's `dask`
backend and batch prediction over a Dask array, on a LocalCluster of two worker processes; and
inside joblib and Dask workers fastdense takes only its share of the cores."""
import os
import sys

import cloudpickle
import dask.array as da
import joblib
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

import fastdense
from fastdense import Input, Sequential
from fastdense.layers import Dense
from fastdense.wrappers import SKLearnClassifier

# The functions below go to the workers by value: pytest may import this file under a package
# name ("tests.test_dask") that the worker processes cannot import.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# distributed warns about slow start-up or shutdown on a busy machine: not a test failure
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:distributed.*",
                                        "ignore::RuntimeWarning:distributed.*")


def build(X, y, hidden=8, learning_rate=0.05):
    model = Sequential([Input((X.shape[1],)), Dense(hidden, activation="relu"),
                        Dense(y.shape[1], activation="softmax")])
    model.compile(optimizer=fastdense.optimizers.Adam(learning_rate), loss="categorical_crossentropy")
    return model


def _threads_here():
    """What a task sees: fastdense's default thread count and the process's OMP_NUM_THREADS."""
    from fastdense import config

    return config._default_threads(), os.environ.get("OMP_NUM_THREADS"), os.getpid()


@pytest.fixture(scope="module")
def client():
    # Two worker processes of one thread each on this machine; a real cluster is the same code
    # with Client("tcp://scheduler:8786") (see docs/export-and-scale.md).
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as c:
        yield c


def test_grid_and_randomized_search_on_the_cluster(client):
    X, y = make_blobs(n_samples=90, centers=3, n_features=4, cluster_std=0.6, random_state=0)
    estimator = SKLearnClassifier(build, fit_kwargs={"epochs": 30, "verbose": 0})
    grid = GridSearchCV(estimator, {"model_kwargs": [{"learning_rate": 1e-5},
                                                     {"learning_rate": 0.05}]}, cv=3)
    with joblib.parallel_backend("dask"):
        grid.fit(X, y)
    assert grid.best_params_["model_kwargs"] == {"learning_rate": 0.05}
    assert grid.best_score_ > 0.85
    # the fits ran in both worker processes, none in this one
    workers = client.run(os.getpid)
    assert len(set(workers.values())) == 2 and os.getpid() not in workers.values()

    search = RandomizedSearchCV(estimator, {"model_kwargs": [{"hidden": h} for h in (4, 8, 16)]},
                                n_iter=2, cv=2, random_state=0)
    with joblib.parallel_backend("dask"):
        search.fit(X, y)
    assert search.best_estimator_.predict(X[:4]).shape == (4,)


def test_map_blocks_prediction_over_a_dask_array(client):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6)).astype("float32")
    model = Sequential([Input((6,)), Dense(16, activation="tanh"), Dense(3, activation="softmax")])
    expected = model.predict(x, verbose=0)
    blocks = da.from_array(x, chunks=(300, 6))  # 300, 300, 300, 100 rows
    # the model travels to the workers pickled (its .keras bytes)
    out = blocks.map_blocks(lambda b: model.predict(b, verbose=0), dtype="float32",
                            chunks=(blocks.chunks[0], (3,)))
    assert out.shape == (1000, 3)
    got = out.compute()
    np.testing.assert_array_equal(got, expected)  # rows do not depend on their batch


def test_workers_use_their_share_of_the_cores(client):
    per_worker = client.run(_threads_here)
    assert len(per_worker) == 2
    for threads, omp, _ in per_worker.values():
        assert omp == "1" and threads == 1  # Dask's nanny gives each worker process 1 thread


def test_loky_workers_use_their_share_of_the_cores():
    from fastdense import config

    # functions of installed modules only: the workers need not import this test module
    tasks = [joblib.delayed(config._default_threads)(), joblib.delayed(os.environ.get)("OMP_NUM_THREADS")]
    results = [joblib.Parallel(n_jobs=2, backend="loky")(tasks) for _ in range(2)]
    for threads, omp in results:
        # joblib gives each of 2 workers cpu_count() // 2 threads through OMP_NUM_THREADS
        assert omp is not None and threads == max(1, min(2, int(omp)))
        assert int(omp) <= max(1, joblib.cpu_count() // 2)


@pytest.mark.parametrize("environ, expected", [
    ({"OMP_NUM_THREADS": "1"}, 1),
    ({"OMP_NUM_THREADS": "1,1"}, 1),
    ({"OMP_NUM_THREADS": "1", "FASTDENSE_NUM_THREADS": "2"}, 2),  # fastdense's own wins
    ({"FASTDENSE_NUM_THREADS": "1"}, 1),
    ({"OMP_NUM_THREADS": "zero"}, None),
    ({}, None),
])
def test_default_threads_follow_the_process_budget(environ, expected, monkeypatch):
    from fastdense import config

    cores = len(os.sched_getaffinity(0))
    assert config._default_threads(environ) == (expected or min(2, cores))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # e.g. taskset -c 0
    assert config._default_threads({}) == 1
