"""Optimizers on plain arrays (Keras 3's `apply`/`apply_gradients`), the textbook's first example
with fastdense.ops, and the classic custom training loop on a model (`trainable_variables`,
`loss_and_gradients`), which gives `fit`'s weights."""
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastdense
from fastdense import Sequential, losses, ops, optimizers
from fastdense.layers import Dense, Dropout

# The README's section "Dense math and the classic training loop", executed as written.
README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
TEXTBOOK_EXAMPLE = next(b for b in _BLOCKS if "from fastdense import ops" in b)
CUSTOM_LOOP_EXAMPLE = next(b for b in _BLOCKS if "model.loss_and_gradients(xb, yb)" in b)


def _run(code, scope):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README example", "exec"), scope)
    return out.getvalue()


def test_textbook_first_example_runs_and_learns_the_line():
    scope = {}
    printed = _run(TEXTBOOK_EXAMPLE, scope)
    assert printed.count("epoch") == 10
    assert abs(scope["w"][0, 0] - 3) < 0.01 and abs(scope["b"][0] - 2) < 0.01
    assert scope["w"].dtype == np.float32 and scope["optimizer"].iterations == 10


def test_textbook_example_is_plain_gradient_descent():
    """The same ten steps written in float64 NumPy: w -= 0.3 * dL/dw with L = mean((xw+b-y)^2)."""
    x = np.random.default_rng(0).normal(size=(2000, 1)).astype("float32").astype(np.float64)
    y = 3 * x + 2
    w, b = 0.0, 0.0
    for _ in range(10):
        r = x[:, 0] * w + b - y[:, 0]
        w, b = w - 0.3 * np.mean(2 * r * x[:, 0]), b - 0.3 * np.mean(2 * r)
    scope = {}
    _run(TEXTBOOK_EXAMPLE, scope)
    assert scope["w"][0, 0] == pytest.approx(w, rel=1e-5)
    assert scope["b"][0] == pytest.approx(b, rel=1e-5)


def _fashion_like(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.random((n, 784)) * 0.5 + np.repeat(np.eye(10), 79, axis=1)[:, :784][y] * 0.5
    return x, fastdense.utils.to_categorical(y)


def test_custom_loop_example_runs_and_equals_fit():
    x_train, y_train_encoded = _fashion_like()
    fastdense.utils.set_random_seed(7)
    scope = {"fastdense": fastdense, "Sequential": Sequential, "Dense": Dense,
             "x_train": x_train, "y_train_encoded": y_train_encoded}
    # the same initial weights as the example's model gets
    fastdense.utils.set_random_seed(7)
    ref = Sequential([Dense(100, activation="sigmoid", input_shape=(784,)),
                      Dense(10, activation="softmax")])
    fastdense.utils.set_random_seed(7)
    printed = _run(CUSTOM_LOOP_EXAMPLE, scope)
    assert printed.count("epoch") == 2
    ref.compile(optimizer=optimizers.SGD(learning_rate=0.01), loss="categorical_crossentropy")
    ref.fit(x_train, y_train_encoded, batch_size=32, epochs=2, shuffle=False, verbose=0)
    for got, expect in zip(scope["model"].get_weights(), ref.get_weights()):
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    assert scope["optimizer"].iterations == ref.optimizer.iterations == 16


# ---------------------------------------------------------------------------------------------
# Optimizers on arrays: Keras 3's update rules written out in float64
# ---------------------------------------------------------------------------------------------
def _reference_updates(kind, params, grads_per_step, lr=0.1, **hp):
    """Applies Keras 3's rule (as documented in KERAS.md) step by step, in float64."""
    p = [a.astype(np.float64).copy() for a in params]
    state = [dict(m=np.zeros_like(a), v=np.zeros_like(a), mg=np.zeros_like(a),
                  acc=np.full_like(a, hp.get("initial_accumulator_value", 0.1))) for a in p]
    for t, grads in enumerate(grads_per_step):
        grads = [g.astype(np.float64) for g in grads]
        if hp.get("global_clipnorm"):
            norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
            if norm > hp["global_clipnorm"]:
                grads = [g * hp["global_clipnorm"] / norm for g in grads]
        if hp.get("clipvalue"):
            grads = [np.clip(g, -hp["clipvalue"], hp["clipvalue"]) for g in grads]
        rate = lr(t) if callable(lr) else lr
        for w, g, s in zip(p, grads, state):
            if hp.get("weight_decay"):
                w -= w * hp["weight_decay"] * rate
            if kind == "sgd":
                mom = hp.get("momentum", 0.0)
                if not mom:
                    w -= rate * g
                else:
                    s["m"][...] = mom * s["m"] - rate * g
                    w += (mom * s["m"] - rate * g) if hp.get("nesterov") else s["m"]
            elif kind == "adam":
                b1, b2, eps = 0.9, 0.999, 1e-7
                alpha = rate * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))
                s["m"] += (g - s["m"]) * (1 - b1)
                s["v"] += (g * g - s["v"]) * (1 - b2)
                w -= alpha * s["m"] / (np.sqrt(s["v"]) + eps)
            elif kind == "rmsprop":
                rho, eps, mom = 0.9, 1e-7, hp.get("momentum", 0.0)
                s["v"][...] = rho * s["v"] + (1 - rho) * g * g
                denom = s["v"] + eps
                if hp.get("centered"):
                    s["mg"][...] = rho * s["mg"] + (1 - rho) * g
                    denom = s["v"] - s["mg"] ** 2 + eps
                step = rate * g / np.sqrt(denom)
                if mom:
                    s["m"][...] = mom * s["m"] + step
                    step = s["m"]
                w -= step
            elif kind == "adagrad":
                s["acc"] += g * g
                w -= rate * g / np.sqrt(s["acc"] + 1e-7)
    return p


def _schedule():
    return optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)


OPTIMIZER_CASES = [
    ("sgd", lambda: optimizers.SGD(0.1), {}),
    ("sgd", lambda: optimizers.SGD(0.1, momentum=0.9), {"momentum": 0.9}),
    ("sgd", lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
     {"momentum": 0.9, "nesterov": True}),
    ("adam", lambda: optimizers.Adam(0.1), {}),
    ("adam", lambda: optimizers.AdamW(0.1), {"weight_decay": 0.004}),
    ("rmsprop", lambda: optimizers.RMSprop(0.1), {}),
    ("rmsprop", lambda: optimizers.RMSprop(0.1, momentum=0.5, centered=True),
     {"momentum": 0.5, "centered": True}),
    ("adagrad", lambda: optimizers.Adagrad(0.1), {}),
    ("sgd", lambda: optimizers.SGD(0.1, clipvalue=0.3), {"clipvalue": 0.3}),
    ("adam", lambda: optimizers.Adam(0.1, global_clipnorm=0.5), {"global_clipnorm": 0.5}),
    ("sgd", lambda: optimizers.SGD(_schedule()), {"lr": lambda t: 0.1 * 0.5 ** (t / 2)}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,make,hp", OPTIMIZER_CASES)
def test_apply_gradients_follows_keras_rules_and_keeps_state(kind, make, hp, dtype):
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=4).astype(dtype)]
    steps = [[rng.normal(size=a.shape).astype(dtype) for a in params] for _ in range(4)]
    hp = dict(hp)
    lr = hp.pop("lr", 0.1)
    expect = _reference_updates(kind, params, steps, lr=lr, **hp)
    opt = make()
    variables = [a.copy() for a in params]
    ids = [id(v) for v in variables]
    for k, grads in enumerate(steps):
        before = [g.copy() for g in grads]
        if k % 2:
            assert opt.apply_gradients(zip(grads, variables)) == k + 1
        else:
            opt.apply(grads, variables)
        for g, c in zip(grads, before):
            np.testing.assert_array_equal(g, c)  # gradients are never modified
    assert [id(v) for v in variables] == ids and opt.iterations == 4
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for got, ref in zip(variables, expect):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, **tol)


def test_build_then_apply_without_variables_and_strided_variables():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(4, 6))
    view = base[:, ::2]             # not contiguous: still updated in place
    other = rng.normal(size=3)
    opt = optimizers.Adam(0.05)
    opt.build([view, other])
    assert opt.built
    g = [np.ones((4, 3)), np.ones(3)]
    expect = _reference_updates("adam", [view, other], [g, g], lr=0.05)
    opt.apply(g)
    opt.apply(g)
    np.testing.assert_allclose(base[:, ::2], expect[0], rtol=1e-12)
    np.testing.assert_allclose(other, expect[1], rtol=1e-12)


def test_empty_call_is_a_no_op_that_does_not_build():
    opt = optimizers.SGD(0.5)
    assert opt.apply_gradients(zip([np.ones(2)], [])) == 0
    assert not opt.built and opt.iterations == 0
    w = np.ones(2)
    opt.apply_gradients([(np.ones(2), w)])
    np.testing.assert_array_equal(w, [0.5, 0.5])


def test_none_gradient_skips_its_variable_with_a_warning():
    a, b = np.ones(2), np.ones(3)
    opt = optimizers.SGD(0.5)
    with pytest.warns(UserWarning, match="Gradients do not exist for 1 of the 2 variables"):
        opt.apply_gradients([(np.ones(2), a), (None, b)])
    np.testing.assert_array_equal(a, [0.5, 0.5])
    np.testing.assert_array_equal(b, [1, 1, 1])


def test_optimizer_serves_fit_and_arrays_side_by_side():
    """The flat-vector state fit uses and the per-array state are separate; iterations count both."""
    x, y = np.random.default_rng(2).normal(size=(64, 3)), np.random.default_rng(3).normal(size=64)
    opt = optimizers.Adam(0.01)
    m = Sequential([Dense(2, input_shape=(3,)), Dense(1)])
    m.compile(optimizer=opt, loss="mse")
    w = np.zeros(5)
    opt.apply_gradients([(np.ones(5), w)])
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    opt.apply_gradients([(np.ones(5), w)])
    assert opt.iterations == 4 and opt._slots.size == 2 * m.count_params()
    assert np.all(w < 0)


def _var_errors():
    ro = np.ones(3)
    ro.flags.writeable = False
    return [
        (lambda o: o.apply_gradients([(np.ones(3), ro)]), ValueError,
         r"`trainable_variables\[0\]` is read-only.*writeable=False"),
        (lambda o: o.apply_gradients([(np.ones(3), [1.0, 2.0, 3.0])]), TypeError,
         r"must be a NumPy array, which the optimizer updates in place. .* of type list"),
        (lambda o: o.apply_gradients([(np.ones(3), np.ones(3, np.int64))]), TypeError,
         r"must have dtype float32 or float64.*dtype=int64"),
        (lambda o: o.apply_gradients([(np.ones(3), np.ones(3, ">f8"))]), TypeError,
         r"native byte order"),
        (lambda o: o.apply_gradients([(np.ones(4), np.ones(3))]), ValueError,
         r"`grads\[0\]` must have the shape of its variable, \(3,\). Received: grads\[0\].shape=\(4,\)"),
        (lambda o: o.apply_gradients([(np.ones(3, np.int64), np.ones(3))]), TypeError,
         r"`grads\[0\]` must hold floating-point values.*int64"),
        (lambda o: o.apply_gradients([(np.array([1.0, np.nan, 0]), np.ones(3))]), ValueError,
         r"`grads\[0\]` contains NaN or Inf"),
        (lambda o: o.apply_gradients([(np.ones(3), np.ones(3), 1)]), ValueError,
         r"\(gradient, variable\) pairs.*item 0 of type tuple"),
        (lambda o: o.apply([np.ones(3)], [np.ones(3), np.ones(3)]), ValueError,
         r"one gradient per variable. Received: 1 gradients for 2 variables"),
        (lambda o: o.apply([None], [np.ones(3)]), ValueError, r"No gradients provided"),
        (lambda o: o.apply([np.ones(3)]), ValueError, r"optimizer must already be built"),
        (lambda o: o.build(np.ones(3)), TypeError, r"`var_list` must be a list of arrays"),
    ]


@pytest.mark.parametrize("call,exc,match", _var_errors())
def test_bad_variables_and_gradients_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(optimizers.SGD(0.1))


def test_errors_change_nothing_and_unknown_variables_are_refused():
    a, b, c = np.ones(2), np.ones(2), np.ones(2)
    opt = optimizers.SGD(0.1, momentum=0.9)
    opt.apply_gradients([(np.ones(2), a), (np.ones(2), b)])
    snapshot = [a.copy(), b.copy()]
    with pytest.raises(ValueError, match=r"Unknown variable: this optimizer was built with 2 "
                                         r"arrays.*Received: trainable_variables\[1\] of shape "
                                         r"\(2,\), not one of them"):
        opt.apply_gradients([(np.ones(2), a), (np.ones(2), c)])
    with pytest.raises(ValueError, match=r"`grads\[1\]` contains NaN"):
        opt.apply([np.ones(2), np.array([np.inf, 0.0])], [a, b])
    with pytest.raises(ValueError, match=r"`grads\[1\]` must have the shape"):
        opt.apply([np.ones(2), np.ones(3)], [a, b])
    np.testing.assert_array_equal(a, snapshot[0])
    np.testing.assert_array_equal(b, snapshot[1])
    assert opt.iterations == 1
    with pytest.raises(ValueError, match=r"Each variable may appear once.*var_list\[1\] twice"):
        opt.build([a, a])


# ---------------------------------------------------------------------------------------------
# The custom training loop on a model
# ---------------------------------------------------------------------------------------------
def _model(opt="adam", dtype=None, regularize=False, dropout=0.0, seed=5):
    fastdense.utils.set_random_seed(seed)
    layers = [Dense(6, activation="tanh", input_shape=(4,), dtype=dtype,
                    kernel_regularizer="l2" if regularize else None)]
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Dense(3, activation="softmax", dtype=dtype))
    m = Sequential(layers)
    m.compile(optimizer=opt, loss="categorical_crossentropy")
    return m


def _xy(n=70, seed=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), np.eye(3)[rng.integers(0, 3, n)]


def test_trainable_variables_are_the_models_weights_in_place():
    m = _model()
    tv = m.trainable_variables
    assert len(tv) == 4 and [v.shape for v in tv] == [(4, 6), (6,), (6, 3), (3,)]
    assert m.trainable_weights == tv or all(a is b for a, b in zip(m.trainable_weights, tv))
    assert m.non_trainable_weights == []
    x, _ = _xy()
    before = m.predict(x, verbose=0)
    tv[1] += 1.0   # in place: the model sees it
    assert not np.allclose(m.predict(x, verbose=0), before)
    m.layers[0].trainable = False
    assert [v.shape for v in m.trainable_weights] == [(6, 3), (3,)]
    assert [v.shape for v in m.non_trainable_weights] == [(4, 6), (6,)]
    assert _model().trainable_weights and Sequential([Dense(2)]).trainable_weights == []


@pytest.mark.parametrize("regularize", [False, True])
def test_loss_and_gradients_match_central_differences(float64, regularize):
    m = _model(regularize=regularize)
    x, y = _xy(n=9)
    sw = np.linspace(0.5, 1.5, 9)
    loss, grads = m.loss_and_gradients(x, y, sample_weight=sw)
    assert loss == pytest.approx(m.evaluate(x, y, sample_weight=sw, batch_size=9, verbose=0),
                                 rel=1e-12)

    def f():
        return m.evaluate(x, y, sample_weight=sw, batch_size=9, verbose=0)

    numeric = []
    for v in m.trainable_variables:
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            old = v[idx]
            v[idx] = old + 1e-6
            up = f()
            v[idx] = old - 1e-6
            down = f()
            v[idx] = old
            g[idx] = (up - down) / 2e-6
        numeric.append(g)
    for got, num, v in zip(grads, numeric, m.trainable_variables):
        assert got.shape == v.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, num, rtol=1e-4, atol=1e-7)


def test_loss_and_gradients_leaves_the_model_alone_and_returns_new_arrays():
    m = _model()
    x, y = _xy()
    w = m.get_weights()
    loss1, g1 = m.loss_and_gradients(x, y)
    loss2, g2 = m.loss_and_gradients(x, y)
    for a, b in zip(w, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loss1 == loss2 and m.optimizer.iterations == 0
    assert all(a is not b and np.array_equal(a, b) for a, b in zip(g1, g2))


def test_loss_and_gradients_runs_dropout_in_training_mode():
    m = _model(dropout=0.5)
    x, y = _xy()
    eval_loss = m.evaluate(x, y, batch_size=len(x), verbose=0)
    losses_seen = {m.loss_and_gradients(x, y)[0] for _ in range(3)}
    assert len(losses_seen) == 3 and eval_loss not in losses_seen


def test_loss_and_gradients_gradients_skip_frozen_layers():
    m = _model()
    x, y = _xy()
    _, full = m.loss_and_gradients(x, y)
    m.layers[0].trainable = False
    _, part = m.loss_and_gradients(x, y)
    assert len(part) == 2
    # (a frozen first layer runs on another kernel path: same maths, float32 rounding)
    for a, b in zip(part, full[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make,regularize", [
    (lambda: optimizers.SGD(0.1), False),
    (lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True), True),
    (lambda: optimizers.Adam(0.01), False),
    (lambda: optimizers.RMSprop(0.01, global_clipnorm=0.1), True),
    (lambda: optimizers.AdamW(optimizers.schedules.InverseTimeDecay(0.01, 2, 0.5)), False),
])
def test_custom_loop_gives_fits_weights(make, regularize, dtype):
    x, y = _xy()
    sw = np.random.default_rng(9).uniform(0.5, 1.5, len(x))
    fitted = _model(make(), dtype=dtype, regularize=regularize)
    looped = _model(make(), dtype=dtype, regularize=regularize)
    fitted.fit(x, y, sample_weight=sw, batch_size=16, epochs=2, shuffle=False, verbose=0)
    opt = looped.optimizer
    epoch_losses = []
    for _ in range(2):
        total = 0.0
        for s in range(0, len(x), 16):
            loss, grads = looped.loss_and_gradients(x[s:s + 16], y[s:s + 16], sw[s:s + 16])
            opt.apply_gradients(zip(grads, looped.trainable_variables))
            total += loss * len(x[s:s + 16])
        epoch_losses.append(total / len(x))
    assert opt.iterations == fitted.optimizer.iterations == 10
    np.testing.assert_allclose(epoch_losses, fitted.history.history["loss"], rtol=1e-6)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)
    for a, b in zip(looped.get_weights(), fitted.get_weights()):
        np.testing.assert_allclose(a, b, **tol)


def test_non_finite_loss_gives_nan_gradients_that_apply_refuses():
    m = Sequential([Dense(1, input_shape=(4,))])
    m.compile(optimizer="sgd", loss="mse")
    m.layers[0].kernel[...] = 1e30   # predictions of 4e40 overflow float32: the loss is Inf
    x, y = np.full((8, 4), 1e10), np.zeros(8)
    loss, grads = m.loss_and_gradients(x, y)
    assert not math.isfinite(loss)
    assert all(np.isnan(g).all() for g in grads)
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        m.optimizer.apply_gradients(zip(grads, m.trainable_variables))
    assert (m.layers[0].kernel == np.float32(1e30)).all()


@pytest.mark.parametrize("call,exc,match", [
    (lambda m, x, y: Sequential([Dense(2, input_shape=(4,))]).loss_and_gradients(x, y), ValueError,
     r"You must call `compile\(\)` before using the model"),
    (lambda m, x, y: m.loss_and_gradients(x[:, :3], y), ValueError,
     r"expects 4 input features.*Received: x.shape=\(70, 3\)"),
    (lambda m, x, y: m.loss_and_gradients(x, y[:60]), ValueError, r"x sizes: 70, y sizes: 60"),
    (lambda m, x, y: m.loss_and_gradients(x, y, sample_weight=np.ones(3)), ValueError,
     r"sample_weight sizes: 3"),
    (lambda m, x, y: m.loss_and_gradients(x, y[:, :2]), ValueError, r"`y` must have shape \(n, 3\)"),
])
def test_loss_and_gradients_bad_input_raises(call, exc, match):
    x, y = _xy()
    with pytest.raises(exc, match=match):
        call(_model(), x, y)


def test_loss_objects_work_with_the_loop_too():
    m = _model()
    m.compile(optimizer="sgd", loss=losses.CategoricalCrossentropy(label_smoothing=0.1))
    x, y = _xy()
    loss, _ = m.loss_and_gradients(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loss == pytest.approx(m.evaluate(x, y, batch_size=len(x), verbose=0), rel=1e-6)
    assert loss == pytest.approx(ops.loss(m.loss, y, m.predict(x, verbose=0)), rel=1e-5)
