"""Analytic gradients of whole small models against float64 central finite differences.

The analytic gradient of every parameter comes from one `train_steps` call (plain SGD, learning
rate 1, so gradient = params_before - params_after), both with the kernel's fused SGD path and
with the separate optimizer pass (forced by a clipvalue that never clips, which also leaves the
gradient in `grads`). The loss being differentiated is what `evaluate_steps` reports for the
whole data set as one batch (regularization included).
"""
import numpy as np
import pytest

import fastdense
from fastdense import _kernels, _reference
from fastdense.layers import Activation, Dense
from fastdense.regularizers import L1L2, L2

K = _kernels.CODES
EPS = 1e-6
N, N_IN = 6, 3
ACTIVATIONS = ["linear", "sigmoid", "softmax", "tanh", "relu", "elu", "selu", "softplus",
               "softsign", "swish", "gelu", "leaky_relu", "hard_sigmoid", "exponential"]


@pytest.fixture(autouse=True)
def float64():
    fastdense.config.set_floatx("float64")
    yield
    fastdense.config.set_floatx("float32")


def _assert_gradient(analytic, fd, what=""):
    # |g - fd| <= 1e-6 + 1e-4 |g|
    bad = np.abs(analytic - fd) > 1e-6 + 1e-4 * np.abs(analytic)
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} entries differ; worst at "
                           f"{np.argmax(np.abs(analytic - fd))}: analytic {analytic[bad][:5]}, "
                           f"finite differences {fd[bad][:5]}")


class Net:
    """A built, compiled model with random weights and the plan arrays the kernels read."""

    def __init__(self, layers, loss, targets, dtype=None, seed=0, weighted=False):
        rng = np.random.default_rng(seed)
        self.model = m = fastdense.Sequential(layers)
        m.build((None, N_IN))
        m.compile(optimizer=fastdense.optimizers.SGD(learning_rate=1.0), loss=loss)
        self.dtype = m._params.dtype
        m._params[:] = rng.normal(0, 0.7, m._params.size)  # biases too: away from l1's kink
        self.code, self.fused = m.loss.codes(m._plan(N).last_activation)
        self.train_plan = m._plan(N, keep_logits=self.fused, training=True)
        self.eval_plan = m._plan(N, keep_logits=self.fused, training=False)
        units = m._output_units
        self.X = rng.normal(size=(N, N_IN)).astype(self.dtype)
        if targets == "onehot":
            Y = np.eye(units)[rng.integers(0, units, N)]
        elif targets == "soft":
            Y = rng.dirichlet(np.ones(units), N)
        elif targets == "sparse":
            Y = rng.integers(0, units, (N, 1)).astype(float)
        elif targets == "binary":
            Y = rng.integers(0, 2, (N, units)).astype(float)
        elif targets == "far":  # MAE away from its kink: |output - y| >> eps
            Y = rng.choice([-4.0, 4.0], (N, units))
        else:
            Y = rng.normal(size=(N, units))
        self.Y = np.ascontiguousarray(Y, dtype=self.dtype)
        self.sw = rng.uniform(0.2, 2.0, N).astype(self.dtype) if weighted else np.empty(0, self.dtype)

    @property
    def params(self):
        return self.model._params

    def loss(self, params):
        plan = self.eval_plan
        stats = np.zeros(4)
        _kernels.evaluate_steps(params, plan.plan, plan.reg, plan.workspace(self.dtype), self.X,
                                self.Y, self.sw, 0, N, N, self.code, self.fused,
                                np.empty(0, dtype=np.intp), stats)
        return stats[0] / stats[1]

    def gradient(self, ops=_kernels, fused_sgd=True):
        """d loss / d params from one SGD step of learning rate 1: params_before - params_after,
        or, with fused_sgd=False, the gradient left in `grads` (checked against the former)."""
        plan = self.train_plan
        hp = np.zeros(K["N_HP"])
        if not fused_sgd:
            hp[K["HP_CLIPVALUE"]] = 1e30  # needs the whole gradient first: no folding
        after, grads = self.params.copy(), np.full_like(self.params, np.nan)
        stats = np.zeros(4)
        done = ops.train_steps(after, grads, np.empty(0, self.dtype), plan.plan, plan.reg,
                               plan.layout, plan.workspace(self.dtype), self.X, self.Y, self.sw,
                               np.empty(0, dtype=np.intp), 0, N, N, self.code, self.fused,
                               np.empty(0, dtype=np.intp), K["OPT_SGD"], hp, np.ones(1), 0,
                               np.zeros(1, dtype=np.uint64), stats)
        assert done == 1 and stats[-1] == 0
        g = self.params - after
        if fused_sgd:
            return g
        # float32: the difference keeps only the digits of g that survive p - (p - g).
        ulp = np.finfo(self.dtype).eps * (np.abs(self.params).max() + np.abs(grads).max())
        np.testing.assert_allclose(grads, g, rtol=0, atol=4 * ulp)
        return grads

    def finite_differences(self):
        p = self.params.astype(np.float64)
        fd = np.empty_like(p)
        for i in range(p.size):
            old = p[i]
            p[i] = old + EPS
            up = self.loss(p)
            p[i] = old - EPS
            down = self.loss(p)
            p[i] = old
            fd[i] = (up - down) / (2 * EPS)
        return fd


def _check(net, what=""):
    fd = net.finite_differences()
    for fused_sgd in (True, False):
        _assert_gradient(net.gradient(fused_sgd=fused_sgd), fd, f"{what} fused_sgd={fused_sgd}")
    _assert_gradient(net.gradient(_reference), fd, f"{what} reference")


# id: (layers, loss, targets, weighted)
ARCHITECTURES = {
    "relu_softmax_cce": (lambda: [Dense(5, "relu"), Dense(3, "softmax")],
                         "categorical_crossentropy", "onehot", False),
    "tanh_sigmoid_bce": (lambda: [Dense(4, "tanh"), Dense(2, "sigmoid")],
                         "binary_crossentropy", "binary", True),
    "swish_gelu_softmax_scce": (lambda: [Dense(5, "swish"), Dense(4, "gelu"), Dense(3, "softmax")],
                                "sparse_categorical_crossentropy", "sparse", True),
    "elu_scce_from_logits": (lambda: [Dense(4, "elu"), Dense(3)],
                             fastdense.losses.SparseCategoricalCrossentropy(from_logits=True),
                             "sparse", False),
    "selu_cce_from_logits_soft_labels": (
        lambda: [Dense(4, "selu"), Dense(3, use_bias=False)],
        fastdense.losses.CategoricalCrossentropy(from_logits=True), "soft", True),
    "softplus_bce_from_logits": (lambda: [Dense(4, "softplus"), Dense(2)],
                                 fastdense.losses.BinaryCrossentropy(from_logits=True), "binary",
                                 False),
    "softsign_sigmoid_cce_on_probabilities": (lambda: [Dense(4, "softsign"), Dense(3, "sigmoid")],
                                              "categorical_crossentropy", "soft", True),
    "leaky_softmax_bce_on_probabilities": (lambda: [Dense(4, "leaky_relu"), Dense(3, "softmax")],
                                           "binary_crossentropy", "binary", False),
    "hard_sigmoid_mse": (lambda: [Dense(4, "hard_sigmoid"), Dense(2)], "mse", "real", True),
    "sigmoid_mae": (lambda: [Dense(4, "sigmoid"), Dense(2)], "mae", "far", True),
    "activation_layers_softmax_cce": (
        lambda: [Dense(4), Activation("tanh"), Dense(3), Activation("softmax")],
        "categorical_crossentropy", "onehot", True),
    "regularized_mse": (
        lambda: [Dense(4, "relu", kernel_regularizer=L1L2(l1=0.01, l2=0.02),
                       bias_regularizer=L1L2(l1=0.03, l2=0.01)),
                 Dense(2, "exponential", kernel_regularizer=L2(0.05), bias_regularizer=L2(0.1))],
        "mse", "real", True),
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_parameter_gradients(arch):
    layers, loss, targets, weighted = ARCHITECTURES[arch]
    net = Net(layers(), loss, targets, weighted=weighted)
    if arch == "regularized_mse":  # the penalty really is part of the loss and its gradient
        assert np.count_nonzero(net.train_plan.reg) == 6
    _check(net, arch)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hidden_activation_gradients(activation):
    _check(Net([Dense(4, activation), Dense(2)], "mse", "real", seed=1), activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_output_activation_gradients(activation):
    # Not fused with any loss: the output activation's own backward pass runs.
    net = Net([Dense(4, "tanh"), Dense(3, activation)], "mse", "real", seed=2, weighted=True)
    assert not net.fused
    _check(net, activation)


def test_gradients_through_the_public_api():
    """train_on_batch (SGD, lr 1) against finite differences of model.evaluate."""
    net = Net([Dense(4, "gelu"), Dense(3, "softmax")], "categorical_crossentropy", "onehot",
              weighted=True)
    m = net.model
    before = m.get_weights()
    m.train_on_batch(net.X, net.Y, sample_weight=net.sw)
    analytic = [b - a for b, a in zip(before, m.get_weights())]
    m.set_weights(before)
    for k, w in enumerate(before):
        fd = np.empty_like(w)
        for idx in np.ndindex(w.shape):
            values = []
            for sign in (1, -1):
                ws = [x.copy() for x in before]
                ws[k][idx] += sign * EPS
                m.set_weights(ws)
                values.append(m.evaluate(net.X, net.Y, batch_size=N, verbose=0,
                                         sample_weight=net.sw))
            fd[idx] = (values[0] - values[1]) / (2 * EPS)
        _assert_gradient(analytic[k], fd, f"weight {k}")


@pytest.mark.parametrize("ops", [_kernels, _reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("act", ["ACT_GELU", "ACT_SOFTMAX", "ACT_TANH", "ACT_LINEAR"])
@pytest.mark.parametrize("bias", [True, False])
def test_dense_backward_gradients(ops, act, bias):
    """dX, dW, db of f(X, W, b) = sum(G * act(X @ W + b)) through the single kernels."""
    rng = np.random.default_rng(3)
    n, n_in, n_out = 5, 4, 3
    X, W = rng.normal(size=(n, n_in)), rng.normal(size=(n_in, n_out))
    b = rng.normal(size=n_out) if bias else np.empty(0)
    G = rng.normal(size=(n, n_out))

    def f(X, W, b):
        Z = np.empty((n, n_out))
        ops.dense_forward(X, W, b, K[act], Z)
        return np.sum(G * Z)

    Z, S = np.empty((n, n_out)), np.empty((n, n_out))
    ops.dense_forward(X, W, b, K[act], Z, S)
    dS = np.empty_like(S)
    ops.activation_backward(K[act], S, Z, G, dS)
    dW, db, dX = np.empty_like(W), np.empty_like(b), np.empty_like(X)
    ops.dense_backward(X, W, dS, dW, db, dX)
    args = [X, W, b]
    for k, analytic in enumerate([dX, dW, db]):
        fd = np.empty_like(analytic)
        for idx in np.ndindex(analytic.shape):
            vals = []
            for sign in (1, -1):
                a = [x.copy() for x in args]
                a[k][idx] += sign * EPS
                vals.append(f(*a))
            fd[idx] = (vals[0] - vals[1]) / (2 * EPS)
        _assert_gradient(analytic, fd, ["dX", "dW", "db"][k])


@pytest.mark.parametrize("simd", [True, "avx2", False], ids=["simd", "avx2", "nosimd"])
@pytest.mark.parametrize("arch", ["relu_softmax_cce", "swish_gelu_softmax_scce",
                                  "tanh_sigmoid_bce", "regularized_mse", "sigmoid_mae"])
def test_float32_gradients_match_float64(arch, simd):
    layers, loss, targets, weighted = ARCHITECTURES[arch]
    net64 = Net(layers(), loss, targets, weighted=weighted)
    fastdense.config.set_floatx("float32")
    net32 = Net(layers(), loss, targets, weighted=weighted)
    assert net32.dtype == np.float32 and net64.dtype == np.float64
    # The same numbers in both: float64 takes the float32-rounded values.
    net32.params[:] = net64.params
    net64.params[:] = net32.params
    for a in ("X", "Y", "sw"):
        setattr(net32, a, getattr(net64, a).astype(np.float32))
        setattr(net64, a, getattr(net32, a).astype(np.float64))
    g64 = net64.gradient()
    set_simd = getattr(_kernels, "_set_simd", None) or getattr(_kernels, "set_simd", lambda on: None)
    # the compiled module's own vector float32 kernels: the best, AVX2 at most, or off
    set_simd(simd is not False, simd is True)
    try:
        for fused_sgd in (True, False):
            g32 = net32.gradient(fused_sgd=fused_sgd)
            np.testing.assert_allclose(g32, g64, rtol=2e-3, atol=1e-4 * np.abs(g64).max())
        assert net32.loss(net32.params) == pytest.approx(net64.loss(net64.params), rel=1e-5)
    finally:
        set_simd(True)
