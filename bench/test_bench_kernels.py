"""Each kernel at the reference workload's shapes (batch 32, 784 -> 100 -> 10) beside NumPy."""
import numpy as np
import pytest

from fastdense import _kernels as K

C = K.CODES
rng = np.random.default_rng(0)
X = rng.random((32, 784), dtype=np.float32)
W = ((rng.random((784, 100), dtype=np.float32) - 0.5) * 0.1).astype(np.float32)
b = np.zeros(100, np.float32)
Z = np.empty((32, 100), np.float32)
dS = (rng.random((32, 100), dtype=np.float32) - 0.5).astype(np.float32)
dW, db, dX = np.empty_like(W), np.empty_like(b), np.empty_like(X)
logits = rng.normal(size=(32, 10)).astype(np.float32)
Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)]
dL = np.empty_like(logits)
P = rng.random(79510, dtype=np.float32)
G = rng.random(79510, dtype=np.float32) * 1e-3
HP = np.zeros(C["N_HP"])
NOSTATE = np.empty(0, np.float32)
NOSW = np.empty(0, np.float32)


@pytest.mark.benchmark(group="kernel: dense forward sigmoid 32x784 @ 784x100")
def test_fastdense_dense_forward(benchmark):
    benchmark(K.dense_forward, X, W, b, C["ACT_SIGMOID"], Z)


@pytest.mark.benchmark(group="kernel: dense forward sigmoid 32x784 @ 784x100")
def test_numpy_dense_forward(benchmark):
    benchmark(lambda: 1 / (1 + np.exp(-(X @ W + b))))


@pytest.mark.benchmark(group="kernel: dense forward sigmoid 32x784 @ 784x100")
def test_numpy_dense_forward_1_blas_thread(benchmark):
    """fastdense's public kernels run on the calling thread only: NumPy with one BLAS thread too."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        benchmark(lambda: 1 / (1 + np.exp(-(X @ W + b))))


@pytest.mark.benchmark(group="kernel: dense backward (dW, db, dX)")
def test_fastdense_dense_backward(benchmark):
    benchmark(K.dense_backward, X, W, dS, dW, db, dX)


@pytest.mark.benchmark(group="kernel: dense backward (dW, db, dX)")
def test_numpy_dense_backward(benchmark):
    benchmark(lambda: (X.T @ dS, dS.sum(0), dS @ W.T))


@pytest.mark.benchmark(group="kernel: dense backward (dW, db, dX)")
def test_numpy_dense_backward_1_blas_thread(benchmark):
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        benchmark(lambda: (X.T @ dS, dS.sum(0), dS @ W.T))


@pytest.mark.benchmark(group="kernel: softmax + crossentropy from logits, value and gradient")
def test_fastdense_loss(benchmark):
    benchmark(K.loss_grad, C["LOSS_CCE_LOGITS"], logits, Y, NOSW, dL)


@pytest.mark.benchmark(group="kernel: softmax + crossentropy from logits, value and gradient")
def test_numpy_loss(benchmark):
    def f():
        m = logits.max(1, keepdims=True)
        e = np.exp(logits - m)
        s = e.sum(1, keepdims=True)
        loss = np.mean(np.sum(Y * (np.log(s) + m - logits), 1))
        return loss, (e / s - Y) / len(Y)
    benchmark(f)


@pytest.mark.benchmark(group="kernel: SGD update of 79,510 parameters")
def test_fastdense_sgd(benchmark):
    benchmark(K.optimizer_step, C["OPT_SGD"], HP, 0.01, 0, P, G, NOSTATE)


@pytest.mark.benchmark(group="kernel: SGD update of 79,510 parameters")
def test_numpy_sgd(benchmark):
    def f():
        P[...] -= np.float32(0.01) * G
    benchmark(f)
