"""fastdense.ops and optimizer.apply_gradients beside the NumPy expression of the same math, at
the reference workload's shapes (784 -> 100 -> 10; one row, and batches of 32)."""
import numpy as np
import pytest

from fastdense import ops, optimizers

rng = np.random.default_rng(0)
X1 = rng.random((1, 784), dtype=np.float32)
X = rng.random((32, 784), dtype=np.float32)
W = ((rng.random((784, 100), dtype=np.float32) - 0.5) * 0.1).astype(np.float32)
b = np.zeros(100, np.float32)
dZ = (rng.random((32, 100), dtype=np.float32) - 0.5).astype(np.float32)
logits = rng.normal(size=(32, 10)).astype(np.float32)
Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)]


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.benchmark(group="ops.dense relu, one row: 1x784 @ 784x100")
def test_fastdense_dense_one_row(benchmark):
    benchmark(ops.dense, X1, W, b, "relu")


@pytest.mark.benchmark(group="ops.dense relu, one row: 1x784 @ 784x100")
def test_numpy_dense_one_row(benchmark):
    benchmark(lambda: np.maximum(X1 @ W + b, 0))


@pytest.mark.benchmark(group="ops.dense sigmoid, 32x784 @ 784x100")
def test_fastdense_dense_batch(benchmark):
    benchmark(ops.dense, X, W, b, "sigmoid")


@pytest.mark.benchmark(group="ops.dense sigmoid, 32x784 @ 784x100")
def test_numpy_dense_batch(benchmark):
    benchmark(lambda: _sigmoid(X @ W + b))


@pytest.mark.benchmark(group="ops.dense_grad sigmoid (given outputs), 32x784 @ 784x100")
def test_fastdense_dense_grad(benchmark):
    Z = ops.dense(X, W, b, "sigmoid")
    benchmark(ops.dense_grad, X, W, b, dZ, "sigmoid", Z)


@pytest.mark.benchmark(group="ops.dense_grad sigmoid (given outputs), 32x784 @ 784x100")
def test_numpy_dense_grad(benchmark):
    Z = _sigmoid(X @ W + b)

    def grad():
        d = dZ * Z * (1 - Z)
        return d @ W.T, X.T @ d, d.sum(0)
    benchmark(grad)


@pytest.mark.benchmark(group="ops.activation softmax, 32x10")
def test_fastdense_softmax(benchmark):
    benchmark(ops.activation, "softmax", logits)


@pytest.mark.benchmark(group="ops.activation softmax, 32x10")
def test_numpy_softmax(benchmark):
    def softmax():
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    benchmark(softmax)


@pytest.mark.benchmark(group="ops.activation_grad softmax (Jacobian-vector product), 32x10")
def test_fastdense_softmax_grad(benchmark):
    benchmark(ops.activation_grad, "softmax", logits, Y)


@pytest.mark.benchmark(group="ops.activation_grad softmax (Jacobian-vector product), 32x10")
def test_numpy_softmax_grad(benchmark):
    def grad():
        e = np.exp(logits - logits.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        return p * (Y - (Y * p).sum(1, keepdims=True))
    benchmark(grad)


@pytest.mark.benchmark(group="ops.loss_grad categorical crossentropy from logits, 32x10")
def test_fastdense_loss_grad(benchmark):
    benchmark(ops.loss_grad, "categorical_crossentropy", Y, logits, from_logits=True)


@pytest.mark.benchmark(group="ops.loss_grad categorical crossentropy from logits, 32x10")
def test_numpy_loss_grad(benchmark):
    def f():
        m = logits.max(1, keepdims=True)
        e = np.exp(logits - m)
        s = e.sum(1, keepdims=True)
        loss = float(np.mean(np.sum(Y * (np.log(s) + m - logits), 1)))
        return loss, (e / s - Y) / len(Y)
    benchmark(f)


@pytest.mark.benchmark(group="Adam apply_gradients, 784x100 + 100 parameters")
def test_fastdense_adam_apply(benchmark):
    w, bias = W.copy(), b.copy()
    gw, gb = W * np.float32(1e-3), np.full(100, 1e-3, np.float32)
    opt = optimizers.Adam(1e-3)
    benchmark(lambda: opt.apply_gradients([(gw, w), (gb, bias)]))


@pytest.mark.benchmark(group="Adam apply_gradients, 784x100 + 100 parameters")
def test_numpy_adam_apply(benchmark):
    w, bias = W.copy(), b.copy()
    gw, gb = W * np.float32(1e-3), np.full(100, 1e-3, np.float32)
    state = [[np.zeros_like(w), np.zeros_like(w)], [np.zeros_like(bias), np.zeros_like(bias)]]
    t = [0]

    def step():
        t[0] += 1
        alpha = np.float32(1e-3 * np.sqrt(1 - 0.999 ** t[0]) / (1 - 0.9 ** t[0]))
        for p, g, (m, v) in ((w, gw, state[0]), (bias, gb, state[1])):
            m += (g - m) * np.float32(0.1)
            v += (g * g - v) * np.float32(0.001)
            p -= alpha * m / (np.sqrt(v) + np.float32(1e-7))
    benchmark(step)
