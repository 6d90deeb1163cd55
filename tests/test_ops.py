"""fastdense.ops against independent float64 NumPy formulas (Keras 3's definitions, written out
here) and against central finite differences; layouts, dtypes, `out=` buffers; every error."""
import math

import numpy as np
import pytest

import fastdense
from fastdense import losses, ops

DTYPES = [np.float32, np.float64]
from formulas import ACTIVATIONS as REF_ACT, sigmoid as _sigmoid, softmax as _softmax

ACTIVATIONS = sorted(REF_ACT)


def test_every_fastdense_activation_is_covered():
    assert set(ACTIVATIONS) == set(fastdense.activations._CODES)


def _away_from_kinks(z):
    """Moves values off relu/leaky_relu's 0 and hard_sigmoid's +-3, where derivatives jump."""
    z = np.array(z, dtype=np.float64)
    for kink in (0.0, 3.0, -3.0):
        near = np.abs(z - kink) < 0.05
        z[near] = kink + 0.1
    return z


def _data(n=5, n_in=7, units=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_in))
    w = rng.normal(size=(n_in, units)) / math.sqrt(n_in)
    b = rng.normal(size=units) * 0.1
    return x, w, b


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _central_diff(f, arrays, eps=1e-6):
    """d f / d array for each array (float64), by central differences."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            up = f()
            a[idx] = old - eps
            down = f()
            a[idx] = old
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def _assert_fd(analytic, numeric, dtype):
    if dtype == np.float64:
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)
    else:
        np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=2e-4)


# ---------------------------------------------------------------------------------------------
# dense
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_matches_numpy(activation, dtype):
    x, w, b = _data()
    expect = REF_ACT[activation](x.astype(dtype).astype(np.float64) @ w.astype(dtype).astype(np.float64)
                                 + b.astype(dtype).astype(np.float64))
    got = ops.dense(x.astype(dtype), w.astype(dtype), b.astype(dtype), activation=activation)
    assert got.dtype == dtype and got.shape == (5, 4)
    np.testing.assert_allclose(got, expect, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 784, 100), (3, 5, 1), (1, 1, 17),
                                   (fastdense._kernels.CODES["MAX_OWN_ROWS"] + 3, 9, 19)])
def test_dense_shapes_and_no_bias(shape, dtype):
    x, w, b = _data(*shape, seed=3)
    x, w = x.astype(dtype), w.astype(dtype)
    ref = x.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(ops.dense(x, w), ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(ops.dense(x, w, b.astype(dtype), "sigmoid"), _sigmoid(ref + b),
                               rtol=1e-4, atol=1e-5 if dtype == np.float32 else 1e-12)


def test_dense_accepts_activation_functions_and_none():
    x, w, b = _data()
    for act in (fastdense.activations.relu, fastdense.activations.get("relu")):
        np.testing.assert_allclose(ops.dense(x, w, b, act), np.maximum(x @ w + b, 0), rtol=1e-12)
    np.testing.assert_allclose(ops.dense(x, w, b, None), x @ w + b, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_grad_matches_central_differences(activation, dtype):
    x, w, b = _data(n=3, n_in=4, units=3, seed=1)
    x = _away_from_kinks(x)
    g = np.random.default_rng(2).normal(size=(3, 3))
    ref = REF_ACT[activation]
    # the pre-activation must stay away from the kinks too
    s = x @ w + b
    b = b + np.where(np.abs(s).min(0) < 0.05, 0.2, 0.0)
    numeric = _central_diff(lambda: float(np.sum(g * ref(x @ w + b))), [x, w, b])
    cast = [a.astype(dtype) for a in (x, w, b, g)]
    dx, dw, db = ops.dense_grad(*cast[:3], cast[3], activation=activation)
    for analytic, num in zip((dx, dw, db), numeric):
        assert analytic.dtype == dtype and analytic.shape == num.shape
        _assert_fd(analytic, num, dtype)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_grad_with_given_outputs_and_without_bias(activation):
    x, w, b = _data(seed=4)
    g = np.random.default_rng(5).normal(size=(5, 4))
    plain = ops.dense_grad(x, w, b, g, activation)
    given = ops.dense_grad(x, w, b, g, activation, outputs=REF_ACT[activation](x @ w + b))
    for a, c in zip(plain, given):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-12)
    dx, dw, db = ops.dense_grad(x, w, None, g, activation)
    assert db is None
    s = x @ w
    numeric = _central_diff(lambda: float(np.sum(g * REF_ACT[activation](x @ w))), [w])[0]
    if activation not in ("relu", "leaky_relu", "hard_sigmoid") or np.abs(s).min() > 0.05:
        _assert_fd(dw, numeric, np.float64)


def test_dense_grad_softmax_is_the_full_jacobian_vector_product():
    x, w, b = _data(n=2, n_in=3, units=4, seed=6)
    g = np.array([[1.0, 0, 0, 0], [0, 0, 2.0, -1]])
    p = _softmax(x @ w + b)
    # J^T g for softmax, row by row: J = diag(p) - p p^T
    d = np.stack([(np.diag(pi) - np.outer(pi, pi)) @ gi for pi, gi in zip(p, g)])
    dx, dw, db = ops.dense_grad(x, w, b, g, "softmax")
    np.testing.assert_allclose(db, d.sum(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dw, x.T @ d, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dx, d @ w.T, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# activation, activation_grad
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_matches_numpy_any_shape(activation, dtype):
    z = np.random.default_rng(7).normal(size=(2, 3, 5)) * 2
    got = ops.activation(activation, z.astype(dtype))
    assert got.dtype == dtype and got.shape == z.shape
    np.testing.assert_allclose(got, REF_ACT[activation](z.astype(dtype).astype(np.float64)),
                               **_tol(dtype))
    v = ops.activation(activation, z[0, 0].astype(dtype))  # 1-D: softmax over the vector
    np.testing.assert_allclose(v, REF_ACT[activation](z[0, 0].astype(dtype).astype(np.float64)),
                               **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_grad_matches_central_differences(activation, dtype):
    rng = np.random.default_rng(8)
    z = _away_from_kinks(rng.normal(size=(3, 4)) * 2)
    g = rng.normal(size=(3, 4))
    numeric = _central_diff(lambda: float(np.sum(g * REF_ACT[activation](z))), [z])[0]
    got = ops.activation_grad(activation, z.astype(dtype), g.astype(dtype))
    assert got.dtype == dtype
    _assert_fd(got, numeric, dtype)


def test_activation_out_and_in_place():
    z = np.random.default_rng(9).normal(size=(4, 3))
    out = np.empty_like(z)
    assert ops.activation("tanh", z, out=out) is out
    np.testing.assert_allclose(out, np.tanh(z), rtol=1e-12)
    w = z.copy()
    assert ops.activation("relu", w, out=w) is w
    np.testing.assert_array_equal(w, np.maximum(z, 0))
    dz = np.empty_like(z)
    assert ops.activation_grad("tanh", z, np.ones_like(z), out=dz) is dz
    np.testing.assert_allclose(dz, 1 - np.tanh(z) ** 2, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
EPS = 1e-7


def _log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _ref_per_sample(kind, y, p, from_logits):
    if kind == "mse":
        return ((p - y) ** 2).mean(-1)
    if kind == "mae":
        return np.abs(p - y).mean(-1)
    if kind == "bce":
        if from_logits:
            return (np.maximum(p, 0) - p * y + np.log1p(np.exp(-np.abs(p)))).mean(-1)
        q = np.clip(p, EPS, 1 - EPS)
        return -(y * np.log(q) + (1 - y) * np.log(1 - q)).mean(-1)
    if kind in ("cce", "scce"):
        if kind == "scce":
            y = np.eye(p.shape[1])[y.astype(int).reshape(-1)]
        if from_logits:
            return -(y * _log_softmax(p)).sum(-1)
        q = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
        return -(y * np.log(q)).sum(-1)
    raise AssertionError(kind)


LOSSES = [("mse", "mean_squared_error", False), ("mae", "mean_absolute_error", False),
          ("bce", "binary_crossentropy", False), ("bce", "binary_crossentropy", True),
          ("cce", "categorical_crossentropy", False), ("cce", "categorical_crossentropy", True),
          ("scce", "sparse_categorical_crossentropy", False),
          ("scce", "sparse_categorical_crossentropy", True)]


def _loss_data(kind, from_logits, n=6, m=4, seed=10):
    rng = np.random.default_rng(seed)
    if from_logits or kind in ("mse", "mae"):
        p = rng.normal(size=(n, m))
    else:
        p = rng.uniform(0.05, 0.95, size=(n, m))  # away from the clip's edges
    if kind == "scce":
        y = rng.integers(0, m, n)
    elif kind == "cce":
        y = np.eye(m)[rng.integers(0, m, n)]
    elif kind == "bce":
        y = rng.integers(0, 2, (n, m)).astype(np.float64)
    else:
        y = rng.normal(size=(n, m))
    return y, p, rng.uniform(0.5, 2.0, n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("kind,name,from_logits", LOSSES)
def test_loss_and_gradient_match_numpy_and_central_differences(kind, name, from_logits, weighted,
                                                               dtype):
    y, p, sw = _loss_data(kind, from_logits)
    w = sw if weighted else np.ones(len(p))
    n = len(p)

    def ref():
        return float(np.sum(w * _ref_per_sample(kind, y, p, from_logits)) / n)

    expect = ref()
    numeric = _central_diff(ref, [p])[0]
    args = (name, y, p.astype(dtype))
    kwargs = dict(sample_weight=sw if weighted else None, from_logits=from_logits)
    value = ops.loss(*args, **kwargs)
    value2, grad = ops.loss_grad(*args, **kwargs)
    assert isinstance(value, float) and value == value2
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx(expect, rel=rtol, abs=1e-12)
    assert grad.dtype == dtype and grad.shape == p.shape
    _assert_fd(grad, numeric, dtype)


def test_loss_objects_label_smoothing_and_one_column_predictions():
    y, p, _ = _loss_data("cce", True)
    obj = losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    ys = y * 0.9 + 0.1 / y.shape[1]
    assert ops.loss(obj, y, p) == pytest.approx(float(np.mean(-(ys * _log_softmax(p)).sum(-1))),
                                                rel=1e-12)
    value, grad = ops.loss_grad(obj, y, p)
    np.testing.assert_allclose(grad, (_softmax(p) - ys) / len(p), rtol=1e-10, atol=1e-15)
    # (n,) predictions with (n,) targets: one value per sample; the gradient keeps the shape
    t = np.arange(5.0)
    q = t + np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    value, grad = ops.loss_grad("mse", t, q)
    assert value == pytest.approx(np.mean((q - t) ** 2)) and grad.shape == (5,)
    np.testing.assert_allclose(grad, 2 * (q - t) / 5, rtol=1e-12)
    out = np.empty(5)
    assert ops.loss_grad(losses.MeanSquaredError(), t, q, out=out)[1] is out


# ---------------------------------------------------------------------------------------------
# layouts, dtypes, inputs left alone
# ---------------------------------------------------------------------------------------------
def _layouts(a):
    """The same values as Fortran order, a strided view, big-endian, read-only, negative strides."""
    f = np.asfortranarray(a)
    strided = np.repeat(a, 2, axis=-1)[..., ::2]
    big = a.astype(a.dtype.newbyteorder(">"))
    ro = a.copy()
    ro.flags.writeable = False
    rev = a[::-1].copy()[::-1]
    return [f, strided, big, ro, rev]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_memory_layout_gives_the_contiguous_result_and_is_left_alone(dtype):
    x, w, b = (a.astype(dtype) for a in _data(seed=11))
    g = np.random.default_rng(12).normal(size=(5, 4)).astype(dtype)
    y = np.eye(4, dtype=dtype)[[0, 1, 2, 3, 0]]
    base = (ops.dense(x, w, b, "tanh"), ops.dense_grad(x, w, b, g, "tanh"),
            ops.activation_grad("softmax", x, x), ops.loss_grad("categorical_crossentropy", y, g,
                                                                from_logits=True))
    for lx, lw, lb, lg, ly in zip(_layouts(x), _layouts(w), _layouts(b), _layouts(g), _layouts(y)):
        before = [a.copy() for a in (lx, lw, lb, lg, ly)]
        got = (ops.dense(lx, lw, lb, "tanh"), ops.dense_grad(lx, lw, lb, lg, "tanh"),
               ops.activation_grad("softmax", lx, lx),
               ops.loss_grad("categorical_crossentropy", ly, lg, from_logits=True))
        np.testing.assert_array_equal(got[0], base[0])
        for a, c in zip(got[1], base[1]):
            np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(got[2], base[2])
        assert got[3][0] == base[3][0]
        np.testing.assert_array_equal(got[3][1], base[3][1])
        for a, c in zip((lx, lw, lb, lg, ly), before):
            np.testing.assert_array_equal(a, c)
            assert a.dtype == c.dtype


def test_result_dtype_follows_the_inputs():
    x, w, b = _data()
    assert ops.dense(x.astype(np.float32), w, b.astype(np.float32)).dtype == np.float64
    assert ops.dense(x.astype(np.float32), w.astype(np.float32)).dtype == np.float32
    assert ops.dense(x.astype(np.float16), w.astype(np.float32)).dtype == np.float32
    # integer images into float32 weights: cast, as models do
    xi = np.arange(14, dtype=np.uint8).reshape(2, 7)
    np.testing.assert_allclose(ops.dense(xi, w.astype(np.float32)),
                               xi.astype(np.float64) @ w.astype(np.float32), rtol=1e-5)
    assert ops.activation("relu", np.arange(3)).dtype == np.float32  # floatx
    assert ops.loss_grad("mse", np.ones(3, np.float32), np.zeros(3, np.float32))[1].dtype == np.float32


def test_out_buffers_are_used_and_results_match():
    x, w, b = _data()
    out = np.empty((5, 4))
    assert ops.dense(x, w, b, "relu", out=out) is out
    np.testing.assert_allclose(out, np.maximum(x @ w + b, 0), rtol=1e-12)


def test_dense_grad_out_buffers():
    x, w, b = _data()
    g = np.random.default_rng(13).normal(size=(5, 4))
    ref = ops.dense_grad(x, w, b, g, "sigmoid")
    bufs = (np.empty_like(x), np.empty_like(w), np.empty_like(b))
    got = ops.dense_grad(x, w, b, g, "sigmoid", out=bufs)
    assert all(a is c for a, c in zip(got, bufs))
    for a, c in zip(got, ref):
        np.testing.assert_array_equal(a, c)
    dx, dw, db = ops.dense_grad(x, w, None, g, out=[None, bufs[1], None])
    assert dw is bufs[1] and db is None
    np.testing.assert_allclose(dw, x.T @ g, rtol=1e-12)


def test_nan_propagates_through_dense_as_in_numpy():
    x, w, b = _data()
    x[0, 0] = np.nan
    z = ops.dense(x, w, b)
    assert np.isnan(z[0]).all() and np.isfinite(z[1:]).all()


# ---------------------------------------------------------------------------------------------
# errors: one per message
# ---------------------------------------------------------------------------------------------
X, W, B = _data()
G = np.ones((5, 4))


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


DENSE_ERRORS = [
    (lambda: ops.dense(X[0], W), ValueError, r"`x` must be a 2-D array .* Received: x.shape=\(7,\)"),
    (lambda: ops.dense(X[None], W), ValueError, r"`x` must be a 2-D .*x.shape=\(1, 5, 7\)"),
    (lambda: ops.dense(X[:0], W), ValueError, r"`x` is empty.*x.shape=\(0, 7\)"),
    (lambda: ops.dense(X, W[:6]), ValueError, r"`kernel` must have shape \(input_dim, units\) .*"
                                              r"Received: kernel.shape=\(6, 4\), x.shape=\(5, 7\)"),
    (lambda: ops.dense(X, W[0]), ValueError, r"`kernel` must be a 2-D array .*kernel.shape=\(4,\)"),
    (lambda: ops.dense(X, W, B[:3]), ValueError, r"`bias` must have shape \(units,\) = \(4,\).*"
                                                 r"Received: bias.shape=\(3,\)"),
    (lambda: ops.dense(X, W, B[None]), ValueError, r"Received: bias.shape=\(1, 4\)"),
    (lambda: ops.dense(X.astype(str), W), TypeError, r"`x` must hold real numbers.*x.dtype=<U"),
    (lambda: ops.dense(X, W.astype(complex)), TypeError, r"`kernel` must hold real numbers.*complex"),
    (lambda: ops.dense(X, [[1, 2], "a"]), ValueError, r"`kernel` could not be converted"),
    (lambda: ops.dense(X, None), TypeError, r"`kernel` must be array-like.*Received: kernel=None"),
    (lambda: ops.dense(X.astype(np.longdouble), W), TypeError, r"float32 or float64.*float128"),
    (lambda: ops.dense(X, W, B, "relux"), ValueError, r"Unknown activation.*Did you mean 'relu'"),
    (lambda: ops.dense(X, W, B, lambda z: z), ValueError, r"Could not interpret activation"),
    (lambda: ops.dense(X, W, B, out=np.empty((5, 4), np.float32)), TypeError,
     r"`out` must have dtype float64.*Received: out.dtype=float32"),
    (lambda: ops.dense(X, W, B, out=np.empty((5, 3))), ValueError,
     r"`out` must have shape \(5, 4\). Received: out.shape=\(5, 3\)"),
    (lambda: ops.dense(X, W, B, out=np.empty((4, 5)).T), ValueError, r"writable C-contiguous"),
    (lambda: ops.dense(X, W, B, out=_readonly(np.empty((5, 4)))), ValueError, r"writeable=False"),
    (lambda: ops.dense(X, W, B, out=[[0.0] * 4] * 5), TypeError, r"`out` must be a NumPy array"),
]
GRAD_ERRORS = [
    (lambda: ops.dense_grad(X, W, B, G[:4]), ValueError,
     r"`outputs_grad` must have the layer output's shape .* = \(5, 4\). "
     r"Received: outputs_grad.shape=\(4, 4\)"),
    (lambda: ops.dense_grad(X, W, B, G, "relu", outputs=G[:, :3]), ValueError,
     r"Received: outputs.shape=\(5, 3\)"),
    (lambda: ops.dense_grad(X, W, B, None), TypeError, r"`outputs_grad` must be array-like"),
    (lambda: ops.dense_grad(X, W[:3], B, G), ValueError, r"Received: kernel.shape=\(3, 4\)"),
    (lambda: ops.dense_grad(X, W, B, G, out=np.empty((5, 7))), ValueError,
     r"`out` must be a tuple \(x_grad, kernel_grad, bias_grad\).*Received: out of type ndarray"),
    (lambda: ops.dense_grad(X, W, None, G, out=(None, None, np.empty(4))), ValueError,
     r"`out\[2\]` must be None when `bias` is None"),
    (lambda: ops.dense_grad(X, W, B, G, out=(None, np.empty((7, 3)), None)), ValueError,
     r"`out\[1\]` must have shape \(7, 4\). Received: out\[1\].shape=\(7, 3\)"),
    (lambda: ops.dense_grad(X, W, B, G, out=(np.empty((5, 7), np.float32), None, None)),
     TypeError, r"`out\[0\]` must have dtype float64"),
    (lambda: ops.dense_grad(X, W, B, G, out=(None, W, None)), ValueError,
     r"`out\[1\]` must not share memory with the inputs. Received: out\[1\] overlapping `kernel`"),
    (lambda: ops.activation("relu", np.empty((0, 3))), ValueError, r"`z` is empty.*\(0, 3\)"),
    (lambda: ops.activation("nope", X), ValueError, r"Unknown activation"),
    (lambda: ops.activation("relu", X, out=X[:, :3].copy()), ValueError, r"`out` must have shape"),
    (lambda: ops.activation_grad("relu", X, G), ValueError,
     r"`outputs_grad` must have the shape of `z`, \(5, 7\). Received: outputs_grad.shape=\(5, 4\)"),
    (lambda: ops.activation_grad("relu", X, X, out=X), ValueError,
     r"`out` must not share memory with the inputs. Received: out overlapping `z`"),
]
LOSS_ERRORS = [
    (lambda: ops.loss("msee", G, G), ValueError, r"Unknown loss.*Did you mean 'mse'"),
    (lambda: ops.loss("mse", G, G[None]), ValueError, r"`y_pred` must be 1-D .* or 2-D.*\(1, 5, 4\)"),
    (lambda: ops.loss("mse", G, G[:0]), ValueError, r"`y_pred` is empty"),
    (lambda: ops.loss("mse", G[:4], G), ValueError, r"y_pred sizes: 5, y_true sizes: 4"),
    (lambda: ops.loss("mse", G[:, :3], G), ValueError, r"`y_true` must have shape \(n, 4\)"),
    (lambda: ops.loss("mse", G, G, sample_weight=np.ones(4)), ValueError,
     r"y_pred sizes: 5, sample_weight sizes: 4"),
    (lambda: ops.loss("mse", G, G, sample_weight=np.ones((5, 2))), ValueError,
     r"`sample_weight` must be 1-D.*\(5, 2\)"),
    (lambda: ops.loss("mse", G, G, sample_weight=np.full(5, np.nan)), ValueError,
     r"sample_weight contains NaN"),
    (lambda: ops.loss("sparse_categorical_crossentropy", np.array([0, 1, 2, 3, 4]), G), ValueError,
     r"class label outside \[0, 4\).*Received: label 4"),
    (lambda: ops.loss("sparse_categorical_crossentropy", np.array([0, 1, 2, 3, 0.5]), G),
     ValueError, r"must hold integer class labels"),
    (lambda: ops.loss("categorical_crossentropy", np.array([0, 1, 2, 3, 0]), G), ValueError,
     r"expects one-hot targets.*sparse_categorical_crossentropy"),
    (lambda: ops.loss("mse", G, G, from_logits=True), ValueError,
     r"`from_logits` applies to the crossentropy losses only"),
    (lambda: ops.loss("binary_crossentropy", G, G, from_logits=1), TypeError,
     r"`from_logits` must be True or False. Received: from_logits=1"),
    (lambda: ops.loss(losses.BinaryCrossentropy(), G, G, from_logits=True), ValueError,
     r"conflicts with the loss object's own setting"),
    (lambda: ops.loss("mse", G, np.full((5, 4), np.inf)), ValueError, r"y_pred contains Inf"),
    (lambda: ops.loss_grad("mse", G, G, out=np.empty((5, 4), np.float32)), TypeError,
     r"`out` must have dtype float64"),
    # a loss object called directly runs the same checks (a short sample_weight was read past)
    (lambda: losses.MeanSquaredError()(G, G, sample_weight=[1.0]), ValueError,
     r"y_pred sizes: 5, sample_weight sizes: 1"),
]


@pytest.mark.parametrize("call,exc,match", DENSE_ERRORS + GRAD_ERRORS + LOSS_ERRORS)
def test_bad_arguments_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_out_overlapping_an_input_is_refused():
    x = np.zeros((4, 4))
    with pytest.raises(ValueError, match=r"`out` must not share memory with the inputs. "
                                         r"Received: out overlapping `x`"):
        ops.dense(x, np.eye(4), out=x)
    big = np.empty(100)
    with pytest.raises(ValueError, match=r"Received: out\[1\] overlapping `out\[0\]`"):
        ops.dense_grad(X, W, B, G, out=(big[:35].reshape(5, 7), big[30:58].reshape(7, 4), None))
