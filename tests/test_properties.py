"""Property tests: any shape, dtype and memory layout gives either the documented error or a finite
result of the right shape, equal to the result on the normalized (C-contiguous, native, model
dtype) input, and leaves the input untouched."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fastdense  # noqa: E402
from fastdense import Sequential, layers  # noqa: E402

SOURCE_DTYPES = ["bool", "int8", "uint8", "int64", "float16", "float32", "float64"]
LAYOUTS = ["C", "F", "strided", "negative-stride", "big-endian"]
# NaN / Inf must be refused; 1e300 is finite in float64 but Inf once cast to float32.
SPECIALS = [None, None, None, np.nan, np.inf, -np.inf, 1e300]
NON_FINITE = r"Input (x|y) (contains (NaN|Inf)|holds values too large for float32)"

# Hypothesis's failure report imports mypy_extensions, which warns; with warnings as errors that
# would turn a falsifying example into a pytest INTERNALERROR that hides it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

FAST = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _array(rng, dtype, shape, special=None):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        a = rng.integers(0, 2, shape).astype(dtype)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        a = rng.integers(max(info.min, -100), min(info.max, 255) + 1, shape).astype(dtype)
    else:
        a = (rng.normal(size=shape) * 10).astype(dtype)
    if special is not None and dtype.kind == "f" and (special != 1e300 or dtype == np.float64):
        a.flat[rng.integers(0, a.size)] = special
    return a


def _layout(a, layout):
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        return np.repeat(np.repeat(a, 2, axis=0), 3, axis=1)[::2, ::3]
    if layout == "negative-stride":
        return a[::-1, ::-1].copy()[::-1, ::-1]
    if layout == "big-endian":
        return a.astype(a.dtype.newbyteorder(">"))
    raise AssertionError(layout)


def _specials(model_dtype, *specials):
    # 1e300 is refused by a float32 model; a float64 model takes it and may then overflow
    # (FloatingPointError, tested in test_validation.py), so it is not drawn there.
    return [None if (v == 1e300 and model_dtype == "float64") else v for v in specials]


def _normalized(a, model_dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(a, dtype=model_dtype)


def _model(d, units, out_act, lazy, seed):
    fastdense.utils.set_random_seed(seed)
    first = layers.Dense(5, activation="relu") if lazy else \
        layers.Dense(5, activation="relu", input_shape=(d,))
    return Sequential([first, layers.Dense(units, activation=out_act)])


common = dict(
    n=st.integers(1, 40), d=st.integers(1, 12), units=st.integers(1, 6),
    dtype=st.sampled_from(SOURCE_DTYPES), layout=st.sampled_from(LAYOUTS),
    model_dtype=st.sampled_from(["float32", "float64"]), special=st.sampled_from(SPECIALS),
    lazy=st.booleans(), seed=st.integers(0, 2**32 - 1),
)


@FAST
@given(out_act=st.sampled_from(["linear", "sigmoid", "softmax", "tanh"]), **common)
def test_predict_any_shape_dtype_layout(n, d, units, dtype, layout, model_dtype, special, lazy,
                                        seed, out_act):
    fastdense.config.set_floatx(model_dtype)
    (special,) = _specials(model_dtype, special)
    try:
        rng = np.random.default_rng(seed)
        x = _layout(_array(rng, dtype, (n, d), special), layout)
        x_copy = x.copy()
        norm = _normalized(x, model_dtype)
        model = _model(d, units, out_act, lazy, seed)
        if not np.isfinite(norm).all():
            with pytest.raises(ValueError, match=NON_FINITE):
                model.predict(x, verbose=0)
        else:
            out = model.predict(x, verbose=0)
            assert out.shape == (n, units) and out.dtype == np.dtype(model_dtype)
            assert np.isfinite(out).all()
            np.testing.assert_array_equal(out, model.predict(norm, verbose=0))
            np.testing.assert_array_equal(model(x), out)
        np.testing.assert_array_equal(x, x_copy)
        assert x.dtype == x_copy.dtype
    finally:
        fastdense.config.set_floatx("float32")


@FAST
@given(y_dtype=st.sampled_from(SOURCE_DTYPES), y_layout=st.sampled_from(LAYOUTS),
       y_special=st.sampled_from(SPECIALS), batch_size=st.integers(1, 16), **common)
def test_one_epoch_fit_any_shape_dtype_layout(n, d, units, dtype, layout, model_dtype, special,
                                              lazy, seed, y_dtype, y_layout, y_special,
                                              batch_size):
    fastdense.config.set_floatx(model_dtype)
    special, y_special = _specials(model_dtype, special, y_special)
    try:
        rng = np.random.default_rng(seed)
        x = _layout(_array(rng, dtype, (n, d), special), layout)
        y = _layout(_array(rng, y_dtype, (n, units), y_special), y_layout)
        copies = x.copy(), y.copy()
        norm_x, norm_y = _normalized(x, model_dtype), _normalized(y, model_dtype)
        results = []
        for xx, yy in ((x, y), (norm_x, norm_y)):
            model = _model(d, units, "linear", lazy, seed)
            model.compile(optimizer="adam", loss="mse")
            if not (np.isfinite(norm_x).all() and np.isfinite(norm_y).all()):
                with pytest.raises(ValueError, match=NON_FINITE):
                    model.fit(xx, yy, epochs=1, batch_size=batch_size, verbose=0)
                break
            hist = model.fit(xx, yy, epochs=1, batch_size=batch_size, shuffle=True, verbose=0)
            weights = model.get_weights()
            assert np.isfinite(hist.history["loss"][0])
            assert all(w.dtype == np.dtype(model_dtype) and np.isfinite(w).all() for w in weights)
            assert [w.shape for w in weights] == [(d, 5), (5,), (5, units), (units,)]
            results.append((hist.history, weights))
        if len(results) == 2:
            assert results[0][0] == results[1][0]
            for a, b in zip(results[0][1], results[1][1]):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(x, copies[0])
        np.testing.assert_array_equal(y, copies[1])
    finally:
        fastdense.config.set_floatx("float32")


@FAST
@given(n=st.integers(1, 40), units=st.integers(2, 6), label_dtype=st.sampled_from(
    ["int8", "uint8", "int64", "float32", "float64"]), offset=st.integers(-3, 3),
    seed=st.integers(0, 2**32 - 1))
def test_sparse_labels_in_range_train_and_out_of_range_are_refused(n, units, label_dtype, offset,
                                                                    seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    labels = rng.integers(0, units, n)
    labels[rng.integers(0, n)] += offset  # may leave [0, units) either way
    info_ok = np.dtype(label_dtype).kind == "f" or (
        np.iinfo(label_dtype).min <= labels.min() and labels.max() <= np.iinfo(label_dtype).max)
    if not info_ok:
        return
    y = labels.astype(label_dtype)
    model = _model(3, units, "softmax", False, seed)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if labels.min() < 0 or labels.max() >= units:
        with pytest.raises(ValueError, match=rf"`y` holds a class label outside \[0, {units}\)"):
            model.fit(x, y, epochs=1, verbose=0)
        assert model.optimizer.iterations == 0
    else:
        hist = model.fit(x, y, epochs=1, verbose=0).history
        assert np.isfinite(hist["loss"][0]) and 0.0 <= hist["accuracy"][0] <= 1.0
