"""The reference workload (784-100-10 sigmoid/softmax, SGD 0.01, batch 32, 48k rows + 12k
validation), one-row prediction, and a large-batch training step, beside NumPy (and TF-Keras or
PyTorch when installed)."""
import functools
import time

import numpy as np
import pytest

import fastdense
from fastdense import Sequential
from fastdense.layers import Dense


def reference_model(dtype="float32"):
    fastdense.utils.set_random_seed(0)
    model = Sequential([Dense(100, activation="sigmoid", input_shape=(784,)),
                        Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def numpy_epoch(params, x, y, xv, yv, rng, lr=0.01, batch=32, lean=False):
    """One epoch of the same training in plain NumPy float32: shuffle, forward, backward, SGD
    update, and (unless `lean`) each batch's loss and accuracy and the validation pass, the work
    fit() does. `lean`: forward, backward and update only (less work than fit() does)."""
    W1, b1, W2, b2 = params
    order = rng.permutation(len(x))
    loss_sum = correct = 0.0
    for s in range(0, len(x), batch):
        idx = order[s:s + batch]
        X, Y = x[idx], y[idx]
        A = 1 / (1 + np.exp(-(X @ W1 + b1)))
        L = A @ W2 + b2
        L -= L.max(axis=1, keepdims=True)
        E = np.exp(L)
        P = E / E.sum(axis=1, keepdims=True)
        if not lean:
            loss_sum -= np.sum(Y * np.log(np.maximum(P, 1e-7)))
            correct += np.sum(P.argmax(1) == Y.argmax(1))
        D = (P - Y) / len(X)
        dW2, db2 = A.T @ D, D.sum(0)
        DA = (D @ W2.T) * A * (1 - A)
        dW1, db1 = X.T @ DA, DA.sum(0)
        W1 -= lr * dW1
        b1 -= lr * db1
        W2 -= lr * dW2
        b2 -= lr * db2
    if lean:
        return float(np.sum(W2)), 0
    for s in range(0, len(xv), batch):
        A = 1 / (1 + np.exp(-(xv[s:s + batch] @ W1 + b1)))
        L = A @ W2 + b2
        P = np.exp(L - L.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        loss_sum -= np.sum(yv[s:s + batch] * np.log(np.maximum(P, 1e-7)))
    return loss_sum, correct


SETTLE = 0.25  # seconds between runs: OpenBLAS's threads spin for ~0.1 s after their last call


def interleaved(benchmark, ours, references, rounds):
    """Times `ours` through pytest-benchmark and, untimed by it, one run of each of `references`
    (name -> function) before every round: they alternate, so all see the same state of a
    shared, drifting machine (back-to-back runs of the same epoch differ by up to 30% here).
    Each run starts after a pause of SETTLE seconds, so that no run inherits the previous one's
    spinning BLAS threads. The references' times go to extra_info, where conftest.py's summary
    reads them for the ratios."""
    times = {name: [] for name in references}

    def setup():
        for name, reference in references.items():
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            reference()
            times[name].append(time.perf_counter() - t0)
        time.sleep(SETTLE)

    result = benchmark.pedantic(ours, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["references"] = {
        name: {"times_s": t[-rounds:], "median_s": float(np.median(t[-rounds:]))}
        for name, t in times.items()}  # the warm-up round's reference runs are not counted
    return result


def numpy_references(fashion, names):
    """The NumPy epochs timed beside fit(), by name: `numpy_epoch` (the work fit() does,
    validation included) and `numpy_lean_epoch` (forward, backward, update only), each on NumPy's
    default BLAS threads or, with `_1_blas_thread`, on one (faster on this 2-core machine at
    these shapes). Returns {name: function} and the list their runs append results to."""
    from threadpoolctl import threadpool_limits

    x, y, xv, yv = fashion
    params = [w.copy() for w in reference_model().get_weights()]
    rng = np.random.default_rng(0)
    out = []

    def run(lean, threads):
        with threadpool_limits(threads):  # (None: no limit)
            out.append(numpy_epoch(params, x, y, xv, yv, rng, lean=lean)[0])

    kinds = {"numpy_epoch": (False, None), "numpy_epoch_1_blas_thread": (False, 1),
             "numpy_lean_epoch": (True, None), "numpy_lean_epoch_1_blas_thread": (True, 1)}
    return {name: functools.partial(run, *kinds[name]) for name in names}, out


@pytest.mark.benchmark(group="epoch (784-100-10, batch 32, with validation)")
def test_fastdense_epoch(benchmark, fashion):
    """One fit() call of one epoch (so per-call costs such as input checks are included),
    interleaved with one epoch of the same training in plain NumPy and with the lean NumPy loop
    (no loss, accuracy or validation), each on NumPy's default BLAS threads and on one."""
    x, y, xv, yv = fashion
    model = reference_model()
    references, out = numpy_references(fashion, ["numpy_epoch", "numpy_epoch_1_blas_thread",
                                                 "numpy_lean_epoch",
                                                 "numpy_lean_epoch_1_blas_thread"])
    hist = interleaved(
        benchmark, lambda: model.fit(x, y, epochs=1, validation_data=(xv, yv), verbose=0),
        references, rounds=7)
    assert np.isfinite(hist.history["loss"][0]) and np.isfinite(out[-1])


@pytest.mark.benchmark(group="epoch (784-100-10, batch 32, no validation)")
def test_fastdense_epoch_no_validation(benchmark, fashion):
    """Issue 12's seed target: one fit() epoch without validation data (the lean loop has no
    validation pass), interleaved with the lean NumPy loop (forward, backward, update only) on
    NumPy's default BLAS threads and on one. fit() still computes each batch's loss and
    accuracy, which the loop does not."""
    x, y, _, _ = fashion
    model = reference_model()
    references, out = numpy_references(fashion, ["numpy_lean_epoch",
                                                 "numpy_lean_epoch_1_blas_thread"])
    hist = interleaved(benchmark, lambda: model.fit(x, y, epochs=1, verbose=0), references,
                       rounds=7)
    assert np.isfinite(hist.history["loss"][0]) and np.isfinite(out[-1])


# -- one-row prediction ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_row(fashion):
    return fashion[2][:1].copy()


@pytest.mark.benchmark(group="predict one row")
def test_fastdense_predict_one_row(benchmark, one_row):
    model = reference_model()
    out = benchmark(lambda: model.predict(one_row, verbose=0))
    assert out.shape == (1, 10)


@pytest.mark.benchmark(group="predict one row (model(x))")
def test_fastdense_call_one_row(benchmark, one_row):
    model = reference_model()
    assert benchmark(lambda: model(one_row)).shape == (1, 10)


def _numpy_forward(weights, x):
    W1, b1, W2, b2 = weights
    a = 1 / (1 + np.exp(-(x @ W1 + b1)))
    z = a @ W2 + b2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.benchmark(group="predict one row")
def test_numpy_predict_one_row(benchmark, one_row):
    weights = reference_model().get_weights()
    assert benchmark(lambda: _numpy_forward(weights, one_row)).shape == (1, 10)


@pytest.mark.benchmark(group="predict one row (model(x))")
def test_numpy_call_one_row(benchmark, one_row):
    weights = reference_model().get_weights()
    assert benchmark(lambda: _numpy_forward(weights, one_row)).shape == (1, 10)


# -- large batches -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_batch():
    rng = np.random.default_rng(0)
    return rng.random((1024, 784), dtype=np.float32), rng.integers(0, 10, 1024)


@pytest.mark.benchmark(group="large batch: 784-512-512-10 relu, batch 1024, one step")
def test_fastdense_large_batch_step(benchmark, big_batch):
    x, y = big_batch
    model = Sequential([Dense(512, activation="relu", input_shape=(784,)),
                        Dense(512, activation="relu"), Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    benchmark.pedantic(lambda: model.train_on_batch(x, y), rounds=20, iterations=1, warmup_rounds=2)


@pytest.mark.benchmark(group="large batch: 784-512-512-10 relu, batch 1024, one step")
def test_sgemm_same_flops(benchmark, big_batch):
    """The machine's sgemm doing the step's matrix products (3 per layer: forward, dW, dX)."""
    x, _ = big_batch
    rng = np.random.default_rng(1)
    W1, W2, W3 = (rng.random(s, dtype=np.float32) for s in ((784, 512), (512, 512), (512, 10)))
    A1, A2 = np.empty((1024, 512), np.float32), np.empty((1024, 512), np.float32)

    def products():
        np.matmul(x, W1, out=A1)
        np.matmul(A1, W2, out=A2)
        Z = A2 @ W3
        A2.T @ Z, A1.T @ A2, x.T @ A1    # weight gradients
        Z @ W3.T, A2 @ W2.T              # input gradients (none for the first layer)

    benchmark.pedantic(products, rounds=20, iterations=1, warmup_rounds=2)


# -- the cost of the progress bar ----------------------------------------------------------------------
@pytest.mark.benchmark(group="progress bar: epoch with verbose=1 (fastdense) vs verbose=0 (other)")
def test_fastdense_epoch_verbose1(benchmark, fashion, capsys):
    x, y, xv, yv = fashion
    loud, silent = reference_model(), reference_model()
    interleaved(benchmark,
                lambda: loud.fit(x, y, epochs=1, validation_data=(xv, yv), verbose=1),
                {"silent_epoch_verbose0":
                 lambda: silent.fit(x, y, epochs=1, validation_data=(xv, yv), verbose=0)},
                rounds=7)
    assert "1500/1500" in capsys.readouterr().out
