"""RELIABILITY.md, "Bad input" and "Numerics": one parametrized test per row of the table.

Every rejection is checked the same way (`rejects`): the exception type, a message that names the
argument and what was received, a model left exactly as it was (built state, weights, optimizer
slots and step count, compile state) and inputs left untouched (compared with copies; the inputs
are made read-only first, so a write would also fail loudly).
"""
import math
import re

import numpy as np
import pytest

import fastdense
from fastdense import Sequential, _validation, callbacks, layers, losses, optimizers

from conftest import make_blobs

N, D = 8, 4


# -- helpers -------------------------------------------------------------------------------------
def _data(n=N, d=D, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def make(kind, d=D, opt="adam", seed=1):
    """(model, x, y): a model of `kind` trained for one epoch (so the optimizer has slots and a
    step count) and valid data for it."""
    fastdense.utils.set_random_seed(seed)
    x = _data(d=d)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, N)
    kinds = {
        "mse": (1, None, "mse", rng.normal(size=(N, 1))),
        "mse2": (2, None, "mse", rng.normal(size=(N, 2))),
        "bce": (1, "sigmoid", "binary_crossentropy", (labels[:, None] > 0).astype(float)),
        "cce": (3, "softmax", "categorical_crossentropy", np.eye(3)[labels]),
        "scce": (3, "softmax", "sparse_categorical_crossentropy", labels),
    }
    units, act, loss, y = kinds[kind]
    model = Sequential([layers.Dense(3, activation="relu", input_shape=(d,)),
                        layers.Dense(units, activation=act)])
    model.compile(optimizer=opt, loss=loss)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    return model, x, y


def snapshot(model):
    opt = model.optimizer
    return {
        "built": model.built,
        "input_shape": model.input_shape,
        "compiled": model.compiled,
        "optimizer": opt,
        "loss": model.loss,
        "metric_ids": list(getattr(model, "_metric_ids", [])),
        "iterations": None if opt is None else opt.iterations,
        "learning_rate": None if opt is None else opt.learning_rate,
        "slots": None if opt is None or opt._slots is None else opt._slots.copy(),
        "weights": model.get_weights() if model.built else None,
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    for key, old in before.items():
        new = after[key]
        if key == "weights":
            assert (old is None) == (new is None), key
            if old is not None:
                assert len(old) == len(new)
                for a, b in zip(old, new):
                    np.testing.assert_array_equal(a, b, err_msg="weights changed")
        elif key == "slots":
            assert (old is None) == (new is None), key
            if old is not None:
                np.testing.assert_array_equal(old, new, err_msg="optimizer slots changed")
        elif key in ("optimizer", "loss"):
            assert old is new, key
        else:
            assert old == new, (key, old, new)


def _arrays(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _arrays(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _arrays(item)


def freeze(**inputs):
    """Makes every array in `inputs` read-only; returns a checker that they still hold the same."""
    arrays = list(_arrays(inputs))
    copies = [np.array(a, copy=True) for a in arrays]
    for a in arrays:
        a.setflags(write=False)

    def check():
        for a, c in zip(arrays, copies):
            assert a.dtype == c.dtype and a.shape == c.shape
            if a.dtype.kind in "biufc":
                np.testing.assert_array_equal(a, c, err_msg="an input array was modified")
            else:
                assert (a == c).all(), "an input array was modified"

    return check


def rejects(model, call, exc, match, **inputs):
    """`call(model, **inputs)` raises `exc` matching `match`, changing neither model nor inputs."""
    check_inputs = freeze(**inputs)
    before = snapshot(model)
    with pytest.raises(exc, match=match) as info:
        call(model, **inputs)
    assert_unchanged(model, before)
    check_inputs()
    return info.value


def accepts(call, **inputs):
    """`call(**inputs)` without modifying any input (checked against copies); its result."""
    arrays = list(_arrays(inputs))
    copies = [np.array(a, copy=True) for a in arrays]
    out = call(**inputs)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c, err_msg="an input array was modified")
    return out


def assert_same_run(first, second):
    """Two (predict, evaluate, history, weights) results are bit-identical."""
    (p0, e0, h0, w0), (p1, e1, h1, w1) = first, second
    np.testing.assert_array_equal(p0, p1)
    assert e0 == e1 and h0 == h1
    assert len(w0) == len(w1)
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)


PREDICT = lambda m, x, y=None: m.predict(x, verbose=0)  # noqa: E731
CALL = lambda m, x, y=None: m(x)  # noqa: E731
FIT = lambda m, x, y: m.fit(x, y, batch_size=4, verbose=0)  # noqa: E731
EVALUATE = lambda m, x, y: m.evaluate(x, y, verbose=0)  # noqa: E731
TRAIN_ON_BATCH = lambda m, x, y: m.train_on_batch(x, y)  # noqa: E731
X_CALLS = {"predict": PREDICT, "call": CALL, "fit": FIT, "evaluate": EVALUATE}
XY_CALLS = {"fit": FIT, "evaluate": EVALUATE, "train_on_batch": TRAIN_ON_BATCH}


# -- row: x not array-like / strings / objects / complex ----------------------------------------
NON_NUMERIC = [
    pytest.param(lambda a: np.full(a.shape, "a"), TypeError,
                 r"`{n}` must hold real numbers.*Received: {n}\.dtype=<U1", id="strings"),
    pytest.param(lambda a: a.astype(object), TypeError, r"`{n}`.*Received: {n}\.dtype=object",
                 id="objects"),
    pytest.param(lambda a: a.astype(complex), TypeError,
                 r"`{n}`.*Received: {n}\.dtype=complex128", id="complex"),
    pytest.param(lambda a: a.astype("S3"), TypeError, r"`{n}`.*Received: {n}\.dtype=\|S3",
                 id="bytes"),
    pytest.param(lambda a: [[1.0, 2.0], [3.0]], ValueError,
                 r"`{n}` could not be converted to a numeric array.*Received: {n} of type list",
                 id="ragged-list"),
    pytest.param(lambda a: {"a": 1}, TypeError, r"`{n}`.*Received: {n}\.dtype=object", id="dict"),
    pytest.param(lambda a: "1.0", TypeError, r"`{n}`.*Received: {n}\.dtype=<U3", id="str"),
]


@pytest.mark.parametrize("call", list(X_CALLS))
@pytest.mark.parametrize("convert, exc, match", NON_NUMERIC)
def test_non_numeric_x_is_rejected(convert, exc, match, call):
    model, x, y = make("mse")
    rejects(model, X_CALLS[call], exc, match.format(n="x"), x=convert(x), y=y)


@pytest.mark.parametrize("call", list(X_CALLS))
def test_none_x_is_rejected(call):
    model, x, y = make("mse")
    rejects(model, X_CALLS[call], TypeError, r"`x` must be array-like.*Received: x=None", x=None, y=y)


@pytest.mark.parametrize("call", list(XY_CALLS))
@pytest.mark.parametrize("convert, exc, match", NON_NUMERIC)
def test_non_numeric_y_is_rejected(convert, exc, match, call):
    model, x, y = make("mse")
    rejects(model, XY_CALLS[call], exc, match.format(n="y"), x=x, y=convert(y))


@pytest.mark.parametrize("convert, exc, match", NON_NUMERIC[:4])
def test_non_numeric_sample_weight_is_rejected(convert, exc, match):
    model, x, y = make("mse")
    rejects(model, lambda m, x, y, sw: m.fit(x, y, sample_weight=sw, verbose=0), exc,
            match.format(n="sample_weight"), x=x, y=y, sw=convert(np.ones(N)))


def test_none_y_is_rejected():
    model, x, y = make("mse")
    rejects(model, FIT, ValueError, r"`y` is required.*Received: y=None", x=x, y=None)


# -- row: x with the wrong rank ------------------------------------------------------------------
@pytest.mark.parametrize("call", list(X_CALLS))
@pytest.mark.parametrize("shape, match", [
    ((N, D, 1), r"Received: x\.shape=\(8, 4, 1\)"),
    ((D,), r"Received: x\.shape=\(4,\)"),
    ((), r"`x` must have a batch dimension.*Received: x\.shape=\(\)"),
    ((N, 2, 2), r"Received: x\.shape=\(8, 2, 2\)"),
], ids=["3d", "1d-not-one-feature", "0d", "3d-same-size"])
def test_wrong_rank_is_rejected(shape, match, call):
    model, _, y = make("mse")
    rejects(model, X_CALLS[call], ValueError, match, x=np.ones(shape), y=y)


def test_one_dimensional_x_is_n_samples_of_one_feature():
    model, _, y = make("mse", d=1)
    x1 = np.linspace(-1, 1, N)
    np.testing.assert_array_equal(accepts(lambda x: model.predict(x, verbose=0), x=x1),
                                  model.predict(x1[:, None], verbose=0))
    assert accepts(lambda x, y: model.evaluate(x, y, verbose=0), x=x1, y=y) == \
        model.evaluate(x1[:, None], y, verbose=0)


# -- row: wrong number of features ----------------------------------------------------------------
@pytest.mark.parametrize("call", list(X_CALLS))
def test_wrong_feature_count_is_rejected(call):
    fastdense.utils.set_random_seed(0)
    model = Sequential([layers.Dense(2, input_shape=(784,))])
    model.compile(optimizer="sgd", loss="mse")
    rejects(model, X_CALLS[call], ValueError,
            r"expects 784 input features.*Received: x\.shape=\(64, 28\)",
            x=np.zeros((64, 28)), y=np.zeros((64, 2)))


def test_wrong_feature_count_in_validation_data_is_rejected():
    model, x, y = make("mse")
    rejects(model, lambda m, x, y, val: m.fit(x, y, validation_data=val, verbose=0), ValueError,
            r"Input x_val.*expects 4 input features.*Received: x_val\.shape=\(8, 5\)",
            x=x, y=y, val=(np.zeros((N, 5)), y))


# -- row: len(x) != len(y), len(sample_weight) != len(x) ------------------------------------------
LENGTH_CASES = {
    "y-short": (lambda m, x, y: m.fit(x, y[:5], verbose=0), r"x sizes: 8, y sizes: 5"),
    "y-long": (lambda m, x, y: m.fit(x, np.concatenate([y, y]), verbose=0),
               r"x sizes: 8, y sizes: 16"),
    "evaluate": (lambda m, x, y: m.evaluate(x, y[:5], verbose=0), r"x sizes: 8, y sizes: 5"),
    "train_on_batch": (lambda m, x, y: m.train_on_batch(x, y[:5]), r"x sizes: 8, y sizes: 5"),
    "x-short": (lambda m, x, y: m.fit(x[:3], y, verbose=0), r"x sizes: 3, y sizes: 8"),
    "y-scalar": (lambda m, x, y: m.fit(x, 1.0, verbose=0),
                 r"`y` must hold one entry per sample.*Received: y\.shape=\(\)"),
    "sample_weight": (lambda m, x, y: m.fit(x, y, sample_weight=np.ones(3), verbose=0),
                      r"`sample_weight`.*x sizes: 8, sample_weight sizes: 3"),
    "sample_weight-evaluate": (
        lambda m, x, y: m.evaluate(x, y, sample_weight=np.ones(9), verbose=0),
        r"`sample_weight`.*x sizes: 8, sample_weight sizes: 9"),
    "validation_split": (lambda m, x, y: m.fit(x, y[:5], validation_split=0.25, verbose=0),
                         r"x sizes: 8, y sizes: 5"),
    "validation_data": (lambda m, x, y: m.fit(x, y, validation_data=(x, y[:3]), verbose=0),
                        r"`y_val`.*y_val sizes: 3"),
    "validation_sample_weight": (
        lambda m, x, y: m.fit(x, y, validation_data=(x, y, np.ones(3)), verbose=0),
        r"x_val sizes: 8, val_sample_weight sizes: 3"),
}


@pytest.mark.parametrize("case", list(LENGTH_CASES))
def test_length_mismatch_is_rejected_with_both_lengths(case):
    call, match = LENGTH_CASES[case]
    model, x, y = make("mse")
    rejects(model, call, ValueError, match, x=x, y=y)


def test_validation_length_mismatch_names_x_val():
    model, x, y = make("mse")
    rejects(model, lambda m, x, y: m.fit(x, y, validation_data=(x, y[:3]), verbose=0),
            ValueError, r"`x_val` and `y_val`.*x_val sizes: 8, y_val sizes: 3", x=x, y=y)


@pytest.mark.parametrize("sw", [np.ones(3), np.full(N, np.nan)], ids=["length", "nan"])
def test_validation_sample_weight_errors_name_val_sample_weight(sw):
    model, x, y = make("mse")
    rejects(model, lambda m, x, y, sw: m.fit(x, y, validation_data=(x, y, sw), verbose=0),
            ValueError, r"val_sample_weight", x=x, y=y, sw=sw)


# -- row: integer labels with categorical_crossentropy; one-hot labels with the sparse loss -------
def test_integer_labels_with_categorical_crossentropy_suggest_sparse_loss():
    model, x, y = make("cce")
    labels = np.argmax(y, axis=1)
    for call in XY_CALLS.values():
        rejects(model, call, ValueError,
                r"categorical_crossentropy.*one-hot.*sparse_categorical_crossentropy.*"
                r"Received: y\.shape=\(8,\)", x=x, y=labels.copy())


def test_integer_labels_are_never_broadcast_to_n_by_n():
    # n == units: (3,) against a (3, 3) output would broadcast silently in a naive loss.
    model, x, y = make("cce")
    rejects(model, FIT, ValueError, r"sparse_categorical_crossentropy.*Received: y\.shape=\(3,\)",
            x=x[:3], y=np.array([0, 1, 2]))
    model, x, y = make("mse2")
    rejects(model, FIT, ValueError, r"Received: y\.shape=\(2,\)", x=x[:2], y=np.array([0.5, 1.5]))


def test_one_hot_labels_with_sparse_loss_suggest_categorical():
    model, x, labels = make("scce")
    for call in XY_CALLS.values():
        rejects(model, call, ValueError,
                r"`y` looks one-hot.*loss='categorical_crossentropy'.*Received: y\.shape=\(8, 3\)",
                x=x, y=np.eye(3)[labels])


def test_integer_labels_in_validation_data_with_categorical_crossentropy():
    model, x, y = make("cce")
    rejects(model, lambda m, x, y, val: m.fit(x, y, validation_data=val, verbose=0), ValueError,
            r"sparse_categorical_crossentropy.*Received: y_val\.shape=\(8,\)",
            x=x, y=y, val=(x, np.argmax(y, axis=1)))


def test_column_of_integer_labels_with_categorical_crossentropy_suggests_sparse_loss():
    model, x, y = make("cce")
    rejects(model, FIT, ValueError, r"sparse_categorical_crossentropy.*Received: y\.shape=\(8, 1\)",
            x=x, y=np.argmax(y, axis=1)[:, None])


# -- row: sparse labels outside [0, n_classes) or non-integer ----------------------------------------
SPARSE_BAD = [
    pytest.param(3, "int64", r"`y` holds a class label outside \[0, 3\).*Received: label .*\b3\b",
                 id="3"),
    pytest.param(-1, "int8", r"`y` holds a class label outside \[0, 3\).*Received: label .*-1\b",
                 id="-1"),
    pytest.param(1000, "int64", r"outside \[0, 3\).*Received: label .*1000", id="1000"),
    pytest.param(2**63, "uint64", r"outside \[0, 3\).*9223372036854775808", id="uint64-huge"),
    pytest.param(3, "float32", r"outside \[0, 3\).*Received: label .*\b3\.0", id="3.0"),
    pytest.param(1e300, "float64", r"outside \[0, 3\).*1e\+300", id="1e300"),
    pytest.param(1.5, "float64", r"`y` must hold integer class labels.*Received: non-integer.*1\.5",
                 id="1.5"),
    pytest.param(np.nan, "float64", r"`y` must hold integer class labels.*nan", id="nan"),
    pytest.param(np.inf, "float64", r"`y` must hold integer class labels.*inf", id="inf"),
]


@pytest.mark.parametrize("call", list(XY_CALLS))
@pytest.mark.parametrize("bad, dtype, match", SPARSE_BAD)
def test_bad_sparse_label_is_rejected_naming_it(bad, dtype, match, call):
    model, x, labels = make("scce")
    y = labels.astype(dtype)
    y[5] = bad
    rejects(model, XY_CALLS[call], ValueError, match, x=x, y=y)


def test_bad_sparse_label_in_validation_data_is_rejected():
    model, x, labels = make("scce")
    bad = labels.copy()
    bad[0] = 7
    rejects(model, lambda m, x, y, val: m.fit(x, y, validation_data=val, verbose=0), ValueError,
            r"`y_val` holds a class label outside \[0, 3\).*7", x=x, y=labels, val=(x, bad))


def test_sparse_labels_as_column_and_any_integer_dtype_are_accepted():
    model, x, labels = make("scce")
    ref = model.evaluate(x, labels, verbose=0)
    for y in (labels[:, None], labels.astype(np.uint8), labels.astype(np.float32),
              labels.astype(">i2")):
        assert accepts(lambda x, y: model.evaluate(x, y, verbose=0), x=x, y=y) == ref


# -- row: y shape (n,) vs output (n, 1) ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_flat_targets_are_accepted_as_a_column(kind):
    _, x, y = make(kind)
    results = []
    for targets in (y, y.reshape(-1)):
        model, _, _ = make(kind)
        hist = accepts(lambda x, y: model.fit(x, y, epochs=2, batch_size=4, verbose=0),
                       x=x, y=targets)
        results.append((hist.history, model.get_weights(), model.evaluate(x, targets, verbose=0)))
    assert results[0][0] == results[1][0] and results[0][2] == results[1][2]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call", list(XY_CALLS))
@pytest.mark.parametrize("kind, shape, match", [
    ("mse", (N, 2), r"`y` must have shape \(n, 1\).*Received: y\.shape=\(8, 2\)"),
    ("mse", (N, 1, 1), r"`y` must have shape \(n, 1\).*Received: y\.shape=\(8, 1, 1\)"),
    ("mse2", (N,), r"`y` must have shape \(n, 2\).*Received: y\.shape=\(8,\)"),
    ("mse2", (N, 1), r"`y` must have shape \(n, 2\).*Received: y\.shape=\(8, 1\)"),
    ("mse2", (N, 3), r"`y` must have shape \(n, 2\).*Received: y\.shape=\(8, 3\)"),
    ("bce", (N, 3), r"`y` must have shape \(n, 1\).*Received: y\.shape=\(8, 3\)"),
    ("cce", (N, 2), r"`y` must have shape \(n, 3\).*Received: y\.shape=\(8, 2\)"),
], ids=["mse-n2", "mse-n11", "mse2-n", "mse2-n1", "mse2-n3", "bce-n3", "cce-n2"])
def test_other_target_shape_mismatches_are_rejected(kind, shape, match, call):
    model, x, _ = make(kind)
    rejects(model, XY_CALLS[call], ValueError, match, x=x, y=np.zeros(shape))


# -- row: NaN or Inf in x, y, validation data, sample_weight --------------------------------------
def _fit_with(where):
    def call(m, x, y, bad):
        kw = {"x": x, "y": y}
        if where in ("x", "y"):
            kw[where] = bad
        elif where == "sample_weight":
            kw["sample_weight"] = bad
        elif where == "x_val":
            kw["validation_data"] = (bad, y)
        elif where == "y_val":
            kw["validation_data"] = (x, bad)
        return m.fit(verbose=0, **kw)
    return call


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["x", "y", "x_val", "y_val", "sample_weight"])
def test_non_finite_values_are_rejected(where, value, word):
    model, x, y = make("mse")
    base = {"x": x, "x_val": x, "y": y, "y_val": y, "sample_weight": np.ones(N)}[where]
    bad = base.copy()
    bad.flat[3] = value
    name = where
    rejects(model, _fit_with(where), ValueError, rf"Input {name} contains {word}", x=x, y=y, bad=bad)


@pytest.mark.parametrize("call", list(X_CALLS))
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", ">f8"])
def test_non_finite_x_is_rejected_for_every_float_dtype(call, dtype):
    model, x, y = make("mse")
    bad = x.astype(dtype)
    bad[2, 1] = np.nan
    rejects(model, X_CALLS[call], ValueError, r"Input x contains NaN", x=bad, y=y)


def test_non_finite_y_is_rejected_by_evaluate():
    model, x, y = make("mse")
    bad = y.copy()
    bad[0] = np.inf
    rejects(model, EVALUATE, ValueError, r"Input y contains Inf", x=x, y=bad)


@pytest.mark.parametrize("where", ["x", "y"])
def test_values_overflowing_float32_are_rejected_not_warned(where):
    model, x, y = make("mse")
    bad = {"x": x, "y": y}[where].copy()
    bad.flat[0] = 1e300
    rejects(model, _fit_with(where), ValueError,
            rf"Input {where} holds values too large for float32.*Received: {where}\.dtype=float64",
            x=x, y=y, bad=bad)


# -- row: 0 samples, 0 features -------------------------------------------------------------------------
@pytest.mark.parametrize("call", list(X_CALLS))
def test_zero_samples_are_rejected(call):
    model, _, _ = make("mse")
    rejects(model, X_CALLS[call], ValueError, r"`x` is empty.*Received: x\.shape=\(0, 4\)",
            x=np.zeros((0, D)), y=np.zeros((0, 1)))


def test_zero_validation_samples_are_rejected():
    model, x, y = make("mse")
    rejects(model, lambda m, x, y, val: m.fit(x, y, validation_data=val, verbose=0), ValueError,
            r"`x_val` is empty.*Received: x_val\.shape=\(0, 4\)", x=x, y=y,
            val=(np.zeros((0, D)), np.zeros((0, 1))))


@pytest.mark.parametrize("call", list(X_CALLS))
def test_zero_features_are_rejected(call):
    model, _, _ = make("mse")
    rejects(model, X_CALLS[call], ValueError, r"Received: x\.shape=\(5, 0\)",
            x=np.zeros((5, 0)), y=np.zeros((5, 1)))
    unbuilt = Sequential([layers.Dense(2)])
    unbuilt.compile(optimizer="sgd", loss="mse")
    rejects(unbuilt, X_CALLS[call], ValueError,
            r"`x` has a zero-sized feature dimension.*Received: x\.shape=\(5, 0\)",
            x=np.zeros((5, 0)), y=np.zeros((5, 2)))


@pytest.mark.parametrize("make_layer, match", [
    (lambda: layers.Dense(2, input_shape=(0,)), r"`input_shape`.*Received: input_shape=\(0,\)"),
    (lambda: layers.Dense(2, input_dim=0), r"`input_dim`.*Received: input_dim=0"),
    (lambda: fastdense.Input((0,)), r"`shape`.*Received: shape=\(0,\)"),
], ids=["input_shape", "input_dim", "Input"])
def test_zero_feature_input_declarations_are_rejected(make_layer, match):
    with pytest.raises(ValueError, match=match):
        make_layer()


def test_dimensions_beyond_blas_int_are_refused_before_any_copy():
    import tracemalloc

    model = Sequential([layers.Dense(2, input_shape=(1,))])
    huge = np.broadcast_to(np.zeros((1, 1), np.float64), (2**31, 1))  # 16 GB if materialized
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"`x` has a dimension >= 2\*\*31.*"
                                             r"Received: x\.shape=\(2147483648, 1\)"):
            model.predict(huge, verbose=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


# -- row: int / bool / uint8 / float16 / float64 into a float32 model ----------------------------------
CAST_DTYPES = ["bool", "int8", "uint8", "int32", "int64", "uint64", "float16", "float32",
               "float64", ">f8", ">i4"]


def _cast_source(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype).kind
    if kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    if kind in "iu":
        return rng.integers(0, 100, shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


@pytest.mark.parametrize("model_dtype", ["float32", "float64"])
@pytest.mark.parametrize("dtype", CAST_DTYPES)
def test_other_dtypes_are_cast_once_like_an_explicit_astype(dtype, model_dtype):
    fastdense.config.set_floatx(model_dtype)
    x = _cast_source(dtype, (12, D))
    y = _cast_source(dtype, (12, 1), seed=1)
    x_ref, y_ref = x.astype(model_dtype), y.astype(model_dtype)
    results = []
    for xx, yy in ((x, y), (x_ref, y_ref)):
        fastdense.utils.set_random_seed(5)
        model = Sequential([layers.Dense(3, activation="tanh", input_shape=(D,)), layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        pred = accepts(lambda x: model.predict(x, verbose=0), x=xx)
        assert pred.dtype == np.dtype(model_dtype)
        ev = accepts(lambda x, y: model.evaluate(x, y, verbose=0), x=xx, y=yy)
        hist = accepts(lambda x, y: model.fit(x, y, epochs=2, batch_size=5, verbose=0),
                       x=xx, y=yy).history
        results.append((pred, ev, hist, model.get_weights()))
    assert_same_run(*results)


# -- row: Fortran-order, strided, negative-stride, big-endian, read-only, np.memmap -----------------------
def _memmap(a, tmp_path, dtype=None, order="C"):
    path = tmp_path / f"mm_{a.ndim}_{np.dtype(dtype or a.dtype).str[1:]}_{order}.dat"
    mm = np.memmap(path, dtype=dtype or a.dtype, mode="w+", shape=a.shape, order=order)
    mm[...] = a
    mm.flush()
    del mm
    return np.memmap(path, dtype=dtype or a.dtype, mode="r", shape=a.shape, order=order)


def _readonly(a):
    b = a.copy()
    b.setflags(write=False)
    return b


LAYOUTS = {
    "fortran": lambda a, tmp: np.asfortranarray(a),
    "row-strided": lambda a, tmp: np.repeat(a, 2, axis=0)[::2],
    "col-strided": lambda a, tmp: np.repeat(a, 3, axis=-1)[..., ::3],
    "negative-stride": lambda a, tmp: a[::-1].copy()[::-1],
    "negative-col-stride": lambda a, tmp: a[..., ::-1].copy()[..., ::-1],
    "big-endian": lambda a, tmp: a.astype(a.dtype.newbyteorder(">")),
    "big-endian-strided": lambda a, tmp: np.repeat(a, 2, axis=0).astype(">f8")[::2],
    "read-only": lambda a, tmp: _readonly(a),
    "memmap": lambda a, tmp: _memmap(a, tmp),
    "memmap-float32-fortran-big-endian": lambda a, tmp: _memmap(a, tmp, ">f4", "F"),
}


def _normalized(a):
    """The contiguous, native-endian copy of `a` (same dtype family)."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))


@pytest.mark.parametrize("model_dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_give_the_result_of_the_contiguous_native_copy(layout, model_dtype, tmp_path):
    fastdense.config.set_floatx(model_dtype)
    x, labels = make_blobs(n=20, d=D, classes=3, seed=2)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "w").mkdir()
    x_l = LAYOUTS[layout](x, tmp_path / "x")
    y_l = LAYOUTS[layout](labels.astype(np.float64), tmp_path / "y")
    sw_l = LAYOUTS[layout](np.linspace(0.5, 2.0, 20), tmp_path / "w")
    if layout == "col-strided":
        assert not x_l.flags.c_contiguous
    results = []
    for xx, yy, ww in ((x_l, y_l, sw_l), (_normalized(x_l), _normalized(y_l), _normalized(sw_l))):
        fastdense.utils.set_random_seed(9)
        model = Sequential([layers.Dense(5, activation="relu", input_shape=(D,)),
                            layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        pred = accepts(lambda x: model.predict(x, verbose=0), x=xx)
        ev = accepts(lambda x, y, sw: model.evaluate(x, y, sample_weight=sw, verbose=0),
                     x=xx, y=yy, sw=ww)
        hist = accepts(lambda x, y, sw: model.fit(x, y, sample_weight=sw, epochs=2, batch_size=6,
                                                  validation_data=(x, y), verbose=0),
                       x=xx, y=yy, sw=ww).history
        results.append((pred, ev, hist, model.get_weights()))
    assert_same_run(*results)


@pytest.mark.parametrize("make_input", [
    lambda tmp: _readonly(np.ones((6, D), np.float32)),
    lambda tmp: _memmap(np.ones((6, D), np.float32), tmp),
], ids=["read-only", "memmap"])
def test_inputs_that_already_fit_are_not_copied(make_input, tmp_path):
    x = make_input(tmp_path)
    X = _validation.model_input("x", x, (D,), "float32")
    assert np.shares_memory(X, x)
    Y = losses.MeanSquaredError().prepare_targets(x, len(x), D, np.float32)
    assert np.shares_memory(Y, x)


# -- row: batch_size <= 0, bool, non-int; epochs < 0 or non-int -------------------------------------------
BAD_INTS = [0, -1, True, False, 2.5, "32", np.float64(4.0), [4]]


@pytest.mark.parametrize("where", ["fit", "evaluate", "predict", "validation_batch_size"])
@pytest.mark.parametrize("value", BAD_INTS, ids=repr)
def test_bad_batch_size_is_rejected(value, where):
    model, x, y = make("mse")
    name = "validation_batch_size" if where == "validation_batch_size" else "batch_size"
    calls = {
        "fit": lambda m, x, y: m.fit(x, y, batch_size=value, verbose=0),
        "evaluate": lambda m, x, y: m.evaluate(x, y, batch_size=value, verbose=0),
        "predict": lambda m, x, y: m.predict(x, batch_size=value, verbose=0),
        "validation_batch_size": lambda m, x, y: m.fit(
            x, y, validation_data=(x, y), validation_batch_size=value, verbose=0),
    }
    rejects(model, calls[where], (ValueError, TypeError),
            re.escape(f"`{name}` must be a positive integer. Received: {name}={value!r}"),
            x=x, y=y)


@pytest.mark.parametrize("value", [-1, -100, 1.5, 2.0, "2", True, None], ids=repr)
def test_bad_epochs_is_rejected(value):
    model, x, y = make("mse")
    rejects(model, lambda m, x, y: m.fit(x, y, epochs=value, verbose=0), (ValueError, TypeError),
            re.escape(f"`epochs` must be a non-negative integer. Received: epochs={value!r}"),
            x=x, y=y)


def test_numpy_integers_are_valid_sizes_and_zero_epochs_do_nothing():
    model, x, y = make("mse")
    before = snapshot(model)
    hist = model.fit(x, y, epochs=0, verbose=0)
    assert hist.history == {}
    assert_unchanged(model, before)
    model.fit(x, y, epochs=np.int64(1), batch_size=np.int32(3), verbose=0)
    assert model.predict(x, batch_size=np.uint8(2), verbose=0).shape == (N, 1)


# -- row: validation_split outside [0, 1) or leaving 0 train/val rows --------------------------------------
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, np.nan, np.inf, "0.2", True, None], ids=repr)
def test_validation_split_outside_unit_interval_is_rejected(value):
    model, x, y = make("mse")
    rejects(model, lambda m, x, y: m.fit(x, y, validation_split=value, verbose=0), ValueError,
            r"`validation_split` must be a float in \[0, 1\)\. Received: validation_split=", x=x, y=y)


@pytest.mark.parametrize("n, split, match", [
    (8, 1e-17, r"leaves 8 training and 0 validation samples out of 8"),
    (1, 0.5, r"leaves 0 training and 1 validation samples out of 1"),
    (3, 0.7, r"leaves 0 training and 3 validation samples out of 3"),
])
def test_validation_split_leaving_no_rows_is_rejected(n, split, match):
    model, x, y = make("mse")
    rejects(model, lambda m, x, y: m.fit(x, y, validation_split=split, verbose=0), ValueError,
            match + rf".*Received: validation_split={split}", x=x[:n], y=y[:n])


def test_validation_split_takes_the_last_rows_like_keras():
    model, x, y = make("mse")
    hist = accepts(lambda x, y: model.fit(x, y, validation_split=0.25, epochs=1, verbose=0),
                   x=x, y=y)
    assert hist.history["val_loss"][0] == pytest.approx(model.evaluate(x[6:], y[6:], verbose=0))


# -- row: unknown activation / loss / optimizer / metric names ----------------------------------------------
def test_unknown_activation_lists_valid_names_and_the_closest():
    with pytest.raises(ValueError, match=r"Unknown activation.*'relu'.*'sigmoid'.*'softmax'.*"
                                         r"Did you mean 'relu'\?.*Received: activation='rleu'"):
        layers.Dense(3, activation="rleu")
    with pytest.raises(ValueError, match=r"'softmax'.*Received: activation=.*lambda"):
        layers.Dense(3, activation=lambda z: z)


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "mean_sqared_error"},
     r"Unknown loss.*'categorical_crossentropy'.*'mse'.*Did you mean 'mean_squared_error'\?.*"
     r"Received: loss='mean_sqared_error'"),
    ({"loss": "categorical_crossentropyy"},
     r"Unknown loss.*Did you mean 'categorical_crossentropy'\?.*Received: loss="),
    ({"loss": lambda a, b: 0}, r"Unknown loss.*'mse'.*Received: loss=<function"),
    ({"metrics": ["acuracy"]},
     r"Unknown metric.*'accuracy'.*'mae'.*Did you mean 'accuracy'\?.*Received: metric='acuracy'"),
    ({"metrics": [42]}, r"Unknown metric.*Received: metric=42"),
    ({"metrics": "accuracy"}, r"`metrics` must be a list.*Received: metrics='accuracy'"),
    ({"optimizer": "sgdd"}, r"Unknown optimizer.*'adam'.*'sgd'.*Received: optimizer='sgdd'"),
    ({"optimizer": 42}, r"Unknown optimizer.*Received: optimizer=42"),
], ids=["loss", "loss-cce", "loss-callable", "metric", "metric-int", "metrics-str", "optimizer",
        "optimizer-int"])
def test_unknown_compile_names_are_rejected_and_leave_the_compile_state(kwargs, match):
    model, x, y = make("mse")
    args = {"optimizer": "sgd", "loss": "mse", "metrics": None, **kwargs}
    rejects(model, lambda m: m.compile(**args), ValueError, match)
    unbuilt = Sequential([layers.Dense(2)])
    rejects(unbuilt, lambda m: m.compile(**args), ValueError, match)
    assert not unbuilt.compiled


def test_unknown_optimizer_suggests_the_closest_name():
    model, _, _ = make("mse")
    rejects(model, lambda m: m.compile(optimizer="adamm", loss="mse"), ValueError,
            r"Did you mean 'adam'\?.*Received: optimizer='adamm'")


# -- row: learning_rate <= 0, NaN, Inf -------------------------------------------------------------------------
OPTIMIZER_CLASSES = [optimizers.SGD, optimizers.Adam, optimizers.AdamW, optimizers.RMSprop,
                     optimizers.Adagrad]


@pytest.mark.parametrize("value", [0, 0.0, -0.1, np.nan, np.inf, -np.inf, np.float32("nan"),
                                   "0.1", None, True], ids=repr)
@pytest.mark.parametrize("cls", OPTIMIZER_CLASSES, ids=lambda c: c.__name__)
def test_bad_learning_rate_is_rejected(cls, value):
    with pytest.raises(ValueError, match=r"`learning_rate` must be a positive finite number\. "
                                         r"Received: learning_rate="):
        cls(learning_rate=value)
    opt = cls(learning_rate=0.05)
    with pytest.raises(ValueError, match=r"`learning_rate`.*Received: learning_rate="):
        opt.learning_rate = value
    assert opt.learning_rate == 0.05


def test_schedule_returning_a_bad_rate_is_rejected_before_any_update():
    model, x, y = make("mse", opt="sgd")
    model.optimizer.learning_rate = lambda step: -1.0
    with pytest.raises(ValueError, match=r"learning-rate schedule returned a non-positive.*"
                                         r"Received: .*-1\.0"):
        model.fit(x, y, epochs=1, verbose=0)
    model.optimizer.learning_rate = 0.01


# -- row: fit/evaluate before compile; set_weights with wrong count/shapes -----------------------------------
@pytest.mark.parametrize("call", list(XY_CALLS) + ["test_on_batch"])
@pytest.mark.parametrize("built", [True, False])
def test_fit_and_evaluate_before_compile_are_rejected(call, built):
    fastdense.utils.set_random_seed(0)
    model = Sequential([layers.Dense(2, input_shape=(D,))] if built else [layers.Dense(2)])
    fn = XY_CALLS.get(call) or (lambda m, x, y: m.test_on_batch(x, y))
    rejects(model, fn, ValueError, r"You must call `compile\(\)` before using the model",
            x=_data(), y=np.zeros((N, 2)))
    assert model.built == built
    # predict needs no compile
    assert model.predict(_data(), verbose=0).shape == (N, 2)


SET_WEIGHTS_BAD = [
    pytest.param(lambda w: w[:1], ValueError, r"expects 4 weight arrays.*Received: 1 arrays", id="too-few"),
    pytest.param(lambda w: w + [w[-1]], ValueError, r"expects 4 weight arrays.*Received: 5 arrays",
                 id="too-many"),
    pytest.param(lambda w: [], ValueError, r"Received: 0 arrays", id="empty"),
    pytest.param(lambda w: [w[0].T] + w[1:], ValueError,
                 r"Weight 0 .*shape \(4, 3\)\. Received: weights\[0\]\.shape=\(3, 4\)", id="transposed"),
    pytest.param(lambda w: w[:3] + [np.zeros((1, 1))], ValueError,
                 r"Weight 3 .*shape \(1,\)\. Received: weights\[3\]\.shape=\(1, 1\)", id="last-bad"),
    pytest.param(lambda w: w[:2] + [np.full_like(w[2], np.nan)] + w[3:], ValueError,
                 r"Weight 2 contains NaN or Inf.*Received: weights\[2\]", id="nan"),
    pytest.param(lambda w: w[:1] + [np.full(w[1].shape, "a")] + w[2:], TypeError,
                 r"`weights\[1\]`.*Received: weights\[1\]\.dtype=<U1", id="strings"),
]


@pytest.mark.parametrize("mutate, exc, match", SET_WEIGHTS_BAD)
def test_bad_set_weights_is_rejected_and_leaves_the_model_unchanged(mutate, exc, match):
    model, _, _ = make("mse")
    new = [w + 1.0 for w in model.get_weights()]  # valid values that would change every weight
    rejects(model, lambda m, w: m.set_weights(w), exc, match, w=mutate(new))


@pytest.mark.parametrize("mutate, match", [
    (lambda w: w[:1], r"Layer 'l0' expects 2 weight arrays\. Received: 1 arrays"),
    (lambda w: [w[0], np.zeros(4)], r"Layer 'l0' weight 1 \(bias\) has shape \(3,\)\. "
                                   r"Received: weights\[1\]\.shape=\(4,\)"),
])
def test_bad_layer_set_weights_is_rejected(mutate, match):
    fastdense.utils.set_random_seed(0)
    model = Sequential([layers.Dense(3, input_shape=(D,), name="l0"), layers.Dense(1)])
    layer = model.layers[0]
    new = [w + 1.0 for w in layer.get_weights()]
    rejects(model, lambda m, w: layer.set_weights(w), ValueError, match, w=mutate(new))


# -- row: Dense(units=0 / -3 / 2.5 / "64") ----------------------------------------------------------------------
@pytest.mark.parametrize("units", [0, -3, 2.5, "64", True, False, None, np.float64(3.0), [3]],
                         ids=repr)
def test_bad_dense_units_are_rejected(units):
    with pytest.raises(ValueError, match=r"`units`.*positive integer.*Received: units="
                                         + re.escape(repr(units))):
        layers.Dense(units)


def test_numpy_integer_units_are_accepted():
    assert layers.Dense(np.int64(3)).units == 3


# -- metrics whose targets do not match the output --------------------------------------------------------------
@pytest.mark.parametrize("metric", ["mse", "mae", "binary_accuracy"])
def test_elementwise_metric_with_sparse_labels_is_rejected(metric):
    model, x, labels = make("scce")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=[metric])
    rejects(model, EVALUATE, ValueError, rf"{metric}.*Received: y\.shape=\(8,\)", x=x, y=labels)


# -- a failed call leaves an unbuilt model unbuilt -------------------------------------------------------------
@pytest.mark.parametrize("case", ["predict-nan", "fit-bad-y"])
def test_rejected_first_call_leaves_an_unbuilt_model_unbuilt(case):
    model = Sequential([layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    if case == "predict-nan":
        rejects(model, PREDICT, ValueError, r"Input x contains NaN", x=np.full((4, 3), np.nan))
    else:
        rejects(model, FIT, ValueError, r"Received: y\.shape=\(4, 7\)",
                x=np.ones((4, 3)), y=np.ones((4, 7)))
    assert model.predict(np.ones((2, 5)), verbose=0).shape == (2, 2)


# ================================================================================================
# Numerics
# ================================================================================================
DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_softmax_are_stable_at_plus_minus_1e4(dtype):
    z = np.array([[-1e4, -1e3, -100.0, 0.0, 100.0, 1e3, 1e4]], dtype=dtype)
    s = fastdense.activations.sigmoid(z)
    assert s.dtype == np.dtype(dtype)
    assert s[0, 0] == 0.0 and s[0, 1] == 0.0 and s[0, -1] == 1.0 and s[0, -2] == 1.0
    assert s[0, 3] == 0.5 and np.all(np.diff(s[0]) >= 0)
    for row in (z, -z):
        p = fastdense.activations.softmax(row)
        assert np.isfinite(p).all()
        np.testing.assert_array_equal(p[0], (row[0] == row[0].max()).astype(dtype))
    # Through a model: output logits of +-1e4 (and 1e6, 1e30) from the layer itself.
    fastdense.config.set_floatx(dtype)
    sig = Sequential([layers.Dense(1, activation="sigmoid", input_shape=(1,))])
    sig.set_weights([np.ones((1, 1)), np.zeros(1)])
    xs = np.array([[-1e4], [1e4], [-1e30], [1e30], [0.0]])
    np.testing.assert_array_equal(sig.predict(xs, verbose=0)[:, 0], [0, 1, 0, 1, 0.5])
    soft = Sequential([layers.Dense(3, activation="softmax", input_shape=(1,))])
    soft.set_weights([np.array([[1.0, 0.0, -1.0]]), np.zeros(3)])
    p = soft.predict(np.array([[-1e4], [1e4], [0.0]]), verbose=0)
    np.testing.assert_allclose(p, [[0, 0, 1], [1, 0, 0], [1 / 3] * 3], rtol=1e-6, atol=0)
    # Losses from those logits are finite (computed from the logits, not from a 0 probability).
    sig.compile(optimizer="sgd", loss="binary_crossentropy")
    soft.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert math.isfinite(sig.evaluate(xs[:2], np.array([1.0, 0.0]), verbose=0))
    assert math.isfinite(soft.evaluate(np.array([[-1e4], [1e4]]), np.eye(3)[[0, 2]], verbose=0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_crossentropy_clips_probabilities(dtype):
    cce = losses.CategoricalCrossentropy()
    y = np.array([[1.0, 0.0, 0.0]])
    worst = cce(y, np.array([[0.0, 0.5, 0.5]], dtype=dtype))
    assert worst == pytest.approx(-math.log(1e-7), rel=1e-6)
    best = cce(y, np.array([[1.0, 0.0, 0.0]], dtype=dtype))
    assert best == pytest.approx(-math.log(1 - 1e-7), rel=1e-3) and best > 0
    # The same inside a model whose (linear) output is exactly 0 for the true class.
    fastdense.config.set_floatx(dtype)
    model = Sequential([layers.Dense(3, input_shape=(2,))])
    model.set_weights([np.zeros((2, 3)), np.array([0.0, 0.5, 0.5])])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    loss = model.evaluate(np.ones((4, 2)), np.tile(y, (4, 1)), verbose=0)
    assert loss == pytest.approx(-math.log(1e-7), rel=1e-6)


def _exploding(seed=0):
    fastdense.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 4)) * 100
    y = x.sum(axis=1, keepdims=True) * 1e3
    model = Sequential([layers.Dense(8, input_shape=(4,)), layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=10.0), loss="mse")
    return model, x, y


def test_non_finite_loss_raises_naming_epoch_and_batch_and_keeps_finite_weights():
    model, x, y = _exploding()
    with pytest.raises(FloatingPointError, match=r"The loss became (nan|inf) at epoch 1, batch "
                                                 r"(\d+) \(of 8\).*TerminateOnNaN") as info:
        model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    bad_batch = int(info.value.args[0].split("batch ")[1].split(" ")[0])  # 1-based
    weights = model.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    # The weights are those after the last good batch: replay the good batches one by one.
    replay, _, _ = _exploding()
    for b in range(bad_batch - 1):
        replay.train_on_batch(x[8 * b:8 * (b + 1)], y[8 * b:8 * (b + 1)])
    for a, b in zip(weights, replay.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == bad_batch - 1


def test_terminate_on_nan_stops_quietly():
    model, x, y = _exploding()
    hist = model.fit(x, y, epochs=3, batch_size=8, verbose=0,
                     callbacks=[callbacks.TerminateOnNaN()])
    assert model.stop_training
    assert len(hist.history["loss"]) == 1 and not math.isfinite(hist.history["loss"][0])
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_float32_and_float64_runs_from_one_seed_agree():
    x, y = make_blobs(n=300, d=6, classes=3, seed=3)
    out = {}
    for dtype in DTYPES:
        fastdense.config.set_floatx(dtype)
        fastdense.utils.set_random_seed(7)
        model = Sequential([layers.Dense(16, activation="relu", input_shape=(6,)),
                            layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=3, batch_size=16, verbose=0)
        out[dtype] = model.predict(x, verbose=0)
        assert out[dtype].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out["float32"].argmax(1), out["float64"].argmax(1))
    np.testing.assert_allclose(out["float32"], out["float64"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_is_batch_size_invariant_and_equals_row_by_row(dtype):
    fastdense.config.set_floatx(dtype)
    fastdense.utils.set_random_seed(1)
    n, d = 600, 20  # beyond the 256-row own-GEMM threshold, with odd remainders
    model = Sequential([layers.Dense(50, activation="sigmoid", input_shape=(d,)),
                        layers.Dense(10, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(n, d))
    rows = np.concatenate([model.predict(x[i:i + 1], verbose=0) for i in range(0, n, 7)])
    tol = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}[dtype]
    for bs in (1, 2, 7, 32, 256, 257, 599, 600, 4096):
        p = model.predict(x, batch_size=bs, verbose=0)
        np.testing.assert_allclose(p[::7], rows, **tol, err_msg=f"batch_size={bs}")
    np.testing.assert_allclose(model(x)[::7], rows, **tol)
    np.testing.assert_allclose(model.predict_on_batch(x)[::7], rows, **tol)
