"""The compiled kernels against their plain-NumPy twin, `fastdense._reference` (thinc's pattern).

Tests taking the `ops` fixture pin behaviour (known values, kinks, stability) on both modules;
the `test_*_matches_reference` tests run the same inputs through both and compare the outputs.
"""
import contextlib
import inspect
import math
import warnings

import numpy as np
import pytest

import fastdense
from fastdense import _kernels, _reference
from fastdense.layers import (Activation, BatchNormalization, Dense, Dropout, GaussianDropout,
                              GaussianNoise, LayerNormalization, Normalization, Rescaling)
from fastdense.regularizers import L1L2, L2

K = _kernels.CODES
PUBLIC = ["dense_forward", "activation_forward", "activation_backward", "dense_backward",
          "loss_grad", "metric_update", "optimizer_step", "train_steps", "forward",
          "evaluate_steps", "all_finite", "packed_gemm"]
# Not single kernels, so no twin: run-time switches, and fit's engine (Trainer; its twin is
# train_steps, which runs one).
CONTROLS = {"set_simd", "simd_enabled", "simd_level", "Trainer"}
ACTS = sorted((k for k in K if k.startswith("ACT_")), key=K.get)
LOSSES = sorted((k for k in K if k.startswith("LOSS_")), key=K.get)
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
SHAPES = [(1, 1), (1, 6), (5, 1), (7, 13), (32, 10)]


@pytest.fixture(params=[_kernels, _reference], ids=["kernels", "reference"])
def ops(request):
    return request.param


@contextlib.contextmanager
def simd(enabled):
    """The compiled module's own vector float32 paths: True the best the CPU has, "avx2" AVX2
    at most, False the portable C kernels."""
    set_simd = getattr(_kernels, "_set_simd", None) or getattr(_kernels, "set_simd", None)
    if set_simd is None:
        yield
        return
    set_simd(enabled is not False, enabled is True)
    try:
        yield
    finally:
        set_simd(True)  # the default: the best the CPU has


@pytest.fixture(params=[(np.float32, True), (np.float32, "avx2"), (np.float32, False),
                        (np.float64, True)],
                ids=["float32", "float32-avx2", "float32-nosimd", "float64"])
def dtype(request):
    """Each float type; float32 with and without the SIMD kernels (which only float32 has)."""
    dt, enabled = request.param
    with simd(enabled):
        yield dt


@pytest.fixture
def strict_fp():
    """Any floating-point warning (overflow, invalid, divide) is an error inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            yield


def _close(actual, desired, dtype, **kw):
    np.testing.assert_allclose(actual, desired, **{**TOL[dtype], **kw})


def _arr(x, dtype):
    return np.ascontiguousarray(x, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# The twin has the same interface.
# ---------------------------------------------------------------------------------------------
def _signature(func):
    """(name, kind, default) of every parameter, for a Python or a Cython function."""
    try:
        sig = inspect.signature(func)
    except (ValueError, TypeError):
        text = func.__text_signature__ or func.__doc__.splitlines()[0]
        sig = inspect.Signature.from_callable(eval(f"lambda {text[text.index('(') + 1:text.rindex(')')]}: 0"))
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_public_functions_are_the_same():
    compiled = {n for n in dir(_kernels) if not n.startswith("_") and callable(getattr(_kernels, n))}
    assert compiled - CONTROLS == set(PUBLIC)
    for name in PUBLIC:
        assert callable(getattr(_reference, name)), name


@pytest.mark.parametrize("name", PUBLIC)
def test_signatures_match(name):
    compiled = _signature(getattr(_kernels, name))
    assert len(compiled) >= 1 and "args" not in compiled, compiled  # a real signature
    assert _signature(getattr(_reference, name)) == compiled


def test_codes_are_shared():
    assert _reference.CODES is _kernels.CODES
    # codes 0 .. N-1, one per activation of the table (tests/test_kinds.py checks the table)
    assert sorted(K[a] for a in ACTS) == list(range(K["N_ACTIVATIONS"]))
    assert tuple(_reference.ACT_NEEDS_PRE) == tuple(_kernels.ACT_NEEDS_PRE)


# ---------------------------------------------------------------------------------------------
# Activations.
# ---------------------------------------------------------------------------------------------
def _act_input(shape, dtype, seed=0):
    x = np.random.default_rng(seed).normal(0, 3, shape)
    special = [0.0, 3.0, -3.0, 1e-3, -6.5]
    x.flat[::3] = np.resize(special, x.flat[::3].shape)
    return _arr(x, dtype)


@pytest.mark.parametrize("act", ACTS)
def test_activation_forward_matches_reference(act, dtype):
    for shape in SHAPES:
        x = _act_input(shape, dtype)
        zk, zr = x.copy(), x.copy()
        _kernels.activation_forward(K[act], zk)
        _reference.activation_forward(K[act], zr)
        assert zk.dtype == dtype
        _close(zk, zr, dtype, err_msg=str(shape))


@pytest.mark.parametrize("act", ACTS)
def test_activation_backward_matches_reference(act, dtype):
    for shape in SHAPES:
        S = _act_input(shape, dtype)
        Z = S.copy()
        _reference.activation_forward(K[act], Z)
        dZ = _arr(np.random.default_rng(1).normal(size=shape), dtype)
        dk, dr = np.full_like(S, np.nan), np.full_like(S, np.nan)
        _kernels.activation_backward(K[act], S, Z, dZ, dk)
        _reference.activation_backward(K[act], S, Z, dZ, dr)
        _close(dk, dr, dtype, err_msg=str(shape))


@pytest.mark.parametrize("act", ACTS)
def test_activation_backward_in_place(ops, act):
    # train_steps passes the same buffer as dZ and dS.
    S = _act_input((4, 5), np.float64)
    Z = S.copy()
    ops.activation_forward(K[act], Z)
    dZ = np.random.default_rng(2).normal(size=S.shape)
    expected = np.empty_like(S)
    ops.activation_backward(K[act], S, Z, dZ, expected)
    ops.activation_backward(K[act], S, Z, dZ, dZ)
    np.testing.assert_array_equal(dZ, expected)


@pytest.mark.parametrize("act", ACTS)
def test_activation_backward_is_the_derivative(ops, act):
    """Central differences of sum(dZ * act(S)) in float64, away from the kinks."""
    rng = np.random.default_rng(3)
    S = rng.uniform(0.1, 2.5, (3, 4)) * rng.choice([-1, 1], (3, 4))
    dZ = rng.normal(size=S.shape)

    def f(s):
        z = s.copy()
        ops.activation_forward(K[act], z)
        return np.sum(dZ * z)

    Z = S.copy()
    ops.activation_forward(K[act], Z)
    dS = np.empty_like(S)
    ops.activation_backward(K[act], S, Z, dZ, dS)
    eps = 1e-6
    fd = np.empty_like(S)
    for idx in np.ndindex(S.shape):
        e = np.zeros_like(S)
        e[idx] = eps
        fd[idx] = (f(S + e) - f(S - e)) / (2 * eps)
    np.testing.assert_allclose(dS, fd, rtol=1e-6, atol=1e-8)


def _sig(x):
    return 1 / (1 + math.exp(-x))


# Keras 3's definitions, scalar by scalar with the math module.
KNOWN = {
    "ACT_LINEAR": lambda x: x,
    "ACT_SIGMOID": _sig,
    "ACT_TANH": math.tanh,
    "ACT_RELU": lambda x: max(x, 0.0),
    "ACT_ELU": lambda x: x if x > 0 else math.exp(x) - 1,
    "ACT_SELU": lambda x: 1.0507009873554805 * (x if x > 0 else 1.6732632423543772 * (math.exp(x) - 1)),
    "ACT_SOFTPLUS": lambda x: math.log(1 + math.exp(x)),
    "ACT_SOFTSIGN": lambda x: x / (1 + abs(x)),
    "ACT_SWISH": lambda x: x * _sig(x),
    "ACT_GELU": lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))),  # exact, not tanh approx.
    "ACT_LEAKY_RELU": lambda x: x if x > 0 else 0.2 * x,
    "ACT_HARD_SIGMOID": lambda x: min(max(x + 3, 0.0), 6.0) / 6,  # Keras 3, not clip(0.2x+0.5)
    "ACT_EXPONENTIAL": math.exp,
}


@pytest.mark.parametrize("act", sorted(KNOWN))
def test_activation_known_values(ops, act):
    x = np.array([[-4.0, -1.5, -0.5, 0.0, 0.5, 2.0, 4.0]])
    z = x.copy()
    ops.activation_forward(K[act], z)
    np.testing.assert_allclose(z[0], [KNOWN[act](v) for v in x[0]], rtol=1e-13, atol=1e-15)


def test_softmax_known_values(ops):
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0 + math.log(2)]])
    ops.activation_forward(K["ACT_SOFTMAX"], z)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(z, [e / e.sum(), [1 / 3] * 3, [0.25, 0.25, 0.5]], rtol=1e-14)


def test_activation_kinks(ops, dtype):
    def both(act, s):
        S = _arr([s], dtype)
        Z = S.copy()
        ops.activation_forward(K[act], Z)
        dS = np.empty_like(S)
        ops.activation_backward(K[act], S, Z, np.ones_like(S), dS)
        return Z[0], dS[0]

    z, d = both("ACT_RELU", [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(z, [0, 0, 1])
    np.testing.assert_array_equal(d, [0, 0, 1])  # relu'(0) = 0
    z, d = both("ACT_LEAKY_RELU", [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(z, [-0.2, 0, 1], rtol=1e-7)
    np.testing.assert_allclose(d, [0.2, 0.2, 1], rtol=1e-7)  # TF: slope at 0
    z, d = both("ACT_HARD_SIGMOID", [-3.5, -3.0, 0.0, 2.9, 3.0, 3.5])
    np.testing.assert_allclose(z, [0, 0, 0.5, 5.9 / 6, 1, 1], rtol=1e-6)
    assert z[1] == 0 and z[4] == 1
    np.testing.assert_allclose(d, [0, 0, 1 / 6, 1 / 6, 0, 0], rtol=1e-6)  # 0 at +-3
    z, d = both("ACT_ELU", [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(d, [math.exp(-1), 1, 1], rtol=1e-6)


def test_sigmoid_saturates_exactly(ops, dtype, strict_fp):
    # 37 elements: whole SIMD vectors and a tail.
    S = _arr([np.resize([-1e4, 1e4, -1e3, 1e3, 0.0], 37)], dtype)
    Z = S.copy()
    ops.activation_forward(K["ACT_SIGMOID"], Z)
    np.testing.assert_array_equal(Z, [np.resize([0, 1, 0, 1, 0.5], 37)])
    dS = np.empty_like(S)
    ops.activation_backward(K["ACT_SIGMOID"], S, Z, np.ones_like(S), dS)
    np.testing.assert_array_equal(dS, [np.resize([0, 0, 0, 0, 0.25], 37)])


@pytest.mark.parametrize("act", [a for a in ACTS if a != "ACT_EXPONENTIAL"])
def test_large_inputs_stay_finite(ops, act, dtype, strict_fp):
    S = _arr([np.resize([-1e4, -50.0, 50.0, 1e4, 0.0], 37)], dtype)
    Z = S.copy()
    ops.activation_forward(K[act], Z)
    dS = np.empty_like(S)
    ops.activation_backward(K[act], S, Z, np.ones_like(S), dS)
    assert np.isfinite(Z).all() and np.isfinite(dS).all(), (Z, dS)


def test_softmax_huge_logits(ops, dtype, strict_fp):
    Z = _arr([[1e4, 0.0, -1e4], [1e30, 1e30, -1e30], [-1e4, -1e4, -1e4]], dtype)
    ops.activation_forward(K["ACT_SOFTMAX"], Z)
    np.testing.assert_allclose(Z, [[1, 0, 0], [0.5, 0.5, 0], [1 / 3] * 3], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Dense layer.
# ---------------------------------------------------------------------------------------------
# 300 rows: above the compiled module's small-batch GEMM threshold (256), so BLAS runs.
DENSE_SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 4), (7, 13, 5), (32, 20, 10), (300, 9, 17)]


def _dense_inputs(n, n_in, n_out, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (_arr(rng.normal(size=(n, n_in)), dtype), _arr(rng.normal(size=(n_in, n_out)), dtype),
            _arr(rng.normal(size=n_out), dtype))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ["ACT_LINEAR", "ACT_RELU", "ACT_SOFTMAX", "ACT_GELU"])
def test_dense_forward_matches_reference(act, bias, dtype):
    for n, n_in, n_out in DENSE_SHAPES:
        X, W, b = _dense_inputs(n, n_in, n_out, dtype)
        if not bias:
            b = np.empty(0, dtype)
        out = {}
        for mod in (_kernels, _reference):
            Z, S = np.full((n, n_out), np.nan, dtype), np.full((n, n_out), np.nan, dtype)
            mod.dense_forward(X, W, b, K[act], Z, S)
            Z2 = np.full((n, n_out), np.nan, dtype)
            mod.dense_forward(X, W, b, K[act], Z2)  # S omitted
            np.testing.assert_array_equal(Z2, Z)
            out[mod] = Z, S
        for k in range(2):
            _close(out[_kernels][k], out[_reference][k], dtype, err_msg=str((n, n_in, n_out)))


def test_dense_forward_is_x_w_plus_b(ops, dtype):
    X, W, b = _dense_inputs(7, 13, 5, dtype)
    Z, S = np.empty((7, 5), dtype), np.empty((7, 5), dtype)
    ops.dense_forward(X, W, b, K["ACT_RELU"], Z, S)
    expected = X.astype(np.float64) @ W.astype(np.float64) + b
    _close(S, expected, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    np.testing.assert_array_equal(Z, np.maximum(S, 0))
    ops.dense_forward(X, W, np.empty(0, dtype), K["ACT_LINEAR"], Z)
    _close(Z, expected - b, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("with_db", [True, False])
@pytest.mark.parametrize("with_dx", [True, False])
def test_dense_backward_matches_reference(with_dx, with_db, dtype):
    for n, n_in, n_out in DENSE_SHAPES:
        X, W, _ = _dense_inputs(n, n_in, n_out, dtype)
        dS = _arr(np.random.default_rng(5).normal(size=(n, n_out)), dtype)
        out = {}
        for mod in (_kernels, _reference):
            dW = np.full((n_in, n_out), np.nan, dtype)
            db = np.full(n_out, np.nan, dtype) if with_db else np.empty(0, dtype)
            dX = np.full((n, n_in), np.nan, dtype) if with_dx else None
            mod.dense_backward(X, W, dS, dW, db, dX)
            out[mod] = dW, db, dX
        for a, b in zip(out[_kernels], out[_reference]):
            if a is not None:
                _close(a, b, dtype, err_msg=str((n, n_in, n_out)))
        dW, db, dX = out[_kernels]
        _close(dW, X.astype(np.float64).T @ dS, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12,
               atol=1e-5)
        if with_db:
            _close(db, dS.astype(np.float64).sum(0), dtype, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The packed GEMM (products of training batches over MAX_OWN_ROWS rows).
# ---------------------------------------------------------------------------------------------
# (n, k, m): one element; edges of the 12 x 32 (AVX-512) and 6 x 16 tiles in rows and columns;
# a depth shorter than the prefetch distance; a 10-wide last layer; a batch over the row limit
PACKED_SHAPES = [(1, 1, 1), (13, 7, 33), (25, 300, 17), (300, 5, 70), (257, 64, 10), (40, 1, 48)]


def _packed_operands(n, k, m, ta, tb, seed=0):
    rng = np.random.default_rng(seed)
    A = _arr(rng.normal(size=(k, n) if ta else (n, k)), np.float32)
    B = _arr(rng.normal(size=(m, k) if tb else (k, m)), np.float32)
    C = _arr(rng.normal(size=(n, m)), np.float32)
    return A, B, C


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("alpha, beta, bias, relu", [(1.0, 0.0, False, False),
                                                     (-0.25, 1.0, False, False),
                                                     (2.0, 0.5, True, False),
                                                     (1.0, 0.0, True, True)])
def test_packed_gemm_matches_float64(ta, tb, alpha, beta, bias, relu):
    for n, k, m in PACKED_SHAPES:
        A, B, C = _packed_operands(n, k, m, ta, tb)
        b = _arr(np.random.default_rng(m).normal(size=m), np.float32) if bias else None
        expected = C.copy()
        _reference.packed_gemm(A, B, expected, ta, tb, alpha, beta, b, relu)
        for threads in (1, 3):
            out = C.copy()
            _kernels.packed_gemm(A, B, out, ta, tb, alpha, beta, b, relu, threads=threads)
            # float32 chains of k FMAs: error grows with the depth
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.sqrt(k),
                                       err_msg=str((n, k, m, threads)))
            if relu:
                assert (out >= 0).all() and not np.signbit(out).any()


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("lr", [0.0, 0.125])
def test_packed_gemm_gates_by_a_relu_output_and_sums_the_columns_of_b(ta, tb, lr):
    """An input gradient's product gated by the relu before it (C := 0 where gate <= 0, a
    third of the gate exactly zero), and a weight gradient's product that takes the bias
    gradient, op(B)'s column sums, or applies its SGD update, as the panels are packed."""
    for n, k, m in PACKED_SHAPES:
        A, B, C = _packed_operands(n, k, m, ta, tb)
        rng = np.random.default_rng(n + m)
        gate = _arr(rng.normal(size=(n, m)) * (rng.random((n, m)) > 1 / 3), np.float32)
        bias0 = _arr(rng.normal(size=m), np.float32)
        expected, expected_sums = C.copy(), bias0.copy()
        _reference.packed_gemm(A, B, expected, ta, tb, gate=gate, bsum=expected_sums, bsum_lr=lr)
        for threads in (1, 3):
            out, sums = C.copy(), bias0.copy()
            _kernels.packed_gemm(A, B, out, ta, tb, threads=threads, gate=gate, bsum=sums,
                                 bsum_lr=lr)
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.sqrt(k),
                                       err_msg=str((n, k, m, threads)))
            np.testing.assert_array_equal(out[gate <= 0], 0)
            assert not np.signbit(out[gate <= 0]).any()
            np.testing.assert_allclose(sums, expected_sums, rtol=1e-5, atol=1e-5 * np.sqrt(k),
                                       err_msg=str((n, k, m, threads)))


def test_packed_gemm_gives_the_same_bits_at_every_level_and_thread_count(same_bits_with_simd):
    """Portable (6 x 16), AVX2 (6 x 16) and AVX-512 (12 x 32) tiles, rows cut between 1 to 4
    threads: every element is the same chain of FMAs, so the bits agree."""
    def run(options):
        outs = []
        for n, k, m in PACKED_SHAPES + [(130, 700, 100)]:
            for ta, tb in ((False, False), (True, False), (False, True)):
                A, B, C = _packed_operands(n, k, m, ta, tb, seed=n + k)
                for threads in (options["threads"], options["threads"] + 2):
                    out = C.copy()
                    _kernels.packed_gemm(A, B, out, ta, tb, -0.5, 1.0, threads=threads)
                    outs.append(out)
                    out = C.copy()
                    _kernels.packed_gemm(A, B, out, ta, tb, bias=C[0].copy(), relu=True,
                                         threads=threads)
                    outs.append(out)
                    out, sums = C.copy(), C[-1].copy()
                    _kernels.packed_gemm(A, B, out, ta, tb, threads=threads, gate=C - 0.5,
                                         bsum=sums, bsum_lr=0.25)
                    outs += [out, sums]
        return outs

    same_bits_with_simd(run)


def test_packed_gemm_rejects_operands_that_do_not_match():
    A, B, C = _packed_operands(5, 4, 3, False, False)
    with pytest.raises(ValueError, match=r"A \(5, 4\), B \(4, 3\), C \(5, 4\)$"):
        _kernels.packed_gemm(A, B, np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="shapes do not match"):
        _kernels.packed_gemm(A, B, C, ta=True)
    before = C.copy()
    with pytest.raises(ValueError):
        _kernels.packed_gemm(A, B.T.copy(), C)
    with pytest.raises(ValueError, match="bias 4"):
        _kernels.packed_gemm(A, B, C, bias=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"gate \(3, 5\)"):
        _kernels.packed_gemm(A, B, C, gate=np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="bsum 4"):
        _kernels.packed_gemm(A, B, C, bsum=np.zeros(4, np.float32))
    np.testing.assert_array_equal(C, before)


def test_packed_relu_maps_nan_and_negative_zero_to_zero_as_the_relu_pass_does():
    """The forward product's relu runs on its registers (max(v, 0)); it must give the bits of
    fastdense's relu pass (v if v > 0 else 0): NaN and -0 become +0."""
    A = np.array([[1.0], [0.0], [np.nan], [-2.0]], np.float32)
    B = np.array([[1.0, -0.0]], np.float32)
    out = np.full((4, 2), 7, np.float32)
    _kernels.packed_gemm(A, B, out, relu=True)
    expected = np.array([[1, 0], [0, 0], [0, 0], [0, 0]], np.float32)
    np.testing.assert_array_equal(out, expected)
    assert not np.signbit(out).any()
    Z = np.array([[1.0, -0.0], [0.0, -0.0], [np.nan, np.nan], [-2.0, 0.0]], np.float32)
    _kernels.activation_forward(K["ACT_RELU"], Z)
    np.testing.assert_array_equal(Z, out)
    assert not np.signbit(Z).any()


# ---------------------------------------------------------------------------------------------
# Losses.
# ---------------------------------------------------------------------------------------------
def _soft_labels(rng, n, m):
    y = rng.dirichlet(np.ones(m), n)
    y[::2] = np.eye(m)[rng.integers(0, m, len(y[::2]))]
    return y


def _loss_inputs(code, n, m, rng):
    """(L, Y) in float64 for a loss code, including clipped and tied entries."""
    if code in ("LOSS_MSE", "LOSS_MAE"):
        L, Y = rng.normal(size=(n, m)), rng.normal(size=(n, m))
        Y[0, 0] = L[0, 0]  # |d| = 0: MAE's gradient there is 0
        return L, Y
    if code in ("LOSS_CCE_LOGITS", "LOSS_BCE_LOGITS"):
        L = rng.normal(0, 3, (n, m))
        Y = _soft_labels(rng, n, m) if code == "LOSS_CCE_LOGITS" else \
            np.where(rng.random((n, m)) < 0.7, rng.integers(0, 2, (n, m)), rng.random((n, m)))
        return L, Y
    if code == "LOSS_SCCE_LOGITS":
        return rng.normal(0, 3, (n, m)), rng.integers(0, m, (n, 1)).astype(float)
    if code in ("LOSS_CCE", "LOSS_SCCE"):
        P = rng.uniform(0.05, 2.0, (n, m))  # rows need not sum to 1: Keras normalises them
        P[0, 0] = 1e-12  # clipped below
        if n > 1 and m > 1:
            P[1] = 1e-12
            P[1, -1] = 1.0  # clipped above
        Y = _soft_labels(rng, n, m) if code == "LOSS_CCE" else \
            rng.integers(0, m, (n, 1)).astype(float)
        return P, Y
    assert code == "LOSS_BCE"
    P = rng.uniform(0, 1, (n, m))
    P.flat[::4] = np.resize([0.0, 1.0, 1e-9, 1 - 1e-9], P.flat[::4].shape)  # clipped
    Y = np.where(rng.random((n, m)) < 0.7, rng.integers(0, 2, (n, m)), rng.random((n, m)))
    return P, Y


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("code", LOSSES)
def test_loss_grad_matches_reference(code, weighted, dtype):
    rng = np.random.default_rng(7)
    for n, m in [(1, 1), (1, 4), (7, 5), (16, 3)]:
        L, Y = (_arr(a, dtype) for a in _loss_inputs(code, n, m, rng))
        sw = _arr(rng.uniform(0, 3, n), dtype) if weighted else np.empty(0, dtype)
        res = {}
        for mod in (_kernels, _reference):
            dL = np.full_like(L, np.nan)
            loss = mod.loss_grad(K[code], L, Y, sw, dL)
            assert isinstance(loss, float)
            assert mod.loss_grad(K[code], L, Y, sw) == pytest.approx(loss, rel=1e-15)
            res[mod] = loss, dL
        assert np.isfinite(res[_kernels][0])
        _close(res[_kernels][0], res[_reference][0], dtype, err_msg=str((n, m)))
        _close(res[_kernels][1], res[_reference][1], dtype, err_msg=str((n, m)))


LOG2 = math.log(2)
EPS = 1e-7


@pytest.mark.parametrize("code, L, Y, expected", [
    ("LOSS_MSE", [[1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]], (2.5 + 0.5) / 2),
    ("LOSS_MAE", [[1.0, -2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]], (1.5 + 0.5) / 2),
    ("LOSS_CCE_LOGITS", [[0.0, 0.0], [0.0, LOG2]], [[1.0, 0.0], [0.0, 1.0]],
     (LOG2 + math.log(1.5)) / 2),
    ("LOSS_SCCE_LOGITS", [[0.0, 0.0], [0.0, LOG2]], [[0.0], [1.0]], (LOG2 + math.log(1.5)) / 2),
    ("LOSS_CCE", [[0.5, 0.5], [1.0, 3.0]], [[1.0, 0.0], [0.0, 1.0]], (LOG2 - math.log(0.75)) / 2),
    ("LOSS_SCCE", [[0.5, 0.5], [1.0, 3.0]], [[0.0], [1.0]], (LOG2 - math.log(0.75)) / 2),
    ("LOSS_BCE", [[0.5, 0.0], [1.0, 0.25]], [[1.0, 0.0], [1.0, 0.0]],
     # Keras 3: clip to [eps, 1 - eps], no epsilon inside the logs
     (-math.log(0.5) - math.log(1 - EPS) - math.log(1 - EPS) - math.log(0.75)) / 4),
    ("LOSS_BCE_LOGITS", [[0.0, LOG2]], [[1.0, 0.0]], (LOG2 + math.log(3)) / 2),
])
def test_loss_known_values(ops, code, L, Y, expected):
    L, Y = np.array(L), np.array(Y)
    assert ops.loss_grad(K[code], L, Y, np.empty(0)) == pytest.approx(expected, rel=1e-12)
    # Sample weights multiply each sample's loss; the mean still divides by the batch size.
    if len(L) == 2:
        one = ops.loss_grad(K[code], L[:1], Y[:1], np.empty(0))
        assert ops.loss_grad(K[code], L, Y, np.array([3.0, 0.0])) == pytest.approx(1.5 * one, rel=1e-12)


def test_loss_gradients_known_values(ops):
    dL = np.empty((2, 2))
    ops.loss_grad(K["LOSS_CCE_LOGITS"], np.array([[0.0, 0.0], [0.0, LOG2]]),
                  np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 2.0]), dL)
    # (softmax - y) * w_i / n
    np.testing.assert_allclose(dL, [[-0.25, 0.25], [1 / 3, -1 / 3]], rtol=1e-12)
    ops.loss_grad(K["LOSS_MSE"], np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]), np.empty(0), dL[:1])
    np.testing.assert_allclose(dL[0], [1.0, 2.0], rtol=1e-14)  # 2 d / m
    ops.loss_grad(K["LOSS_MAE"], np.array([[1.0, -2.0, 0.5]]), np.array([[0.0, 0.0, 0.5]]),
                  np.empty(0), d3 := np.empty((1, 3)))
    np.testing.assert_allclose(d3, [[1 / 3, -1 / 3, 0]], rtol=1e-14)  # sign, 0 at the kink
    # BCE on probabilities: zero gradient where the clip is active.
    ops.loss_grad(K["LOSS_BCE"], np.array([[0.0, 1.0, 0.5]]), np.array([[1.0, 0.0, 1.0]]),
                  np.empty(0), d3)
    np.testing.assert_allclose(d3, [[0, 0, -1 / 0.5 / 3]], rtol=1e-12)


@pytest.mark.parametrize("code", ["LOSS_CCE_LOGITS", "LOSS_SCCE_LOGITS", "LOSS_BCE_LOGITS"])
def test_losses_from_logits_at_extremes(ops, code, dtype, strict_fp):
    L = _arr([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], dtype)
    if code == "LOSS_SCCE_LOGITS":
        Y = _arr([[1.0], [1.0]], dtype)
    else:
        Y = _arr([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype)
    dL = np.empty_like(L)
    loss = ops.loss_grad(K[code], L, Y, np.empty(0, dtype), dL)
    assert np.isfinite(loss) and np.isfinite(dL).all()
    if code == "LOSS_BCE_LOGITS":
        # per element: 1e4, 1e4, log 2 | 0, 0, log 2
        assert loss == pytest.approx((2e4 + 2 * LOG2) / 6, rel=1e-6)
        np.testing.assert_allclose(dL, np.array([[1, -1, 0.5], [0, 0, 0.5]]) / 6, rtol=1e-6)
    else:
        assert loss == pytest.approx(2e4 / 2, rel=1e-6)  # 2e4 for the first row, 0 for the second
        np.testing.assert_allclose(dL, np.array([[1, -1, 0], [0, 0, 0]]) / 2, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
def test_metric_update_matches_reference(weighted, dtype):
    rng = np.random.default_rng(11)
    for n, m in [(1, 1), (1, 4), (9, 3), (20, 1)]:
        Z = rng.integers(0, 4, (n, m)) / 4  # ties and exact 0.5 thresholds
        dense = [K[c] for c in ("METRIC_CATEGORICAL_ACCURACY", "METRIC_BINARY_ACCURACY",
                                "METRIC_MSE", "METRIC_MAE")]
        cases = [(dense, rng.integers(0, 3, (n, m)) / 2),
                 ([K["METRIC_SPARSE_CATEGORICAL_ACCURACY"]], rng.integers(0, m, (n, 1)).astype(float))]
        sw = _arr(rng.uniform(0, 2, n), dtype) if weighted else np.empty(0, dtype)
        for codes, Y in cases:
            codes = np.array(codes, dtype=np.intp)
            acc0 = rng.normal(size=2 * len(codes))
            res = {}
            for mod in (_kernels, _reference):
                acc = acc0.copy()
                mod.metric_update(codes, _arr(Z, dtype), _arr(Y, dtype), sw, acc)
                res[mod] = acc
            np.testing.assert_allclose(res[_kernels], res[_reference], rtol=1e-12, atol=1e-12)
            assert not np.allclose(res[_kernels][1::2], acc0[1::2])


def test_metric_known_values(ops):
    Z = np.array([[0.5, 0.5, 0.0], [0.1, 0.7, 0.2], [0.2, 0.3, 0.5]])
    Y = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    codes = np.array([K["METRIC_CATEGORICAL_ACCURACY"], K["METRIC_BINARY_ACCURACY"],
                      K["METRIC_MSE"], K["METRIC_MAE"]], dtype=np.intp)
    acc = np.zeros(8)
    ops.metric_update(codes, Z, Y, np.array([1.0, 2.0, 3.0]), acc)
    # argmax ties go to the first index; 0.5 is not above the 0.5 threshold.
    cat = [1, 0, 1]
    binary = [2 / 3, 1 / 3, 2 / 3]
    mse = ((Z - Y) ** 2).mean(1)
    mae = np.abs(Z - Y).mean(1)
    w = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(acc, [w @ cat, 6, w @ binary, 6, w @ mse, 6, w @ mae, 6], rtol=1e-14)
    acc = np.zeros(2)
    ops.metric_update(np.array([K["METRIC_SPARSE_CATEGORICAL_ACCURACY"]], dtype=np.intp), Z,
                      np.array([[0.0], [1.0], [1.0]]), np.empty(0), acc)
    np.testing.assert_array_equal(acc, [2, 3])


# ---------------------------------------------------------------------------------------------
# Optimizers.
# ---------------------------------------------------------------------------------------------
def _hp(**kw):
    hp = np.zeros(K["N_HP"])
    for k, v in kw.items():
        hp[K["HP_" + k.upper()]] = v
    return hp


OPTIMIZERS = {
    "sgd": ("OPT_SGD", {}),
    "momentum": ("OPT_SGD_MOMENTUM", dict(momentum=0.9)),
    "nesterov": ("OPT_SGD_NESTEROV", dict(momentum=0.9)),
    "adam": ("OPT_ADAM", dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7)),
    "rmsprop": ("OPT_RMSPROP", dict(rho=0.9, epsilon=1e-7)),
    "rmsprop_centered_momentum": ("OPT_RMSPROP", dict(rho=0.8, momentum=0.5, centered=1, epsilon=1e-7)),
    "adagrad": ("OPT_ADAGRAD", dict(epsilon=1e-7)),
}
VARIANTS = {
    "plain": {},
    "weight_decay": dict(weight_decay=0.05),
    "clipvalue": dict(clipvalue=0.3),
    "global_clipnorm": dict(global_clipnorm=1.0),
    "global_clipnorm_inactive": dict(global_clipnorm=1e3),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_optimizer_step_matches_reference(opt, variant, dtype):
    code, kw = OPTIMIZERS[opt]
    hp = _hp(**kw, **VARIANTS[variant])
    rng = np.random.default_rng(13)
    n = 37
    p0 = _arr(rng.normal(size=n), dtype)
    s0 = np.full(3 * n, 0.1 if code == "OPT_ADAGRAD" else 0.0, dtype)
    state = {mod: (p0.copy(), s0.copy()) for mod in (_kernels, _reference)}
    for t in range(4):
        g = _arr(rng.normal(size=n), dtype)
        lr = 0.1 / (t + 1)
        clipped = {}
        for mod, (p, s) in state.items():
            gm = g.copy()
            mod.optimizer_step(K[code], hp, lr, 5 + t, p, gm, s)
            clipped[mod] = gm
        pk, sk = state[_kernels]
        pr, sr = state[_reference]
        _close(clipped[_kernels], clipped[_reference], dtype)
        _close(pk, pr, dtype, err_msg=f"step {t}")
        _close(sk, sr, dtype, err_msg=f"step {t}")
    assert not np.allclose(state[_kernels][0], p0)
    if variant.startswith("clip") or variant == "global_clipnorm":
        assert not np.allclose(clipped[_kernels], g)  # clipping happens in place


def test_optimizer_known_values(ops):
    def run(code, hp, grads, w=1.0, lr=0.1, slots=0.0):
        p, s = np.array([w]), np.full(3, slots)
        for t, g in enumerate(grads):
            ops.optimizer_step(K[code], hp, lr, t, p, np.array([g]), s)
        return p[0]

    assert run("OPT_SGD", _hp(), [0.5]) == pytest.approx(0.95, rel=1e-14)
    assert run("OPT_SGD_MOMENTUM", _hp(momentum=0.9), [1.0, 1.0]) == pytest.approx(0.71, rel=1e-14)
    assert run("OPT_SGD_NESTEROV", _hp(momentum=0.9), [1.0, 1.0]) == pytest.approx(0.539, rel=1e-14)
    # Adam, two steps: m, v are bias-corrected through alpha.
    b1, b2, eps, lr = 0.9, 0.999, 1e-7, 0.1
    w, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([0.5, -0.2], start=1):
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        w -= lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (math.sqrt(v) + eps)
    assert run("OPT_ADAM", _hp(beta_1=b1, beta_2=b2, epsilon=eps), [0.5, -0.2]) == \
        pytest.approx(w, rel=1e-13)
    # AdamW: decay first, with the learning rate.
    w1 = 1.0 - 1.0 * 0.004 * lr
    w1 -= lr * math.sqrt(1 - b2) / (1 - b1) * (0.05 / (math.sqrt(0.00025) + eps))
    assert run("OPT_ADAM", _hp(beta_1=b1, beta_2=b2, epsilon=eps, weight_decay=0.004), [0.5]) == \
        pytest.approx(w1, rel=1e-13)
    # RMSprop: epsilon inside the root.
    assert run("OPT_RMSPROP", _hp(rho=0.9, epsilon=1e-7), [0.5]) == \
        pytest.approx(1 - 0.1 * 0.5 / math.sqrt(0.1 * 0.25 + 1e-7), rel=1e-14)
    assert run("OPT_ADAGRAD", _hp(epsilon=1e-7), [0.5], slots=0.1) == \
        pytest.approx(1 - 0.1 * 0.5 / math.sqrt(0.35 + 1e-7), rel=1e-14)


def test_gradient_clipping_known_values(ops):
    p, g = np.zeros(2), np.array([3.0, 4.0])
    ops.optimizer_step(K["OPT_SGD"], _hp(global_clipnorm=1.0), 1.0, 0, p, g, np.empty(0))
    np.testing.assert_allclose(g, [0.6, 0.8], rtol=1e-14)
    np.testing.assert_allclose(p, [-0.6, -0.8], rtol=1e-14)
    p, g = np.zeros(3), np.array([-2.0, 0.5, 3.0])
    ops.optimizer_step(K["OPT_SGD"], _hp(clipvalue=1.0), 1.0, 0, p, g, np.empty(0))
    np.testing.assert_array_equal(p, [1.0, -0.5, -1.0])


# ---------------------------------------------------------------------------------------------
# Whole networks: train_steps, forward, evaluate_steps on plans of real models.
# ---------------------------------------------------------------------------------------------
def _opt(name, **kw):
    return getattr(fastdense.optimizers, name)(**kw)


NETWORKS = {
    # id: (layers(dtype), loss, optimizer, n_in, targets, metric codes)
    "relu_softmax_cce": (
        lambda dt: [Dense(5, "relu", dtype=dt), Dense(3, "softmax", dtype=dt)],
        "categorical_crossentropy", lambda: _opt("Adam", learning_rate=0.05), 4, "onehot",
        ["METRIC_CATEGORICAL_ACCURACY"]),
    "tanh_sigmoid_bce_l1l2": (
        lambda dt: [Dense(4, "tanh", kernel_regularizer=L1L2(0.01, 0.02),
                          bias_regularizer=L1L2(0.03, 0.01), dtype=dt),
                    Dense(1, "sigmoid", kernel_regularizer=L2(0.05), dtype=dt)],
        "binary_crossentropy", lambda: _opt("SGD", learning_rate=0.1, momentum=0.9, nesterov=True),
        3, "binary", ["METRIC_BINARY_ACCURACY"]),
    "swish_gelu_activation_layers_scce": (
        lambda dt: [Dense(6, "swish", dtype=dt), Dense(5, "gelu", use_bias=False, dtype=dt),
                    Activation("elu"), Dense(4, dtype=dt), Activation("softmax")],
        "sparse_categorical_crossentropy",
        lambda: _opt("RMSprop", learning_rate=0.01, momentum=0.5, centered=True), 3, "sparse",
        ["METRIC_SPARSE_CATEGORICAL_ACCURACY"]),
    "selu_mse_adagrad_clip": (
        lambda dt: [Dense(4, "selu", dtype=dt), Dense(2, dtype=dt)], "mse",
        lambda: _opt("Adagrad", learning_rate=0.1, clipvalue=0.2), 3, "real",
        ["METRIC_MSE", "METRIC_MAE"]),
    "sigmoid_cce_probabilities": (
        lambda dt: [Dense(4, "softplus", dtype=dt), Dense(3, "sigmoid", dtype=dt)],
        "categorical_crossentropy", lambda: _opt("SGD", learning_rate=0.1, global_clipnorm=0.5),
        3, "onehot", ["METRIC_CATEGORICAL_ACCURACY"]),
    "softmax_bce_probabilities_adamw": (
        lambda dt: [Dense(4, "leaky_relu", dtype=dt), Dense(3, "softmax", dtype=dt)],
        "binary_crossentropy", lambda: _opt("AdamW", learning_rate=0.01), 3, "binary3", []),
    "mae_logits_scce": (
        lambda dt: [Dense(4, "hard_sigmoid", dtype=dt), Dense(3, "softsign", dtype=dt)], "mae",
        lambda: _opt("SGD", learning_rate=0.1, momentum=0.5), 3, "real", ["METRIC_MAE"]),
    "scce_from_logits": (
        lambda dt: [Dense(4, "exponential", dtype=dt), Dense(3, dtype=dt)],
        lambda: fastdense.losses.SparseCategoricalCrossentropy(from_logits=True),
        lambda: _opt("Adam", learning_rate=0.01), 3, "sparse", []),
    "dropout_bce_logits": (
        lambda dt: [Dense(6, "relu", dtype=dt), Dropout(0.4), Dense(2, dtype=dt)],
        lambda: fastdense.losses.BinaryCrossentropy(from_logits=True),
        lambda: _opt("SGD", learning_rate=0.1), 3, "binary2", ["METRIC_BINARY_ACCURACY"]),
    # the normalization and noise ops, frozen layers (their weights after the trainable ones)
    "batchnorm_layernorm_sgd": (
        lambda dt: [Dense(6, dtype=dt), BatchNormalization(momentum=0.8, dtype=dt),
                    Activation("relu"), LayerNormalization(epsilon=0.01, dtype=dt),
                    Dense(3, "softmax", dtype=dt)],
        "categorical_crossentropy", lambda: _opt("SGD", learning_rate=0.1), 3, "onehot",
        ["METRIC_CATEGORICAL_ACCURACY"]),
    "normalize_rescale_frozen_adam": (
        lambda dt: [Normalization(mean=[0.5, -1.0, 2.0], variance=[1.0, 4.0, 0.5], dtype=dt),
                    Rescaling(0.7, -0.2, dtype=dt), Dense(5, "tanh", trainable=False, dtype=dt),
                    BatchNormalization(trainable=False, dtype=dt),
                    LayerNormalization(center=False, dtype=dt), Dense(2, dtype=dt)],
        "mse", lambda: _opt("Adam", learning_rate=0.01), 3, "real", ["METRIC_MAE"]),
    "gaussian_noise_dropout_rmsprop": (
        lambda dt: [GaussianNoise(0.3, dtype=dt), Dense(6, "relu", dtype=dt),
                    GaussianDropout(0.25, dtype=dt), BatchNormalization(scale=False, dtype=dt),
                    Dense(3, "softmax", dtype=dt)],
        "categorical_crossentropy", lambda: _opt("RMSprop", learning_rate=0.01), 3, "onehot", []),
}


def _targets(kind, n, units, rng):
    if kind == "onehot":
        return np.eye(units)[rng.integers(0, units, n)]
    if kind == "sparse":
        return rng.integers(0, units, (n, 1)).astype(float)
    if kind.startswith("binary"):
        return rng.integers(0, 2, (n, units)).astype(float)
    return rng.normal(size=(n, units))


def _network(name, dtype, batch, seed=0):
    """A compiled model and everything train_steps / evaluate_steps / forward need."""
    layers, loss, opt, n_in, kind, metrics = NETWORKS[name]
    model = fastdense.Sequential(layers(np.dtype(dtype).name))
    model.build((None, n_in))
    model.compile(optimizer=opt(), loss=loss() if callable(loss) else loss)
    rng = np.random.default_rng(seed)
    model._params[:] = rng.normal(0, 0.6, model._params.size)
    # the non-trainable part holds statistics such as variances: keep them positive
    model._params[model._n_trainable:] = np.abs(model._params[model._n_trainable:]) + 0.5
    code, fused = model.loss.codes(model._plan(batch).last_activation)
    net = dict(model=model, code=code, fused=fused,
               train=model._plan(batch, keep_logits=fused, training=True),
               eval=model._plan(batch, keep_logits=fused, training=False),
               metrics=np.array([K[m] for m in metrics], dtype=np.intp))
    n = 23
    net["X"] = _arr(rng.normal(size=(n, n_in)), dtype)
    net["Y"] = _arr(_targets(kind, n, model._output_units, rng), dtype)
    net["sw"] = _arr(rng.uniform(0.2, 2.0, n), dtype)
    net["order"] = rng.permutation(n).astype(np.intp)
    return net


def _train(mod, net, dtype, start, stop, batch, use_order, use_sw, step=3):
    model, plan = net["model"], net["train"]
    opt = model.optimizer
    opt.build(model._n_trainable, dtype)  # the optimizer steps over the trainable part
    n_batches = -(-(stop - start) // batch)
    out = dict(params=model._params.copy(), grads=np.zeros(model._n_trainable, dtype),
               state=opt._slots.copy(), work=np.zeros(plan.work_size, dtype),
               rng=np.array([987654321], dtype=np.uint64),
               stats=np.zeros(4 + 2 * len(net["metrics"])))
    out["done"] = mod.train_steps(
        out["params"], out["grads"], out["state"], plan.plan, plan.reg, plan.layout, out["work"],
        net["X"], net["Y"], net["sw"] if use_sw else np.empty(0, dtype),
        net["order"] if use_order else np.empty(0, dtype=np.intp), start, stop, batch,
        net["code"], net["fused"], net["metrics"], opt._kernel_code(), opt._hyper(),
        np.linspace(1.0, 0.5, n_batches) * float(opt.learning_rate), step, out["rng"], out["stats"])
    return out


@pytest.mark.parametrize("name", NETWORKS)
def test_train_steps_matches_reference(name, dtype):
    batch = 5
    tol = TOL[dtype]
    for start, stop, use_order, use_sw in [(0, 23, True, True), (3, 20, False, False)]:
        net = _network(name, dtype, batch)
        res = {mod: _train(mod, net, dtype, start, stop, batch, use_order, use_sw)
               for mod in (_kernels, _reference)}
        k, r = res[_kernels], res[_reference]
        assert k["done"] == r["done"] == -(-(stop - start) // batch)
        assert k["stats"][-1] == 0
        assert k["stats"][1] == stop - start and k["stats"][2] == k["done"]
        # `grads` is scratch: the kernel may fold a plain SGD update into the gradient products.
        for key in ("params", "state", "stats"):
            np.testing.assert_allclose(k[key], r[key], **tol, err_msg=f"{key} {start}:{stop}")
        np.testing.assert_array_equal(k["rng"], r["rng"])
        assert not np.allclose(k["params"], net["model"]._params)


@pytest.mark.parametrize("name", NETWORKS)
def test_forward_and_evaluate_steps_match_reference(name, dtype):
    batch = 4
    net = _network(name, dtype, batch, seed=1)
    model = net["model"]
    # threads=2: batches alternate between two threads (5 batches: two pairs and a single one);
    # the results must be the one-thread bits
    runs = [(_reference, 1), (_kernels, 1), (_kernels, 2)]
    for use_sw in (False, True):
        plan = net["eval"]
        res = {}
        for mod, threads in runs:
            stats = np.zeros(4 + 2 * len(net["metrics"]))
            done = mod.evaluate_steps(model._params, plan.plan, plan.reg, np.zeros(plan.work_size, dtype),
                                      net["X"], net["Y"], net["sw"] if use_sw else np.empty(0, dtype),
                                      2, 21, batch, net["code"], net["fused"], net["metrics"], stats,
                                      threads)
            res[mod, threads] = done, stats
        assert res[_kernels, 1][0] == res[_kernels, 2][0] == res[_reference, 1][0] == 5
        np.testing.assert_allclose(res[_kernels, 1][1], res[_reference, 1][1], **TOL[dtype])
        np.testing.assert_array_equal(res[_kernels, 2][1], res[_kernels, 1][1])
        assert res[_kernels, 1][1][1] == 19
    plan = model._plan(batch)
    outs = {}
    for mod, threads in runs:
        out = np.full((len(net["X"]), plan.out_width), np.nan, dtype)
        mod.forward(model._params, plan.plan, np.zeros(plan.work_size, dtype), net["X"], out, batch,
                    threads)
        outs[mod, threads] = out
    _close(outs[_kernels, 1], outs[_reference, 1], dtype)
    np.testing.assert_array_equal(outs[_kernels, 2], outs[_kernels, 1])
    assert np.isfinite(outs[_kernels, 1]).all()


def test_train_steps_stops_at_a_non_finite_loss(ops):
    net = _network("selu_mse_adagrad_clip", np.float64, 5)
    net["Y"][7, 0] = 1e200  # batch 2 (rows 5..9): (output - 1e200)^2 overflows
    full = _train(ops, net, np.float64, 0, 23, 5, False, False)
    assert full["done"] == 2
    assert full["stats"][-1] == 1 and full["stats"][2] == 2 and full["stats"][1] == 10
    assert not np.isfinite(full["stats"][0])
    first = _train(ops, net, np.float64, 0, 5, 5, False, False)
    np.testing.assert_array_equal(full["params"], first["params"])  # batch 2 not applied
    np.testing.assert_array_equal(full["state"], first["state"])
    stats = np.zeros(4 + 2 * len(net["metrics"]))
    plan = net["eval"]
    done = ops.evaluate_steps(net["model"]._params, plan.plan, plan.reg, np.zeros(plan.work_size),
                              net["X"], net["Y"], np.empty(0), 0, 23, 5, net["code"], net["fused"],
                              net["metrics"], stats)
    assert done == 5 and stats[-1] == 1 and stats[1] == 23  # evaluation runs every batch


def test_train_steps_loss_is_pre_update_and_includes_penalties(ops):
    """stats[0] / stats[1] of one full batch equals evaluate_steps on the same weights."""
    net = _network("tanh_sigmoid_bce_l1l2", np.float64, 23)
    res = _train(ops, net, np.float64, 0, 23, 23, False, True)
    plan = net["eval"]
    stats = np.zeros(4 + 2 * len(net["metrics"]))
    ops.evaluate_steps(net["model"]._params, plan.plan, plan.reg, np.zeros(plan.work_size),
                       net["X"], net["Y"], net["sw"], 0, 23, 23, net["code"], net["fused"],
                       net["metrics"], stats)
    np.testing.assert_allclose(res["stats"][:-1], stats[:-1], rtol=1e-12)
    no_reg = plan.reg.copy()
    no_reg[:] = 0
    stats2 = np.zeros_like(stats)
    ops.evaluate_steps(net["model"]._params, plan.plan, no_reg, np.zeros(plan.work_size),
                       net["X"], net["Y"], net["sw"], 0, 23, 23, net["code"], net["fused"],
                       net["metrics"], stats2)
    assert stats2[0] < stats[0]


def test_dropout_masks(ops):
    """Inverted dropout: each element kept with probability 1 - rate and scaled by 1/(1 - rate);
    one splitmix64 draw per element, so the generator state advances by exactly n*width steps."""
    n = 200
    model = fastdense.Sequential([Dense(6, "relu", dtype="float64"), Dropout(0.3),
                                  Dense(2, dtype="float64")])
    model.build((None, 3))
    model.compile(optimizer="sgd", loss="mse")
    plan = model._plan(n, training=True)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    work = np.zeros(plan.work_size)
    state = np.array([2**63 + 12345], dtype=np.uint64)
    ops.train_steps(model._params.copy(), np.zeros_like(model._params), np.empty(0), plan.plan,
                    plan.reg, plan.layout, work, X, Y, np.empty(0), np.empty(0, dtype=np.intp),
                    0, n, n, K["LOSS_MSE"], False, np.empty(0, dtype=np.intp), K["OPT_SGD"],
                    np.zeros(K["N_HP"]), np.full(1, 0.01), 0, state, np.zeros(4))
    row = plan.plan[1]
    size = n * 6
    mask = work[row[K["PLAN_MASK"]]:row[K["PLAN_MASK"]] + size]
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1 / 0.7, rtol=1e-15)
    assert abs((~kept).mean() - 0.3) < 0.04
    hidden = work[plan.plan[0][K["PLAN_Z"]]:plan.plan[0][K["PLAN_Z"]] + size]
    dropped = work[row[K["PLAN_Z"]]:row[K["PLAN_Z"]] + size]
    np.testing.assert_array_equal(dropped, hidden * mask)
    gamma = 0x9E3779B97F4A7C15
    assert int(state[0]) == (2**63 + 12345 + size * gamma) % 2**64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (40, 33)])
@pytest.mark.parametrize("where", [0, 0.5, 1])
def test_all_finite(ops, dtype, bad, shape, where):
    """The bad value first, in the middle or last: the vector loop's body and its tail."""
    x = np.random.default_rng(0).normal(0, 1e30, shape).astype(dtype)
    if bad is not None:
        x.reshape(-1)[min(int(where * x.size), x.size - 1)] = bad
    assert ops.all_finite(x) is (bad is None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_cut_between_threads_finds_a_bad_value_in_any_part(dtype):
    x = np.random.default_rng(0).normal(size=(1100, 1000)).astype(dtype)  # 2^20+: two parts
    assert _kernels.all_finite(x, 2) and _kernels.all_finite(x, 1)
    for i in (0, x.size // 2 - 1, x.size // 2, x.size - 17, x.size - 1):
        y = x.copy()
        y.reshape(-1)[i] = np.nan
        assert not _kernels.all_finite(y, 2) and not _kernels.all_finite(y, 1), i


def test_sigmoid_backward_simd_is_the_float32_expression():
    rng = np.random.default_rng(3)
    Z = _arr(1 / (1 + np.exp(-rng.normal(0, 3, (7, 13)))), np.float32)
    dZ = _arr(rng.normal(size=(7, 13)), np.float32)
    out = {}
    for enabled in (True, False):
        with simd(enabled):
            dS = np.full_like(Z, np.nan)
            _kernels.activation_backward(K["ACT_SIGMOID"], Z, Z, dZ, dS)
            out[enabled] = dS
    # the vector path rounds (dZ * z) * (1 - z) in float32 at each step; the scalar one (no AVX2)
    # evaluates 1 - z in double
    np.testing.assert_array_equal(out[True], (dZ * Z) * (np.float32(1) - Z))
    np.testing.assert_allclose(out[False], out[True], rtol=3e-7, atol=1e-12)


def test_softmax_far_below_the_max_is_exact():
    """The vectorised exp of softmax (and of the cross-entropy from logits) covers arguments down
    to -87; lanes further below take expf, so tiny and zero probabilities come out as expf gives
    them (denormals, exact zeros), and the rest within 2 ulp of exact. Rows of 16 (two full
    groups of 8) and of 13 and 5 (a masked last group); NaN and infinite logits as before."""
    row = [0, -1, -20, -86.9, -87.1, -88, -100, -103.9, -104, -150, -1e4, 5, 3, -2, -90, 1]
    Zs = [_arr([row, row[::-1], [r / 10 for r in row]], np.float32),
          _arr([row[:13], row[3:]], np.float32), _arr([row[5:10], row[10:15]], np.float32)]
    for Z0 in Zs:
        out = {}
        for enabled in (True, False):
            with simd(enabled):
                Z = Z0.copy()
                _kernels.activation_forward(K["ACT_SOFTMAX"], Z)
                out[enabled] = Z
        z = Z0.astype(np.float64)
        e = np.exp(z - z.max(1, keepdims=True))
        exact = e / e.sum(1, keepdims=True)
        big = exact > 1e-30
        np.testing.assert_allclose(out[True][big], exact[big], rtol=2e-6)
        # denormals keep ~ (exponent + 149) bits: compare them absolutely
        np.testing.assert_allclose(out[True][~big], exact[~big], rtol=1e-3, atol=2e-45)
    flat = Zs[0][0]
    assert 0 < _softmax32(flat)[14] < 1e-38  # exp(-95): a denormal
    assert _softmax32(flat)[10] == 0
    for bad in ([0, np.nan, 1, 2, 3, 4, 5, 6, 7], [0, np.inf, 1, -np.inf, 2, 3, 4, 5, 6],
                [-np.inf] * 9, [np.inf, np.inf, 0, 1, 2, 3, 4, 5, 6]):
        got = {}
        for enabled in (True, False):
            with simd(enabled):
                got[enabled] = _softmax32(bad)
        np.testing.assert_array_equal(np.isnan(got[True]), np.isnan(got[False]))
        np.testing.assert_array_equal(got[True][~np.isnan(got[True])],
                                      got[False][~np.isnan(got[False])])


def _softmax32(row):
    Z = _arr([row], np.float32)
    _kernels.activation_forward(K["ACT_SOFTMAX"], Z)
    return Z[0]


def test_crossentropy_from_logits_far_below_the_max():
    """The cross-entropy from logits shares softmax's vectorised exp: loss and gradient against
    float64, rows with a masked last group and lanes far below the max."""
    L = _arr([[0, -1, -20, -86.9, -87.1, -88, -100, -150, -1e4, 5, 3, -2, -90],
              [3, 2, 1, 0, -1, -2, -3, -4, -5, -6, -7, -8, -9]], np.float32)
    Y = _arr(np.eye(13)[[9, 4]], np.float32)
    dL = np.empty_like(L)
    loss = _kernels.loss_grad(K["LOSS_CCE_LOGITS"], L, Y, np.empty(0, np.float32), dL)
    z = L.astype(np.float64)
    lse = z.max(1, keepdims=True) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    p = np.exp(z - lse)
    np.testing.assert_allclose(loss, np.mean(np.sum(Y * (lse - z), 1)), rtol=1e-6)
    np.testing.assert_allclose(dL, (p - Y) / 2, rtol=1e-5, atol=1e-30)

@pytest.mark.parametrize("in_place", [False, True])
def test_relu_backward_simd_gives_the_scalar_bits(in_place):
    """relu's backward pass is a selection: the vector path must give the scalar loop's bits,
    for z > 0, z = 0 (relu'(0) = 0), negative and NaN z, signed zeros and NaN in dZ, and the
    tail of fewer than 8 elements."""
    rng = np.random.default_rng(8)
    Z = _arr(rng.normal(size=(5, 13)), np.float32)
    Z[0, :4] = [0.0, -0.0, np.nan, np.inf]
    dZ = _arr(rng.normal(size=(5, 13)), np.float32)
    dZ[1, :3] = [-0.0, np.nan, -np.inf]
    Z[1, :3] = [1.0, 2.0, 3.0]
    out = {}
    for enabled in (True, False):
        with simd(enabled):
            dS = dZ.copy() if in_place else np.full_like(dZ, 7.0)
            _kernels.activation_backward(K["ACT_RELU"], Z, Z, dS if in_place else dZ, dS)
            out[enabled] = dS
    np.testing.assert_array_equal(out[True].view(np.uint32), out[False].view(np.uint32))
    np.testing.assert_array_equal(out[True], np.where(Z > 0, dZ, np.float32(0)))


def test_tanh_simd_is_within_an_ulp_and_keeps_its_special_values():
    """float32 tanh on AVX2 (polynomial below 0.625, exp above): within 1 ulp of the exact value
    over [-12, 12], the same formula for every element (a row's values do not depend on its
    position: checked on rows of different widths), tanh(-0) = -0, +-Inf -> +-1, NaN -> NaN;
    and its backward pass dZ * (1 - z * z) within float32 rounding."""
    x = np.linspace(-12, 12, 100001).astype(np.float32)
    z = x.reshape(1, -1).copy()
    _kernels.activation_forward(K["ACT_TANH"], z)
    exact = np.tanh(x.astype(np.float64)).astype(np.float32)
    ulp = np.abs(z[0] - exact) / np.spacing(np.maximum(np.abs(exact), np.float32(1e-30)))
    assert ulp.max() <= 1.0
    special = _arr([[-0.0, 0.0, np.inf, -np.inf, np.nan, 1e-40, 9.5, -30.0, 0.625]], np.float32)
    out = special.copy()
    _kernels.activation_forward(K["ACT_TANH"], out)
    assert np.signbit(out[0, 0]) and out[0, 0] == 0 and not np.signbit(out[0, 1])
    np.testing.assert_array_equal(out[0, 2:4], [1, -1])
    assert np.isnan(out[0, 4]) and out[0, 5] == special[0, 5]
    np.testing.assert_array_equal(out[0, 6:8], [1, -1])
    for width in (3, 9, 17):                       # masked tails: same bits as in a long row
        piece = x[:width * 7].reshape(7, width).copy()
        _kernels.activation_forward(K["ACT_TANH"], piece)
        np.testing.assert_array_equal(piece.ravel(), z[0, :width * 7])
    rng = np.random.default_rng(9)
    Z = np.tanh(rng.normal(size=(5, 13))).astype(np.float32)
    dZ = rng.normal(size=(5, 13)).astype(np.float32)
    dS = np.empty_like(dZ)
    _kernels.activation_backward(K["ACT_TANH"], Z, Z, dZ, dS)
    np.testing.assert_allclose(dS, dZ * (1 - Z.astype(np.float64) ** 2), rtol=3e-7)


@pytest.mark.parametrize("level", [True, "avx2", False], ids=["best", "avx2", "portable"])
def test_adam_float32_update_has_the_rounding_of_its_formula(level):
    """The float32 Adam update (vectorised in C) must round exactly as the formula it implements:
    the moments in float64 then rounded to float32, the step in float32 (NumPy emulation here),
    for every element including the vectors' tails (1,003 parameters)."""
    rng = np.random.default_rng(6)
    n = 1003
    p = rng.normal(size=n).astype(np.float32)
    g = (rng.normal(size=n) * 1e-2).astype(np.float32)
    state = np.concatenate([(rng.normal(size=n) * 1e-2).astype(np.float32),
                            (rng.random(n) * 1e-4).astype(np.float32)])
    hp = np.zeros(K["N_HP"])
    hp[K["HP_BETA_1"]], hp[K["HP_BETA_2"]], hp[K["HP_EPSILON"]] = 0.9, 0.999, 1e-7
    lr, step = 0.001, 4
    b1, b2, eps = np.float32(0.9), np.float32(0.999), np.float32(1e-7)
    t = step + 1
    alpha = np.float32(lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t))
    m, v = state[:n].copy(), state[n:].copy()
    m = (m.astype(np.float64) + (g - m).astype(np.float64) * (1.0 - np.float64(b1))).astype(np.float32)
    v = (v.astype(np.float64) + (g * g - v).astype(np.float64) * (1.0 - np.float64(b2))).astype(np.float32)
    expected = p - m * alpha / (np.sqrt(v) + eps)
    with simd(level):
        _kernels.optimizer_step(K["OPT_ADAM"], hp, lr, step, p, g.copy(), state)
    np.testing.assert_array_equal(state[:n], m)
    np.testing.assert_array_equal(state[n:], v)
    np.testing.assert_array_equal(p, expected)
