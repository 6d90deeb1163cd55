"""The second thread of split products (fastdense/_simd.h fd_run2): wake-ups are never lost, fork
children get a fresh worker, and results do not depend on the split."""
import os
import platform
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastdense
from fastdense import _kernels
from fastdense.layers import Dense

# The child must import the same fastdense as this process (the installed one in CI), not a
# source checkout that happens to be the working directory.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastdense.__file__)))

SCRIPT = textwrap.dedent("""
    import sys, time, os
    import numpy as np
    from fastdense import _kernels as K
    r = np.random.default_rng(0)
    X = r.random((32, 784), dtype=np.float32); W = r.random((784, 100), dtype=np.float32)
    b = np.zeros(100, np.float32); Z = np.empty((32, 100), np.float32)
    K.dense_forward(X, W, b, 0, Z, threads=1); expected = Z.copy()
    # gaps around the worker's 2 ms spin window, so jobs land while it spins, while it is going
    # to sleep and while it sleeps
    gaps = [0, 0.0005, 0.0019, 0.002, 0.0021, 0.003, 0.01]
    for i in range(700):
        K.dense_forward(X, W, b, 0, Z, threads=2)
        assert np.array_equal(Z, expected)
        time.sleep(gaps[i % len(gaps)])
    if hasattr(os, "fork"):
        pid = os.fork()
        if pid == 0:  # the child needs its own worker thread
            K.dense_forward(X, W, b, 0, Z, threads=2)
            os._exit(0 if np.array_equal(Z, expected) else 3)
        assert os.waitpid(pid, 0)[1] == 0
    print("ok")
""")


def test_split_products_survive_sleep_wake_cycles_and_fork():
    # A lost wake-up would hang: run in a child with a deadline instead of hanging the suite.
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120, cwd=PACKAGE_PARENT,
                          env=dict(os.environ, PYTHONPATH=PACKAGE_PARENT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("n, k, m", [(32, 784, 100), (64, 300, 48), (7, 50, 200), (1, 784, 100)])
def test_split_products_are_bit_identical(n, k, m):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, k)).astype(np.float32)
    W = rng.normal(size=(k, m)).astype(np.float32)
    dS = rng.normal(size=(n, m)).astype(np.float32)
    out = []
    for threads in (1, 2):
        Z = np.empty((n, m), np.float32)
        dW, db, dX = np.empty_like(W), np.empty(m, np.float32), np.empty_like(X)
        _kernels.dense_forward(X, W, np.zeros(m, np.float32), 0, Z, threads=threads)
        _kernels.dense_backward(X, W, dS, dW, db, dX, threads=threads)
        out.append((Z, dW, dX))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("m", [1, 3, 4, 5, 6, 7, 8, 12, 100])
@pytest.mark.parametrize("n, k", [(32, 784), (7, 25), (1, 23), (200, 50)])
def test_narrow_column_blocks_give_the_bits_of_full_blocks(n, k, m):
    """The last columns of a layer (m % 16, e.g. 4 of 100) go through narrow kernels (the weight
    gradient vectorises them along its rows instead); each element must get exactly the bits it
    gets when the same column sits inside a full 16-column block."""
    rng = np.random.default_rng(2)
    wide = -(-m // 16) * 16 + 16
    X = rng.normal(size=(n, k)).astype(np.float32)
    W = rng.normal(size=(k, wide)).astype(np.float32)
    dS = rng.normal(size=(n, wide)).astype(np.float32)
    got = {}
    for width in (m, wide):
        Wc, dSc = np.ascontiguousarray(W[:, :width]), np.ascontiguousarray(dS[:, :width])
        Z = np.empty((n, width), np.float32)
        dW, db, dX = np.empty_like(Wc), np.empty(width, np.float32), np.empty_like(X)
        _kernels.dense_forward(X, Wc, np.zeros(width, np.float32), 0, Z)
        _kernels.dense_backward(X, Wc, dSc, dW, db, dX)
        got[width] = Z, dW
    np.testing.assert_array_equal(got[m][0], got[wide][0][:, :m])
    np.testing.assert_array_equal(got[m][1], got[wide][1][:, :m])
    np.testing.assert_allclose(got[m][1], X.astype(np.float64).T @ dS[:, :m].astype(np.float64),
                               rtol=1e-4, atol=1e-4)


FTZ_LIB = """
#include <xmmintrin.h>
void set_ftz(int on)  /* flush-to-zero and denormals-are-zero, as -ffast-math code sets them */
{
    unsigned c = _mm_getcsr();
    _mm_setcsr(on ? (c | 0x8040u) : (c & ~0x8040u));
}
"""

FTZ_SCRIPT = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    import fastdense
    from fastdense import Sequential
    from fastdense.layers import Dense
    lib = ctypes.CDLL(sys.argv[1])
    # a 300-wide identity layer, so that each batch takes long enough for the worker to get
    # its share, then logits from 0 down to about -95 (exp: denormal probabilities)
    model = Sequential([Dense(300, input_shape=(300,)), Dense(10, activation="softmax")])
    W = np.zeros((300, 10), np.float32); W[0] = np.linspace(0, -95, 10)
    model.set_weights([np.eye(300, dtype=np.float32), np.zeros(300, np.float32), W,
                       np.zeros(10, np.float32)])
    x = np.ones((4000, 300), np.float32)
    x[:, 0] = np.linspace(0.95, 1.0, 4000)
    fastdense.config.set_num_threads(2)
    before = model.predict(x, verbose=0)           # starts the worker, flush-to-zero off
    assert (before[before > 0] < 1.2e-38).any()    # denormal probabilities
    lib.set_ftz(1)                                 # now on in this thread only
    two = model.predict(x, verbose=0)
    fastdense.config.set_num_threads(1)
    one = model.predict(x, verbose=0)
    lib.set_ftz(0)                                 # (NumPy's comparisons below see denormals)
    assert not (one[one > 0] < 1.2e-38).any()      # flushed
    assert np.array_equal(two.view(np.uint32), one.view(np.uint32)), \
        "the worker rounded differently"
    print("ok")
""")


def test_worker_takes_the_callers_flush_to_zero_mode(tmp_path):
    """A thread inherits the floating-point control modes only when it is created; the worker
    must take the caller's for each job, or a library that turns flush-to-zero on after the
    worker started would make its half of the batches round differently."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on this machine (the package's own build needs one)")
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"x86-64 only: the test sets MXCSR (this is {platform.machine()}; the "
                    "worker's copy of aarch64's FPCR is covered by tests/c under qemu)")
    src, lib = tmp_path / "ftz.c", tmp_path / "libftz.so"
    src.write_text(FTZ_LIB)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", str(src), "-o", str(lib)], check=True)
    proc = subprocess.run([sys.executable, "-c", FTZ_SCRIPT, str(lib)], capture_output=True,
                          text=True, timeout=120, cwd=PACKAGE_PARENT,
                          env=dict(os.environ, PYTHONPATH=PACKAGE_PARENT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def _with_zeros(rng, n, k):
    """Inputs with an image's kind of zeros: a border of columns zero in every row, half of the
    rest zero at random, whole zero rows and some negative zeros."""
    X = rng.normal(size=(n, k)).astype(np.float32)
    X[rng.random((n, k)) < 0.5] = 0.0
    X[:, :k // 3] = 0.0
    X[::4] = 0.0
    X[1::5, k // 2:] = -0.0
    return X


@pytest.mark.parametrize("n, k, m", [(32, 784, 100), (7, 25, 5), (1, 23, 3), (33, 100, 20),
                                     (200, 50, 12), (64, 300, 48), (5, 6, 16), (9, 13, 9)])
def test_weight_gradient_skipping_zeros_gives_the_dense_bits(n, k, m, same_bits_with_option):
    """The weight gradient runs each tile's chain of FMAs only over the batch rows whose inputs
    are not all zero there (a zero adds +-0 to the chain: nothing). The skipping kernels
    (switched off with sparse=False) must give the dense kernels' bits, with one and two
    threads, in every column-block shape (16 wide, masked, narrow)."""
    rng = np.random.default_rng(3)
    X = _with_zeros(rng, n, k)
    W = rng.normal(size=(k, m)).astype(np.float32)
    dS = rng.normal(size=(n, m)).astype(np.float32)

    def run(options):
        dW, db, dX = np.empty_like(W), np.empty(m, np.float32), np.empty_like(X)
        _kernels.dense_backward(X, W, dS, dW, db, dX, **options)
        return dW, db, dX

    dW = same_bits_with_option("sparse", run)[0]
    np.testing.assert_allclose(dW, X.astype(np.float64).T @ dS.astype(np.float64),
                               rtol=1e-4, atol=1e-4)


def test_weight_gradient_with_non_finite_deltas_keeps_zero_times_inf():
    """0 * Inf is NaN: where the deltas are not finite, skipping the zeros of the inputs would turn
    NaN into finite numbers, so the dense product must run."""
    rng = np.random.default_rng(4)
    X = _with_zeros(rng, 32, 200)
    dS = rng.normal(size=(32, 20)).astype(np.float32)
    dS[0, 3] = np.inf      # row 0 of X is all zeros: every dW[:, 3] is 0 * Inf + ... = NaN
    dS[5, 7] = np.nan
    dW, db = np.empty((200, 20), np.float32), np.empty(20, np.float32)
    _kernels.dense_backward(X, np.zeros((200, 20), np.float32), dS, dW, db)
    with np.errstate(invalid="ignore"):
        expected = X.astype(np.float64).T @ dS.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(dW), np.isnan(expected))
    assert np.isnan(dW[:, 3]).all() and np.isnan(dW[:, 7]).all()


def test_fit_evaluate_and_predict_give_the_same_bits_on_one_to_four_threads():
    """fit (its governor choosing between 1 and n threads by speed), evaluate and predict over
    many batches (the threads sharing the batches) with n = 1, 2, 3, 4 on any machine: the
    same weights, history, loss and predictions to the bit."""
    rng = np.random.default_rng(11)
    x = rng.random((900, 300)).astype(np.float32)
    x[x < 0.3] = 0
    y = rng.integers(0, 5, 900)
    results = []
    try:
        for n in (1, 2, 3, 4):
            fastdense.config.set_num_threads(n)
            fastdense.utils.set_random_seed(2)
            model = fastdense.Sequential([fastdense.Input((300,)),
                                          Dense(96, activation="relu"),
                                          Dense(40, activation="tanh"),
                                          Dense(5, activation="softmax")])
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, validation_split=0.2)
            results.append(model.get_weights() + [
                np.array(sorted(history.history.items()), dtype=object)[:, 1].tolist(),
                np.array(model.evaluate(x, y, batch_size=50, verbose=0)),
                model.predict(x, batch_size=40, verbose=0)])
    finally:
        fastdense.config.set_num_threads(fastdense.config._default_threads())
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("optimizer", [
    fastdense.optimizers.SGD(0.01, momentum=0.9, nesterov=True, weight_decay=0.01),
    fastdense.optimizers.Adam(0.001, global_clipnorm=0.5),
    fastdense.optimizers.RMSprop(0.001, momentum=0.5, centered=True, clipvalue=0.01),
    fastdense.optimizers.Adagrad(0.01)], ids=["sgd", "adam", "rmsprop", "adagrad"])
def test_optimizer_update_cut_between_threads_gives_the_same_bits(optimizer):
    """An update of more than 65,536 parameters is cut into ranges, one per thread (after the
    global norm, which needs them all); 1, 2, 3 and 4 threads must give the same weights."""
    rng = np.random.default_rng(2)
    x = rng.random((96, 700)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    results = []
    for threads in (1, 2, 3, 4):
        fastdense.utils.set_random_seed(1)
        model = fastdense.Sequential([fastdense.Input((700,)),
                                      fastdense.layers.Dense(100, activation="relu"),
                                      fastdense.layers.Dense(3, activation="softmax")])
        model._engine_options = {"threads": threads}
        model.compile(optimizer=optimizer.__class__.from_config(optimizer.get_config()),
                      loss="sparse_categorical_crossentropy")
        assert model.count_params() > 65536
        model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        results.append(model.get_weights())
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "swish", "elu"])
def test_wide_layers_at_batch_256_give_the_same_bits_on_any_thread_count(activation):
    """Batches of 256 rows through 512- and 600-unit layers, on the own kernels (the wide tiles'
    32-column blocks, a masked last block, the whole-batch step path, the optimizer's cut update)
    and on the packed GEMM (the default for such layers): 1, 2, 3 and 4 threads must give the
    same weights, losses and predictions, with plain SGD and Adam."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(512, 40)).astype(np.float32)
    y = rng.integers(0, 5, 512)
    for optimizer, packed in (("sgd", False), ("adam", False), ("sgd", True), ("adam", True)):
        results = []
        for threads in (1, 2, 3, 4):
            fastdense.utils.set_random_seed(2)
            model = fastdense.Sequential([
                fastdense.Input((40,)), fastdense.layers.Dense(512, activation=activation),
                fastdense.layers.Dense(600, activation=activation),
                fastdense.layers.Dense(5, activation="softmax")])
            model._engine_options = {"threads": threads, "packed": packed}
            assert model._packed(256) == packed
            model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
            hist = model.fit(x, y, batch_size=256, epochs=2, verbose=0, shuffle=False)
            results.append((model.get_weights(), hist.history["loss"], model.predict(x, verbose=0)))
        w1, l1, p1 = results[0]
        for w, l, p in results[1:]:
            assert l == l1
            np.testing.assert_array_equal(p, p1)
            for a, b in zip(w, w1):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batches_over_256_rows_give_the_same_bits_on_any_thread_count_and_level(
        optimizer, same_bits_with_simd):
    """Batches over the own kernels' 256 rows train on the packed GEMM (the last, shorter batch
    of an epoch on the own kernels): the portable, AVX2 and AVX-512 kernels and 1 to 4 threads
    give the same weights, losses and predictions; BLAS (the packed option off) agrees to float32
    rounding, not to the bit."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(700, 60)).astype(np.float32)
    y = rng.integers(0, 5, 700)

    def run(options):
        fastdense.utils.set_random_seed(3)
        model = fastdense.Sequential([
            fastdense.Input((60,)), fastdense.layers.Dense(300, activation="relu"),
            fastdense.layers.Dense(40, activation="tanh"),
            fastdense.layers.Dense(5, activation="softmax")])
        model._engine_options = options
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        hist = model.fit(x, y, batch_size=300, epochs=2, verbose=0)
        return model.get_weights() + [np.array(hist.history["loss"]), model.predict(x, verbose=0)]

    packed = same_bits_with_simd(run)
    for threads in (3, 4):
        for a, b in zip(run({"threads": threads}), packed):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(run({"threads": 2, "packed": False}), packed):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _layer_kind_models():
    """Networks of every op kind around dense layers wide enough for the packed GEMM: (name,
    layer list builder, compile kwargs builder (a fresh optimizer each time), fit options)."""
    L = fastdense.layers
    regular = fastdense.regularizers.L1L2(l1=1e-4, l2=1e-3)
    return [
        ("dropout, tanh, sigmoid", lambda: [L.Dense(300, activation="tanh"), L.Dropout(0.3),
                                            L.Dense(40, activation="sigmoid"),
                                            L.Dense(5, activation="softmax")],
         lambda: dict(optimizer="adam", loss="sparse_categorical_crossentropy"), {}),
        ("batchnorm, layernorm, a frozen layer", lambda: [
            L.Dense(300, activation="relu"), L.BatchNormalization(),
            L.Dense(64, activation="elu", trainable=False), L.LayerNormalization(),
            L.Dense(5, activation="softmax")],
         lambda: dict(optimizer="rmsprop", loss="sparse_categorical_crossentropy"), {}),
        ("penalties, momentum, sample weights", lambda: [
            L.Dense(300, activation="relu", kernel_regularizer=regular),
            L.Dense(5, activation="softmax")],
         lambda: dict(optimizer=fastdense.optimizers.SGD(0.05, momentum=0.9),
                      loss="sparse_categorical_crossentropy"), {"sample_weight": True}),
        ("linear output, mse, gelu", lambda: [L.Dense(300, activation="gelu"), L.Dense(1)],
         lambda: dict(optimizer="sgd", loss="mse"), {"regression": True}),
        # each input gradient gated by the relu before it, a frozen layer's included
        ("relu into relu, a frozen relu layer", lambda: [
            L.Dense(300, activation="relu"), L.Dense(64, activation="relu", trainable=False),
            L.Dense(48, activation="relu"), L.Dense(5, activation="softmax")],
         lambda: dict(optimizer="sgd", loss="sparse_categorical_crossentropy"), {}),
        # deltas handed on as panels along a chain of relus, the last 12 wide (narrow panels)
        ("three relu layers, adam", lambda: [
            L.Dense(300, activation="relu"), L.Dense(200, activation="relu"),
            L.Dense(12, activation="relu"), L.Dense(5, activation="softmax")],
         lambda: dict(optimizer="adam", loss="sparse_categorical_crossentropy"), {}),
    ]


@pytest.mark.parametrize("case", range(len(_layer_kind_models())),
                         ids=[m[0] for m in _layer_kind_models()])
def test_packed_training_agrees_with_blas_for_every_kind_of_op(case):
    """Batches over 256 rows (the packed GEMM) through dropout, normalization, frozen and
    penalized layers, momentum and sample weights: the weights and losses agree with the BLAS
    path (packed off) to float32 rounding, and do not depend on the thread count nor on whether
    relu layers' deltas, or the weights an optimizer updates, pass between the products as
    panels."""
    _, layers_fn, compile_kw, fit_kw = _layer_kind_models()[case]
    rng = np.random.default_rng(9)
    x = rng.normal(size=(650, 30)).astype(np.float32)
    y = (x[:, :1] * 2 + 1).astype(np.float32) if fit_kw.get("regression") \
        else rng.integers(0, 5, 650)
    sw = rng.random(650).astype(np.float32) if fit_kw.get("sample_weight") else None

    def run(options):
        fastdense.utils.set_random_seed(4)
        model = fastdense.Sequential([fastdense.Input((30,))] + layers_fn())
        model._engine_options = options
        model.compile(**compile_kw())
        hist = model.fit(x, y, batch_size=300, epochs=3, verbose=0, sample_weight=sw)
        return model, model.get_weights() + [np.array(hist.history["loss"])]

    model, packed = run({"threads": 2})
    assert model._packed(300)
    for a, b in zip(run({"threads": 3})[1], packed):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(run({"threads": 2, "delta_panels": False, "weight_panels": False})[1],
                    packed):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(run({"threads": 2, "packed": False})[1], packed):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
