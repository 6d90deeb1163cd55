"""Issue 11, item 5: losses, metrics, activations, initializers and regularizers called directly
check their inputs before compiled code runs, with `fit`'s messages.

One parametrized test per callable family over mismatched shapes, lengths, dtypes and label
ranges; every rejected input is read-only and compared with a copy afterwards (`freeze`). The
accepted cases are checked against NumPy formulas written here, not against fastdense.
"""
import math

import numpy as np
import pytest

import fastdense
from fastdense import activations, initializers, layers, losses, metrics, regularizers

from test_validation import freeze

N = 3
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
LABELS = np.array([0, 1, 1])
ONE_HOT = np.eye(3)[LABELS]
COL = np.array([[0.5], [1.5], [-2.0]])


def raises(call, exc, match, **inputs):
    """`call(**inputs)` raises `exc` matching `match` and leaves every input array as it was."""
    check_inputs = freeze(**inputs)
    with pytest.raises(exc, match=match):
        call(**inputs)
    check_inputs()


# -- losses ---------------------------------------------------------------------------------------
MSE, BCE, CCE, SCCE = (losses.MeanSquaredError, losses.BinaryCrossentropy,
                       losses.CategoricalCrossentropy, losses.SparseCategoricalCrossentropy)

LOSS_CASES = {
    # sample_weight: one weight per row of y_pred, (n,) or (n, 1)
    "sw-short": (MSE, COL[:, 0], COL, np.array([1.0]), ValueError,
                 r"`y_pred` and `sample_weight` must have the same number of samples\. "
                 r"Received: y_pred sizes: 3, sample_weight sizes: 1"),
    "sw-long": (CCE, ONE_HOT, PROBS, np.ones(5), ValueError,
                r"Received: y_pred sizes: 3, sample_weight sizes: 5"),
    "sw-per-element": (CCE, ONE_HOT, PROBS, np.ones((N, 3)), ValueError,
                       r"`sample_weight` must be 1-D, one weight per sample\. "
                       r"Received: sample_weight\.shape=\(3, 3\)"),
    "sw-strings": (MSE, COL, COL, np.array(["1", "1", "1"]), TypeError,
                   r"`sample_weight` must hold real numbers.*Received: sample_weight\.dtype=<U1"),
    # y_true against y_pred
    "y-short": (MSE, COL[:2], COL, None, ValueError,
                r"`y_pred` and `y_true`.*Received: y_pred sizes: 3, y_true sizes: 2"),
    "y-scalar": (MSE, 1.0, COL, None, ValueError,
                 r"`y_true` must hold one entry per sample.*Received: y_true\.shape=\(\)"),
    "mse-width": (MSE, np.zeros((N, 2)), PROBS, None, ValueError,
                  r"`y_true` must have shape \(n, 3\) for `y_pred` with 3 columns and the loss "
                  r"'mean_squared_error'\. Received: y_true\.shape=\(3, 2\)"),
    "mse-flat-vs-wide": (MSE, np.zeros(N), PROBS, None, ValueError,
                         r"`y_true` must have shape \(n, 3\).*Received: y_true\.shape=\(3,\)"),
    "bce-width": (BCE, np.zeros((N, 2)), COL, None, ValueError,
                  r"`y_true` must have shape \(n, 1\).*Received: y_true\.shape=\(3, 2\)"),
    "cce-sparse-labels": (CCE, LABELS, PROBS, None, ValueError,
                          r"'categorical_crossentropy' expects one-hot targets of shape \(n, 3\).*"
                          r"sparse_categorical_crossentropy.*Received: y_true\.shape=\(3,\)"),
    "cce-label-column": (CCE, LABELS[:, None], PROBS, None, ValueError,
                         r"sparse_categorical_crossentropy.*Received: y_true\.shape=\(3, 1\)"),
    "scce-one-hot": (SCCE, ONE_HOT, PROBS, None, ValueError,
                     r"`y_true` looks one-hot.*loss='categorical_crossentropy'.*"
                     r"Received: y_true\.shape=\(3, 3\)"),
    "scce-rank3": (SCCE, LABELS[:, None, None], PROBS, None, ValueError,
                   r"one integer class label per sample.*Received: y_true\.shape=\(3, 1, 1\)"),
    # sparse labels: integers in [0, n_classes)
    "scce-label-3": (SCCE, np.array([0, 3, 1]), PROBS, None, ValueError,
                     r"`y_true` holds a class label outside \[0, 3\) for `y_pred` with 3 columns\. "
                     r"Received: label 3"),
    "scce-label-neg": (SCCE, np.array([0, -1, 1], np.int8), PROBS, None, ValueError,
                       r"outside \[0, 3\).*Received: label -1"),
    "scce-label-1.5": (SCCE, np.array([0, 1.5, 1]), PROBS, None, ValueError,
                       r"`y_true` must hold integer class labels for the loss "
                       r"'sparse_categorical_crossentropy'\. Received: non-integer values such as \[1\.5\]"),
    "scce-label-nan": (SCCE, np.array([0, np.nan, 1]), PROBS, None, ValueError,
                       r"integer class labels.*Received: non-integer values such as \[nan\]"),
    # y_pred itself
    "pred-strings": (MSE, COL, np.full((N, 1), "a"), None, TypeError,
                     r"`y_pred` must hold real numbers.*Received: y_pred\.dtype=<U1"),
    "pred-complex": (MSE, COL, COL.astype(complex), None, TypeError,
                     r"Received: y_pred\.dtype=complex128"),
    "true-objects": (MSE, COL.astype(object), COL, None, TypeError,
                     r"`y_true`.*Received: y_true\.dtype=object"),
    "pred-ragged": (MSE, COL, [[1.0, 2.0], [3.0]], None, ValueError,
                    r"`y_pred` could not be converted to a numeric array.*Received: y_pred of type list"),
    "pred-none": (MSE, COL, None, None, TypeError, r"`y_pred` must be array-like.*Received: y_pred=None"),
    "pred-scalar": (MSE, COL, 1.0, None, ValueError,
                    r"`y_pred` must have a batch dimension\. Received: y_pred\.shape=\(\)"),
    "pred-empty": (MSE, np.zeros((0, 1)), np.zeros((0, 1)), None, ValueError,
                   r"`y_pred` is empty.*Received: y_pred\.shape=\(0, 1\)"),
    "pred-rank3": (MSE, COL, np.zeros((N, 2, 2)), None, ValueError,
                   r"`y_pred` must have shape \(n,\) or \(n, k\).*Received: y_pred\.shape=\(3, 2, 2\)"),
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_loss_call_rejects_mismatched_inputs(case):
    cls, y_true, y_pred, sw, exc, match = LOSS_CASES[case]
    raises(lambda y_true, y_pred, sw: cls()(y_true, y_pred, sample_weight=sw), exc, match,
           y_true=y_true, y_pred=y_pred, sw=sw)


@pytest.mark.parametrize("fn, y_true, y_pred", [
    (losses.mse, COL[:2], COL), (losses.mae, np.zeros((N, 2)), PROBS),
    (losses.categorical_crossentropy, LABELS, PROBS),
    (losses.sparse_categorical_crossentropy, np.array([0, 1, 7]), PROBS),
    (losses.binary_crossentropy, np.zeros((N, 2)), COL),
], ids=["mse", "mae", "cce", "scce", "bce"])
def test_loss_functions_reject_what_the_classes_reject(fn, y_true, y_pred):
    raises(fn, ValueError, r"Received: ", y_true=y_true, y_pred=y_pred)


def _mse(y, p, w=None):
    per_row = np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2, axis=1)
    w = np.ones(len(per_row)) if w is None else np.broadcast_to(np.asarray(w, float).reshape(-1),
                                                                 per_row.shape)
    return float(np.sum(per_row * w) / len(per_row))


def test_loss_accepts_what_keras_accepts_without_touching_inputs():
    y = np.array([1.0, 2.0, 4.0])
    p = np.array([[1.5], [2.0], [3.0]])
    w = np.array([0.5, 2.0, 1.0])
    check = freeze(y=y, p=p, w=w)
    expect = _mse(y[:, None], p, w)
    assert MSE()(y, p, sample_weight=w) == pytest.approx(expect, rel=1e-6)       # (n,) vs (n, 1)
    assert MSE()(y[:, None], p[:, 0], sample_weight=w[:, None]) == pytest.approx(expect, rel=1e-6)
    assert MSE()(y.tolist(), p.tolist(), sample_weight=w.tolist()) == pytest.approx(expect, rel=1e-6)
    assert MSE()([1, 2, 4], [[2], [2], [3]]) == pytest.approx(_mse(y[:, None], [[2], [2], [3]]))
    # a scalar weight scales every sample (Keras broadcasts it)
    assert MSE()(y, p, sample_weight=3.0) == pytest.approx(3 * _mse(y[:, None], p), rel=1e-6)
    check()


def test_loss_computes_with_nan_and_negative_weights_as_keras_does():
    p = np.array([[0.2], [np.nan], [0.9]])
    assert math.isnan(MSE()(COL, p))
    assert math.isnan(BCE()(np.array([0.0, 1.0, np.nan]), np.array([0.2, 0.7, 0.9])))
    w = np.array([1.0, -1.0, 2.0])
    assert MSE()(COL, COL + 1, sample_weight=w) == pytest.approx(_mse(COL, COL + 1, w), rel=1e-6)


def test_sparse_loss_accepts_integer_valued_labels_of_any_dtype():
    expect = -np.mean(np.log(PROBS[np.arange(N), LABELS]))
    for y in (LABELS, LABELS[:, None], LABELS.astype(np.uint8), LABELS.astype(np.float32),
              LABELS.astype(">i2"), LABELS.tolist()):
        assert SCCE()(y, PROBS) == pytest.approx(expect, rel=1e-5)


def test_loss_dtype_follows_y_pred():
    # float64 y_pred is computed in float64; anything else in float32, where 1 + 1e-6 rounds.
    y, p = [[1.0], [1.0]], np.array([[1.0 + 1e-6], [1.0]])
    assert MSE()(y, p) == pytest.approx(1e-12 / 2, rel=1e-6)
    d32 = float(np.float32(1.0 + 1e-6)) - 1.0
    assert d32 != 1e-6
    assert MSE()(y, p.astype(np.float32)) == pytest.approx(d32 ** 2 / 2, rel=1e-6)


@pytest.mark.parametrize("policy", ["float32", "float64"])
def test_integer_inputs_take_the_float_policy(policy):
    fastdense.config.set_floatx(policy)
    assert activations.sigmoid([0, 1]).dtype == np.dtype(policy)
    assert activations.relu(np.ones(2, np.float16)).dtype == np.float32
    assert activations.relu(np.ones(2, np.float32)).dtype == np.float32
    # 2**24 + 1 is not a float32: only a float64 computation sees the difference.
    big = MSE()([[2**24 + 1]], [[2**24]])
    assert big == (1.0 if policy == "float64" else 0.0)


# -- metrics --------------------------------------------------------------------------------------
CA, SCA, BA = metrics.CategoricalAccuracy, metrics.SparseCategoricalAccuracy, metrics.BinaryAccuracy
MSE_M, MAE_M = metrics.MeanSquaredError, metrics.MeanAbsoluteError

METRIC_CASES = {
    "ca-sparse-labels": (CA, LABELS, PROBS, None, ValueError,
                         r"The metric 'categorical_accuracy' expects targets of shape \(n, 3\).*"
                         r"sparse_categorical_accuracy.*Received: y_true\.shape=\(3,\)"),
    "ca-label-column": (CA, LABELS[:, None], PROBS, None, ValueError,
                        r"sparse_categorical_accuracy.*Received: y_true\.shape=\(3, 1\)"),
    "ca-width": (CA, np.eye(2)[[0, 1, 1]], PROBS, None, ValueError,
                 r"'categorical_accuracy' compares the arg max.*`y_true` needs 3 columns like "
                 r"`y_pred`\. Received: y_true\.shape=\(3, 2\)"),
    "sca-one-hot": (SCA, ONE_HOT, PROBS, None, ValueError,
                    r"`y_true` looks one-hot.*metrics=\['categorical_accuracy'\].*"
                    r"Received: y_true\.shape=\(3, 3\)"),
    "sca-rank3": (SCA, LABELS[:, None, None], PROBS, None, ValueError,
                  r"one integer class label per sample.*Received: y_true\.shape=\(3, 1, 1\)"),
    "sca-label-3": (SCA, np.array([0, 3, 1]), PROBS, None, ValueError,
                    r"`y_true` holds a class label outside \[0, 3\).*Received: label 3"),
    "sca-label-nan": (SCA, np.array([0.0, np.nan, 1.0]), PROBS, None, ValueError,
                      r"integer class labels for the metric 'sparse_categorical_accuracy'.*nan"),
    "mse-narrow": (MSE_M, LABELS, PROBS, None, ValueError,
                   r"'mean_squared_error' compares targets and outputs element by element, so "
                   r"`y_true` needs 3 columns.*Received: y_true\.shape=\(3,\)"),
    "mae-wide": (MAE_M, np.zeros((N, 2)), COL, None, ValueError,
                 r"needs 1 columns.*Received: y_true\.shape=\(3, 2\)"),
    "ba-wide": (BA, np.zeros((N, 2)), COL, None, ValueError,
                r"'binary_accuracy'.*Received: y_true\.shape=\(3, 2\)"),
    "y-short": (CA, ONE_HOT[:2], PROBS, None, ValueError,
                r"Received: y_pred sizes: 3, y_true sizes: 2"),
    "sw-short": (CA, ONE_HOT, PROBS, np.ones(1), ValueError,
                 r"Received: y_pred sizes: 3, sample_weight sizes: 1"),
    "sw-per-element": (MSE_M, COL, COL, np.ones((N, 2)), ValueError,
                       r"`sample_weight` must be 1-D.*Received: sample_weight\.shape=\(3, 2\)"),
    "pred-strings": (BA, COL, np.full((N, 1), "x"), None, TypeError,
                     r"`y_pred` must hold real numbers.*<U1"),
    "true-complex": (MSE_M, COL.astype(complex), COL, None, TypeError, r"y_true\.dtype=complex128"),
    "pred-scalar": (MSE_M, COL, 0.5, None, ValueError, r"`y_pred` must have a batch dimension"),
    "pred-empty": (CA, np.zeros((0, 3)), np.zeros((0, 3)), None, ValueError, r"`y_pred` is empty"),
    "pred-rank3": (CA, ONE_HOT, np.zeros((N, 1, 3)), None, ValueError,
                   r"`y_pred` must have shape \(n,\) or \(n, k\)"),
}


@pytest.mark.parametrize("method", ["call", "update_state"])
@pytest.mark.parametrize("case", list(METRIC_CASES))
def test_metric_rejects_mismatched_inputs_and_keeps_its_state(case, method):
    cls, y_true, y_pred, sw, exc, match = METRIC_CASES[case]
    metric = cls()
    good = {CA: (ONE_HOT, PROBS), SCA: (LABELS, PROBS)}.get(cls, (COL, COL + 0.25))
    before = metric(*good)
    call = metric if method == "call" else metric.update_state
    raises(lambda y_true, y_pred, sw: call(y_true, y_pred, sample_weight=sw), exc, match,
           y_true=y_true, y_pred=y_pred, sw=sw)
    assert metric.result() == before


def test_metric_state_accumulates_as_in_keras():
    metric = CA()
    assert metric.result() == 0.0
    hits1 = (np.argmax(PROBS, 1) == LABELS).astype(float)          # [1, 1, 0]
    p2 = PROBS[::-1]
    hits2 = (np.argmax(p2, 1) == LABELS).astype(float)
    w1, w2 = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5, 4.0])
    check = freeze(w1=w1, w2=w2)
    metric.update_state(ONE_HOT, PROBS, sample_weight=w1)
    out = metric(ONE_HOT.tolist(), p2.tolist(), sample_weight=w2)   # __call__ adds a batch too
    expect = (hits1 @ w1 + hits2 @ w2) / (w1.sum() + w2.sum())
    assert out == pytest.approx(expect) and metric.result() == pytest.approx(expect)
    check()
    metric.reset_state()
    assert metric.result() == 0.0
    assert metric(ONE_HOT, PROBS) == pytest.approx(hits1.mean())


def test_metrics_accept_keras_shapes():
    assert SCA()(LABELS[:, None], PROBS) == pytest.approx(2 / 3)
    assert SCA()(LABELS.astype(np.float32), PROBS, sample_weight=2.0) == pytest.approx(2 / 3)
    assert BA()([1, 0, 1], [0.9, 0.2, 0.3]) == pytest.approx(2 / 3)
    assert MAE_M()(COL[:, 0], COL + 1.5) == pytest.approx(1.5)
    assert MAE_M.from_config(MAE_M(name="m").get_config()).name == "m"


@pytest.mark.parametrize("loss, metric, y, match", [
    ("sparse_categorical_crossentropy", "categorical_accuracy", LABELS,
     r"'categorical_accuracy' expects targets of shape \(n, 3\).*Received: y\.shape=\(3,\)"),
    ("categorical_crossentropy", "sparse_categorical_accuracy", ONE_HOT,
     r"`y` looks one-hot.*metrics=\['categorical_accuracy'\]"),
])
def test_fit_refuses_a_metric_that_would_misread_the_labels(loss, metric, y, match):
    # Before: categorical_accuracy read 3 values per row of a (n, 1) label column.
    model = fastdense.Sequential([layers.Dense(3, activation="softmax", input_shape=(2,))])
    model.compile(optimizer="sgd", loss=loss, metrics=[metric])
    for call in (model.fit, model.evaluate):
        with pytest.raises(ValueError, match=match):
            call(np.ones((N, 2)), y, verbose=0)


# -- activations ----------------------------------------------------------------------------------
ACTIVATION_CASES = {
    "strings": (np.array([["a", "b"]]), TypeError, r"`x` must hold real numbers.*Received: x\.dtype=<U1"),
    "objects": (np.array([1.0, None]), TypeError, r"Received: x\.dtype=object"),
    "complex": (np.ones(2, complex), TypeError, r"Received: x\.dtype=complex128"),
    "none": (None, TypeError, r"`x` must be array-like.*Received: x=None"),
    "ragged": ([[1.0], [1.0, 2.0]], ValueError, r"`x` could not be converted.*Received: x of type list"),
}


@pytest.mark.parametrize("name", ["relu", "softmax", "sigmoid", "gelu"])
@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_rejects_non_numeric_input(case, name):
    x, exc, match = ACTIVATION_CASES[case]
    raises(getattr(activations, name), exc, match, x=x)


def test_activations_take_any_real_array_without_touching_it():
    x = np.array([[-2.0, 0.5, 3.0]], dtype=">f8")                       # big-endian, read-only
    check = freeze(x=x)
    out = activations.softmax(x)
    e = np.exp(x.astype(float) - 3.0)
    np.testing.assert_allclose(out, e / e.sum(), rtol=1e-12)
    assert out.dtype == np.float64                                       # float64 stays float64
    check()
    np.testing.assert_array_equal(activations.relu([[-1, 2]]), np.array([[0, 2]], np.float32))
    assert activations.relu(np.int8(-3)).shape == () and activations.softmax(np.zeros((0, 4))).shape == (0, 4)
    assert np.isnan(activations.tanh([np.nan, 0.0])[0])


# -- initializers ---------------------------------------------------------------------------------
ALL_INITIALIZERS = sorted(initializers._BY_CLASS)
BAD_SHAPES = {
    "int": (5, r"Cannot convert 5 to a shape.*Received: shape=5"),
    "none": (None, r"Cannot convert None to a shape"),
    "string": ("ab", r"Cannot convert 'ab' to a shape"),
    "negative": ((2, -1), r"negative dimensions are not allowed\. Received: shape=\(2, -1\)"),
    "float-dim": ((2, 2.0), r"invalid entry 2\.0 of type float\. Received: shape=\(2, 2\.0\)"),
    "bool-dim": ([True, 2], r"invalid entry True of type bool"),
    "none-dim": ((None, 2), r"invalid entry None"),
}


@pytest.mark.parametrize("bad", list(BAD_SHAPES))
@pytest.mark.parametrize("cls", ALL_INITIALIZERS)
def test_initializer_rejects_bad_shapes(cls, bad):
    shape, match = BAD_SHAPES[bad]
    with pytest.raises(ValueError, match=match):
        initializers.get(cls)(shape)


@pytest.mark.parametrize("cls", ALL_INITIALIZERS)
@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64", "foo", object])
def test_initializer_rejects_bad_dtypes(cls, dtype):
    # Random draws need a float dtype; the constant ones also fill int and bool arrays, as in Keras.
    constant = cls in ("Zeros", "Ones", "Constant")
    if constant and dtype in ("int32", "bool"):
        assert initializers.get(cls)((2, 2), dtype).dtype == np.dtype(dtype)
        return
    with pytest.raises(ValueError, match=r"Invalid dtype: expected .*Received: dtype="):
        initializers.get(cls)((2, 2), dtype)


@pytest.mark.parametrize("make, match", [
    (lambda: initializers.GlorotUniform(seed=1.5), r"`seed` must be a non-negative integer.*seed=1\.5"),
    (lambda: initializers.HeNormal(seed=-1), r"`seed`.*Received: seed=-1"),
    (lambda: initializers.RandomNormal(seed="1"), r"Received: seed='1'"),
    (lambda: initializers.RandomUniform(seed=True), r"Received: seed=True"),
    (lambda: initializers.RandomNormal(stddev="0.1"), r"`stddev` must be a finite number.*'0\.1'"),
    (lambda: initializers.RandomUniform(maxval=np.inf), r"`maxval` must be a finite number"),
    (lambda: initializers.VarianceScaling(scale=0), r"`scale` must be a positive finite number"),
    (lambda: initializers.Constant("x"), r"`value` must be a finite number.*Received: value='x'"),
])
def test_initializer_rejects_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_initializer_shapes_dtypes_and_fans_follow_keras(float64):
    w = initializers.Ones()([2, 3])                                 # a list shape; dtype None: floatx
    assert w.shape == (2, 3) and w.dtype == np.float64
    assert initializers.GlorotUniform(seed=0)(()).shape == ()      # scalars: fans of 1
    assert initializers.Zeros()((0, 4), "float32").shape == (0, 4)
    # Beyond 2-D the leading axes are a receptive field: fan_in = 3*3*16 for (3, 3, 16, 8).
    w = initializers.HeUniform(seed=0)((3, 3, 16, 8), "float64")
    limit = math.sqrt(6.0 / (3 * 3 * 16))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit


# -- regularizers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: regularizers.L1(-0.1), r"`l1` must be a finite number >= 0\.0\. Received: l1=-0\.1"),
    (lambda: regularizers.L2(np.nan), r"`l2` must be .*Received: l2=nan"),
    (lambda: regularizers.L1L2(l2=np.inf), r"`l2` must be .*Received: l2=inf"),
    (lambda: regularizers.L1L2(l1="0.1"), r"`l1` must be .*Received: l1='0\.1'"),
    (lambda: regularizers.L2([0.1]), r"Received: l2=\[0\.1\]"),
])
def test_regularizer_rejects_bad_factors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("x, exc, match", [
    (np.array(["a"]), TypeError, r"`x` must hold real numbers.*Received: x\.dtype=<U1"),
    (np.ones(2, complex), TypeError, r"Received: x\.dtype=complex128"),
    (None, TypeError, r"`x` must be array-like"),
])
def test_regularizer_call_rejects_non_numeric_weights(x, exc, match):
    raises(regularizers.L1L2(0.1, 0.2), exc, match, x=x)


def test_regularizer_call_on_any_real_array():
    w = np.array([[1, -2], [3, 0]], dtype=np.int16)
    check = freeze(w=w)
    assert regularizers.L1L2(0.1, 0.2)(w) == pytest.approx(0.1 * 6 + 0.2 * 14)
    check()
    assert regularizers.L1(None).l1 == 0.01 and regularizers.L1L2(None, None)([1.0]) == 0.0
    assert math.isnan(regularizers.L2()([np.nan]))
    assert regularizers.get({"class_name": "L1L2", "config": regularizers.L1L2(0.5).get_config()}).l1 == 0.5
