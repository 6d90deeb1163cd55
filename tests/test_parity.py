"""API-level Keras-parity tests, one feature per test.

Every expectation is derived independently, in float64 NumPy, from the formulas in the
project's notes on Keras 3 (KERAS.md; where they are silent or wrong, from Keras 3's own source,
cited in the test) on small hand-checkable cases: never from fastdense's own output. Each test therefore
fails if its feature is missing or computes something else.

Tests marked `xfail(strict=True)` (none at present) document a real difference from Keras 3; their `reason` says
what Keras does and what fastdense does.
"""
import csv
import math
import zipfile

import numpy as np
import pytest

import fastdense
from fastdense import Sequential, callbacks, losses, metrics, optimizers, regularizers
from fastdense.layers import Activation, Dense, Dropout, Flatten, Input

EPS = 1e-7  # Keras's backend.epsilon()
TOL64 = dict(rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------
def f32_exact(a):
    """Values representable in float32, so float32 and float64 models see the same data."""
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def regression_data(n=6, d=3, u=2, seed=0):
    rng = np.random.default_rng(seed)
    X = f32_exact(rng.normal(size=(n, d)))
    Y = f32_exact(rng.normal(size=(n, u)))
    W = f32_exact(rng.normal(scale=0.5, size=(d, u)))
    b = f32_exact(rng.normal(scale=0.1, size=u))
    return X, Y, W, b


def dense_model(W, b=None, activation=None, **dense_kwargs):
    """Sequential([Input, Dense]) with the given weights."""
    use_bias = b is not None
    model = Sequential([Input((W.shape[0],)),
                        Dense(W.shape[1], activation=activation, use_bias=use_bias, **dense_kwargs)])
    model.set_weights([W, b] if use_bias else [W])
    return model


def mse_per_sample(Z, Y):
    return np.mean((Z - Y) ** 2, axis=1)


def mse_grads(params, X, Y):
    """Gradient of the mean-over-batch mse of a linear Dense layer: [dW, db]."""
    W, b = params
    n, u = Y.shape
    dZ = 2 * (X @ W + b - Y) / (n * u)
    return [X.T @ dZ, dZ.sum(axis=0)]


def log_softmax(Z):
    m = Z.max(axis=1, keepdims=True)
    return Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))


def softmax(Z):
    return np.exp(log_softmax(Z))


def sigmoid(Z):
    return 1 / (1 + np.exp(-Z))


# Keras 3 update rules (KERAS.md "Update rules"), one parameter array at a time.
def sgd_rule(momentum=0.0, nesterov=False):
    def rule(p, g, s, lr, t):
        if not momentum:
            p -= lr * g
            return
        m = s.setdefault("m", np.zeros_like(p))
        m[...] = momentum * m - lr * g
        p += (momentum * m - lr * g) if nesterov else m
    return rule


def adam_rule(beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    def rule(p, g, s, lr, t):
        m = s.setdefault("m", np.zeros_like(p))
        v = s.setdefault("v", np.zeros_like(p))
        step = t + 1
        alpha = lr * math.sqrt(1 - beta_2 ** step) / (1 - beta_1 ** step)
        m += (g - m) * (1 - beta_1)
        v += (g * g - v) * (1 - beta_2)
        p -= alpha * m / (np.sqrt(v) + epsilon)
    return rule


def rmsprop_rule(rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    def rule(p, g, s, lr, t):
        v = s.setdefault("v", np.zeros_like(p))
        v[...] = rho * v + (1 - rho) * g * g
        if centered:
            mg = s.setdefault("mg", np.zeros_like(p))
            mg[...] = rho * mg + (1 - rho) * g
            denominator = v - mg * mg + epsilon
        else:
            denominator = v + epsilon  # epsilon inside the root
        increment = lr * g / np.sqrt(denominator)
        if momentum:
            mom = s.setdefault("mom", np.zeros_like(p))
            mom[...] = momentum * mom + increment
            p -= mom
        else:
            p -= increment
    return rule


def adagrad_rule(initial_accumulator_value=0.1, epsilon=1e-7):
    def rule(p, g, s, lr, t):
        acc = s.setdefault("acc", np.full_like(p, initial_accumulator_value))
        acc += g * g
        p -= lr * g / np.sqrt(acc + epsilon)
    return rule


def reference_training(rule, params, X, Y, batches, lr, weight_decay=0.0, clipvalue=None,
                       global_clipnorm=None, grads_fn=mse_grads):
    """Keras 3's step: clip gradients, decoupled weight decay `w -= w*wd*lr`, then the rule.

    `batches` is the list of row-index arrays, one per step; `lr` a float or `t -> lr`.
    """
    params = [np.array(p, dtype=np.float64) for p in params]
    states = [{} for _ in params]
    for t, rows in enumerate(batches):
        grads = grads_fn(params, X[rows], Y[rows])
        if global_clipnorm is not None:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
            grads = [g * global_clipnorm / max(norm, global_clipnorm) for g in grads]
        if clipvalue is not None:
            grads = [np.clip(g, -clipvalue, clipvalue) for g in grads]
        lr_t = lr(t) if callable(lr) else lr
        for p, g, s in zip(params, grads, states):
            if weight_decay:
                p -= p * weight_decay * lr_t
            rule(p, g, s, lr_t, t)
    return params


def full_batches(n, steps):
    return [np.arange(n)] * steps


def assert_weights(model, expected, dtype="float64"):
    tol = TOL64 if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    got = model.get_weights()
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, e, **tol)


class WeightRecorder(callbacks.Callback):
    """Copies of the weights at each epoch end."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])


TINY_LR = 1e-300  # w - 1e-300 * g == w: training that leaves the weights as they are


# ---------------------------------------------------------------------------------------------
# Optimizers through fit
# ---------------------------------------------------------------------------------------------
OPTIMIZER_CASES = {
    "sgd": (lambda: optimizers.SGD(learning_rate=0.1), sgd_rule(), 0.1, {}),
    "sgd_momentum": (lambda: optimizers.SGD(learning_rate=0.1, momentum=0.9),
                     sgd_rule(0.9), 0.1, {}),
    "sgd_nesterov": (lambda: optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
                     sgd_rule(0.9, nesterov=True), 0.1, {}),
    "adam": (lambda: optimizers.Adam(learning_rate=0.05), adam_rule(), 0.05, {}),
    "adam_hyper": (lambda: optimizers.Adam(learning_rate=0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-2),
                   adam_rule(0.8, 0.99, 1e-2), 0.05, {}),
    "adamw_default_decay": (lambda: optimizers.AdamW(learning_rate=0.05),
                            adam_rule(), 0.05, {"weight_decay": 0.004}),
    "adamw_decay": (lambda: optimizers.AdamW(learning_rate=0.05, weight_decay=0.5),
                    adam_rule(), 0.05, {"weight_decay": 0.5}),
    "rmsprop": (lambda: optimizers.RMSprop(learning_rate=0.01), rmsprop_rule(), 0.01, {}),
    "rmsprop_eps_inside_root": (lambda: optimizers.RMSprop(learning_rate=0.01, epsilon=0.1),
                                rmsprop_rule(epsilon=0.1), 0.01, {}),
    "rmsprop_centered": (lambda: optimizers.RMSprop(learning_rate=0.01, centered=True),
                         rmsprop_rule(centered=True), 0.01, {}),
    "rmsprop_momentum": (lambda: optimizers.RMSprop(learning_rate=0.01, momentum=0.9),
                         rmsprop_rule(momentum=0.9), 0.01, {}),
    "rmsprop_centered_momentum": (
        lambda: optimizers.RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5, centered=True),
        rmsprop_rule(rho=0.8, momentum=0.5, centered=True), 0.01, {}),
    "adagrad": (lambda: optimizers.Adagrad(learning_rate=0.1), adagrad_rule(), 0.1, {}),
    "adagrad_accumulator": (
        lambda: optimizers.Adagrad(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=0.01),
        adagrad_rule(0.5, 0.01), 0.1, {}),
    "sgd_weight_decay": (lambda: optimizers.SGD(learning_rate=0.1, weight_decay=0.3),
                         sgd_rule(), 0.1, {"weight_decay": 0.3}),
    "adam_weight_decay": (lambda: optimizers.Adam(learning_rate=0.05, weight_decay=0.2),
                          adam_rule(), 0.05, {"weight_decay": 0.2}),
    "sgd_clipvalue": (lambda: optimizers.SGD(learning_rate=0.1, clipvalue=0.05),
                      sgd_rule(), 0.1, {"clipvalue": 0.05}),
    "sgd_global_clipnorm": (lambda: optimizers.SGD(learning_rate=0.1, global_clipnorm=0.1),
                            sgd_rule(), 0.1, {"global_clipnorm": 0.1}),
    "adam_clipvalue": (lambda: optimizers.Adam(learning_rate=0.05, clipvalue=0.05),
                       adam_rule(), 0.05, {"clipvalue": 0.05}),
    "rmsprop_global_clipnorm": (lambda: optimizers.RMSprop(learning_rate=0.01, global_clipnorm=0.1),
                                rmsprop_rule(), 0.01, {"global_clipnorm": 0.1}),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(OPTIMIZER_CASES))
def test_optimizer_update_rules_through_fit(case, dtype):
    fastdense.config.set_floatx(dtype)
    make, rule, lr, extra = OPTIMIZER_CASES[case]
    X, Y, W, b = regression_data()
    if "clip" in case:  # make sure clipping is active
        g = mse_grads([W, b], X, Y)
        assert max(np.abs(g[0]).max(), np.abs(g[1]).max()) > 0.05
        assert math.sqrt(sum(float(np.sum(x * x)) for x in g)) > 0.1
    model = dense_model(W, b)
    model.compile(optimizer=make(), loss="mse")
    history = model.fit(X, Y, batch_size=len(X), epochs=3, shuffle=False, verbose=0)
    expected = reference_training(rule, [W, b], X, Y, full_batches(len(X), 3), lr, **extra)
    assert_weights(model, expected, dtype)
    assert int(model.optimizer.iterations) == 3
    assert len(history.history["loss"]) == 3


def test_optimizer_update_through_train_on_batch():
    fastdense.config.set_floatx("float64")
    X, Y, W, b = regression_data()
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.Adam(learning_rate=0.05), loss="mse")
    for _ in range(3):
        model.train_on_batch(X, Y)
    assert_weights(model, reference_training(adam_rule(), [W, b], X, Y, full_batches(6, 3), 0.05))


@pytest.mark.parametrize("name, cls", [
    ("SGD", optimizers.SGD), ("sgd", optimizers.SGD), ("Sgd", optimizers.SGD),
    ("Adam", optimizers.Adam), ("ADAM", optimizers.Adam), ("AdamW", optimizers.AdamW),
    ("RMSprop", optimizers.RMSprop), ("RMSProp", optimizers.RMSprop),
    ("Adagrad", optimizers.Adagrad), ("AdaGrad", optimizers.Adagrad),
])
def test_optimizer_strings_are_case_insensitive(name, cls):
    model = Sequential([Input((3,)), Dense(2)])
    model.compile(optimizer=name, loss="mse")
    assert type(model.optimizer) is cls


def test_optimizer_string_trains_with_the_keras_default_learning_rate(float64):
    X, Y, W, b = regression_data()
    model = dense_model(W, b)
    model.compile(optimizer="SGD", loss="mse")
    model.fit(X, Y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y, full_batches(6, 2), 0.01))


def test_compile_default_optimizer_is_rmsprop():
    model = Sequential([Input((3,)), Dense(2)])
    model.compile(loss="mse")
    assert type(model.optimizer) is optimizers.RMSprop


@pytest.mark.parametrize("cls, expected", [
    (optimizers.SGD, {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False, "name": "SGD"}),
    (optimizers.Adam, {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
                       "amsgrad": False, "name": "adam"}),
    (optimizers.AdamW, {"learning_rate": 0.001, "weight_decay": 0.004, "beta_1": 0.9,
                        "beta_2": 0.999, "epsilon": 1e-7, "name": "adamw"}),
    (optimizers.RMSprop, {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7,
                          "centered": False, "name": "rmsprop"}),
    (optimizers.Adagrad, {"learning_rate": 0.001, "initial_accumulator_value": 0.1,
                          "epsilon": 1e-7, "name": "adagrad"}),
])
def test_optimizer_defaults_equal_keras(cls, expected):
    opt = cls()
    for attr, value in expected.items():
        got = getattr(opt, attr)
        if isinstance(value, float):
            assert float(got) == pytest.approx(value, rel=1e-12), attr
        else:
            assert got == value, attr
    assert int(opt.iterations) == 0


class StepSchedule(optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return 0.2 if step < 2 else 0.02


@pytest.mark.parametrize("make_schedule, expected_lr", [
    (lambda: optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5),
     lambda t: 0.1 * 0.5 ** t),
    (lambda: optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5, staircase=True),
     lambda t: 0.1 * 0.5 ** (t // 2)),
    (lambda: optimizers.schedules.InverseTimeDecay(0.1, decay_steps=2, decay_rate=1.0),
     lambda t: 0.1 / (1 + t / 2)),
    (StepSchedule, lambda t: 0.2 if t < 2 else 0.02),
])
def test_learning_rate_schedule_is_evaluated_at_the_step_count(float64, make_schedule, expected_lr):
    X, Y, W, b = regression_data()
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=make_schedule()), loss="mse")
    # batch 2 -> 3 steps per epoch, 2 epochs: the step count runs across epochs
    model.fit(X, Y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    batches = [np.arange(i, i + 2) for i in (0, 2, 4)] * 2
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y, batches, expected_lr))
    assert float(model.optimizer.learning_rate) == pytest.approx(expected_lr(6), rel=1e-12)


def test_setting_learning_rate_between_epochs_takes_effect(float64):
    X, Y, W, b = regression_data()
    rates = [0.1, 0.02, 0.3]
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.5), loss="mse")
    setter = callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: setattr(model.optimizer, "learning_rate", rates[epoch]))
    model.fit(X, Y, batch_size=6, epochs=3, shuffle=False, verbose=0, callbacks=[setter])
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y, full_batches(6, 3),
                                             lambda t: rates[t]))
    # and between two fit calls
    model.optimizer.learning_rate = 0.05
    model.fit(X, Y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y, full_batches(6, 4),
                                             lambda t: (rates + [0.05])[t]))


def test_legacy_lr_argument_warns_and_equals_learning_rate(float64):
    X, Y, W, b = regression_data()
    with pytest.warns(DeprecationWarning, match="lr"):
        opt = optimizers.SGD(lr=0.1)
    assert float(opt.learning_rate) == 0.1
    model = dense_model(W, b)
    model.compile(optimizer=opt, loss="mse")
    model.fit(X, Y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y, full_batches(6, 2), 0.1))


@pytest.mark.parametrize("make, rule, lr", [
    (lambda: optimizers.SGD(learning_rate=0.1, decay=0.5), sgd_rule(), 0.1),
    (lambda: optimizers.Adam(learning_rate=0.05, decay=0.25), adam_rule(), 0.05),
])
def test_legacy_decay_follows_keras2_inverse_time_rule(float64, make, rule, lr):
    X, Y, W, b = regression_data()
    with pytest.warns(DeprecationWarning, match="decay"):
        opt = make()
    decay = 0.5 if isinstance(opt, optimizers.SGD) else 0.25
    model = dense_model(W, b)
    model.compile(optimizer=opt, loss="mse")
    model.fit(X, Y, batch_size=6, epochs=3, shuffle=False, verbose=0)
    assert_weights(model, reference_training(rule, [W, b], X, Y, full_batches(6, 3),
                                             lambda t: lr / (1 + decay * t)))


@pytest.mark.parametrize("make", [
    lambda: optimizers.SGD(learning_rate=0.1, foo=1),
    lambda: optimizers.Adam(beta1=0.9),
    lambda: optimizers.AdamW(weightdecay=0.1),
    lambda: optimizers.RMSprop(learningrate=0.1),
    lambda: optimizers.Adagrad(initial_accumulator=0.1),
])
def test_unknown_optimizer_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


# ---------------------------------------------------------------------------------------------
# Losses: evaluate == NumPy from the formulas (per-sample definition, mean over the batch)
# ---------------------------------------------------------------------------------------------
def _classification_setup(units, seed=1, n=8, d=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(scale=0.7, size=(d, units))
    b = rng.normal(scale=0.2, size=units)
    return X, W, b, rng


def _bce_from_logits(Z, Y):
    # -(y log sigmoid(z) + (1-y) log(1-sigmoid(z))) == log(1+e^z) - y z, averaged over the last axis
    return np.mean(np.logaddexp(0, Z) - Y * Z, axis=1)


def _cce_from_logits(Z, Y):
    return -np.sum(Y * log_softmax(Z), axis=1)


LOSS_CASES = {
    # name: (loss identifier, units, output activation, target kind, per-sample fn(Z, T))
    "mse_string": ("mse", 3, None, "real", lambda Z, T: np.mean((Z - T) ** 2, 1)),
    "mse_long_name": ("mean_squared_error", 3, None, "real", lambda Z, T: np.mean((Z - T) ** 2, 1)),
    "mse_class": (losses.MeanSquaredError(), 3, None, "real", lambda Z, T: np.mean((Z - T) ** 2, 1)),
    "mse_function": (losses.mean_squared_error, 3, None, "real",
                     lambda Z, T: np.mean((Z - T) ** 2, 1)),
    "mae_string": ("mae", 3, None, "real", lambda Z, T: np.mean(np.abs(Z - T), 1)),
    "mae_long_name": ("mean_absolute_error", 3, None, "real", lambda Z, T: np.mean(np.abs(Z - T), 1)),
    "mae_class": (losses.MeanAbsoluteError(), 3, None, "real", lambda Z, T: np.mean(np.abs(Z - T), 1)),
    "bce_string_sigmoid": ("binary_crossentropy", 2, "sigmoid", "binary", _bce_from_logits),
    "bce_class_soft_targets": (losses.BinaryCrossentropy(), 2, "sigmoid", "soft", _bce_from_logits),
    "bce_label_smoothing": (losses.BinaryCrossentropy(label_smoothing=0.2), 2, "sigmoid", "binary",
                            lambda Z, T: _bce_from_logits(Z, T * 0.8 + 0.5 * 0.2)),
    "bce_from_logits": (losses.BinaryCrossentropy(from_logits=True), 2, None, "binary",
                        _bce_from_logits),
    "bce_from_logits_smoothing": (
        losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), 2, None, "binary",
        lambda Z, T: _bce_from_logits(Z, T * 0.9 + 0.05)),
    "cce_string_softmax": ("categorical_crossentropy", 3, "softmax", "onehot", _cce_from_logits),
    "cce_class": (losses.CategoricalCrossentropy(), 3, "softmax", "onehot", _cce_from_logits),
    "cce_label_smoothing": (losses.CategoricalCrossentropy(label_smoothing=0.3), 3, "softmax",
                            "onehot", lambda Z, T: _cce_from_logits(Z, T * 0.7 + 0.3 / 3)),
    "cce_from_logits": (losses.CategoricalCrossentropy(from_logits=True), 3, None, "onehot",
                        _cce_from_logits),
    "cce_from_logits_smoothing": (
        losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2), 3, None, "onehot",
        lambda Z, T: _cce_from_logits(Z, T * 0.8 + 0.2 / 3)),
    "scce_labels_n": ("sparse_categorical_crossentropy", 3, "softmax", "sparse_n",
                      lambda Z, T: -log_softmax(Z)[np.arange(len(T)), T.astype(int)]),
    "scce_labels_n1": (losses.SparseCategoricalCrossentropy(), 3, "softmax", "sparse_n1",
                       lambda Z, T: -log_softmax(Z)[np.arange(len(T)), T[:, 0].astype(int)]),
    "scce_from_logits": (losses.SparseCategoricalCrossentropy(from_logits=True), 3, None, "sparse_n",
                         lambda Z, T: -log_softmax(Z)[np.arange(len(T)), T.astype(int)]),
    # Probabilities not from a softmax: Keras normalises each row to sum 1, clips, -sum y log p
    # (keras/src/backend/tensorflow/nn.py categorical_crossentropy).
    "cce_probabilities_normalised": (
        "categorical_crossentropy", 3, "hard_sigmoid", "onehot",
        lambda Z, T: -np.sum(T * np.log(np.clip(
            (np.clip(Z + 3, 0, 6) / 6) / (np.clip(Z + 3, 0, 6) / 6).sum(1, keepdims=True),
            EPS, 1 - EPS)), 1)),
}


def _targets(kind, units, n, rng):
    labels = rng.integers(0, units, n)
    if kind == "real":
        return rng.normal(size=(n, units))
    if kind == "binary":
        return rng.integers(0, 2, (n, units)).astype(np.float64)
    if kind == "soft":
        return rng.uniform(0, 1, (n, units))
    if kind == "onehot":
        return np.eye(units)[labels]
    if kind == "sparse_n":
        return labels
    if kind == "sparse_n1":
        return labels.reshape(-1, 1)
    raise AssertionError(kind)


@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_loss_definition_and_mean_reduction(float64, case):
    loss, units, activation, kind, per_sample = LOSS_CASES[case]
    X, W, b, rng = _classification_setup(units)
    T = _targets(kind, units, len(X), rng)
    model = dense_model(W, b, activation=activation)
    model.compile(optimizer="sgd", loss=loss)
    Z = X @ W + b  # pre-activation, computed here
    expected = float(np.mean(per_sample(Z, T)))
    assert model.evaluate(X, T, verbose=0) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # batching does not change the mean (batches 3, 3, 2)
    assert model.evaluate(X, T, batch_size=3, verbose=0) == pytest.approx(expected, rel=1e-12)
    # sample weights: sum(l * w) / batch_size
    w = rng.uniform(0, 2, len(X))
    got = model.evaluate(X, T, sample_weight=w, batch_size=3, verbose=0)
    assert got == pytest.approx(float(np.sum(per_sample(Z, T) * w) / len(X)), rel=1e-12)


def test_loss_from_predict_outputs_matches_evaluate(float64):
    """The same check the other way round: the loss of the model's own predictions."""
    X, W, b, rng = _classification_setup(4, seed=3, n=10)
    labels = rng.integers(0, 4, 10)
    model = dense_model(W, b, activation="softmax")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    p = model.predict(X, verbose=0)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, **TOL64)
    expected = -np.mean(np.log(p[np.arange(10), labels]))
    assert model.evaluate(X, labels, verbose=0) == pytest.approx(expected, rel=1e-12)


def test_cce_probabilities_are_clipped(float64):
    # relu outputs: an exact zero for the true class is clipped to 1e-7 after normalisation.
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    W = np.array([[2.0, -1.0, 0.5], [-1.0, 1.0, 0.5]])
    b = np.zeros(3)
    T = np.eye(3)[[1, 0, 2]]
    P = np.maximum(X @ W + b, 0)
    assert P[0, 1] == 0 and P[1, 0] == 0
    q = np.clip(P / P.sum(1, keepdims=True), EPS, 1 - EPS)
    expected = float(np.mean(-np.sum(T * np.log(q), 1)))
    model = dense_model(W, b, activation="relu")
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert model.evaluate(X, T, verbose=0) == pytest.approx(expected, rel=1e-12)


def _bce_probabilities_keras3(P, T):
    # keras/src/backend/tensorflow/nn.py binary_crossentropy (Keras 3): clip to [eps, 1-eps], then
    # -(y log o + (1-y) log(1-o)) -- no `+ epsilon` inside the logs (that was Keras 2's backend).
    o = np.clip(P, EPS, 1 - EPS)
    return np.mean(-(T * np.log(o) + (1 - T) * np.log(1 - o)), axis=1)




def test_bce_from_probabilities_inside_the_clip_range(float64):
    X, W, b, rng = _classification_setup(2, seed=5)
    T = rng.integers(0, 2, (8, 2)).astype(np.float64)
    P = np.clip(X @ W + b + 3, 0, 6) / 6  # hard_sigmoid, all strictly inside (0, 1) here
    assert ((P > 0.01) & (P < 0.99)).all()
    model = dense_model(W, b, activation="hard_sigmoid")
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    expected = float(np.mean(_bce_probabilities_keras3(P, T)))
    assert model.evaluate(X, T, verbose=0) == pytest.approx(expected, rel=1e-12)


def test_bce_from_probabilities_at_the_clip_bounds(float64):
    # A linear output with BCE (a common tutorial slip): outputs below 0 and above 1 are clipped.
    X = np.array([[1.0], [2.0], [-1.0], [0.5]])
    W = np.array([[0.8]])
    b = np.array([0.1])
    T = np.array([[1.0], [0.0], [1.0], [1.0]])
    P = X @ W + b  # 0.9, 1.7, -0.7, 0.5
    model = dense_model(W, b)
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    expected = float(np.mean(_bce_probabilities_keras3(P, T)))
    assert model.evaluate(X, T, verbose=0) == pytest.approx(expected, rel=1e-9)


def test_categorical_crossentropy_rejects_integer_labels():
    model = Sequential([Input((3,)), Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(ValueError):
        model.evaluate(np.zeros((4, 3)), np.array([0, 1, 2, 1]), verbose=0)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def _acc_binary(P, T):
    return float(np.mean((P > 0.5).astype(np.float64) == T.reshape(P.shape)))


def _acc_sparse(P, T):
    return float(np.mean(np.argmax(P, 1) == T.reshape(-1)))


def _acc_categorical(P, T):
    return float(np.mean(np.argmax(P, 1) == np.argmax(T, 1)))


ACCURACY_CASES = {
    # units, activation, loss, target kind, expected accuracy fn
    "binary_labels_n": (1, "sigmoid", "binary_crossentropy", "bin_n", _acc_binary),
    "binary_labels_n1": (1, "sigmoid", "binary_crossentropy", "bin_n1", _acc_binary),
    "binary_mse": (1, "sigmoid", "mse", "bin_n1", _acc_binary),
    "sparse_labels_n": (3, "softmax", "sparse_categorical_crossentropy", "sparse_n", _acc_sparse),
    "sparse_labels_n1": (3, "softmax", "sparse_categorical_crossentropy", "sparse_n1", _acc_sparse),
    "categorical_onehot": (3, "softmax", "categorical_crossentropy", "onehot", _acc_categorical),
    "categorical_mse": (3, "softmax", "mse", "onehot", _acc_categorical),
}


@pytest.mark.parametrize("key", ["accuracy", "acc"])
@pytest.mark.parametrize("case", sorted(ACCURACY_CASES))
def test_accuracy_resolves_by_shapes_and_keeps_the_users_key(float64, case, key):
    units, activation, loss, kind, acc_fn = ACCURACY_CASES[case]
    X, W, b, rng = _classification_setup(units, seed=11, n=40)
    labels = rng.integers(0, max(units, 2), 40)
    T = {"bin_n": lambda: labels.astype(np.float64),
         "bin_n1": lambda: labels.reshape(-1, 1).astype(np.float64),
         "sparse_n": lambda: labels, "sparse_n1": lambda: labels.reshape(-1, 1),
         "onehot": lambda: np.eye(units)[labels]}[kind]()
    Z = X @ W + b
    P = sigmoid(Z) if activation == "sigmoid" else softmax(Z)
    expected = acc_fn(P, T)
    assert 0.2 < expected < 0.9  # a value that a wrong resolution would not reproduce by chance
    model = dense_model(W, b, activation=activation)
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss=loss, metrics=[key])
    loss_value, acc = model.evaluate(X, T, verbose=0)
    assert acc == pytest.approx(expected, abs=1e-12)
    logs = model.evaluate(X, T, verbose=0, return_dict=True)
    assert list(logs) == ["loss", key] and logs[key] == acc and logs["loss"] == loss_value
    history = model.fit(X, T, validation_data=(X, T), epochs=1, verbose=0)
    assert set(history.history) == {"loss", key, "val_loss", "val_" + key}
    assert history.history[key][0] == pytest.approx(expected, abs=1e-12)
    assert history.history["val_" + key][0] == pytest.approx(expected, abs=1e-12)


def test_accuracy_shortcut_is_case_insensitive(float64):
    X, W, b, rng = _classification_setup(3, seed=11, n=20)
    labels = rng.integers(0, 3, 20)
    model = dense_model(W, b, activation="softmax")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["Accuracy"])
    logs = model.evaluate(X, labels, verbose=0, return_dict=True)
    assert logs["Accuracy"] == pytest.approx(_acc_sparse(softmax(X @ W + b), labels), abs=1e-12)


def test_binary_accuracy_compares_targets_exactly(float64):
    X = np.array([[1.0], [-1.0], [2.0], [-2.0]])
    W, b = np.array([[1.0]]), np.array([0.0])
    T = np.array([[0.9], [0.1], [1.0], [0.0]])  # soft targets for the first two rows
    P = sigmoid(X @ W + b)
    expected = float(np.mean((P > 0.5).astype(np.float64) == T))  # 0.5: rows 3 and 4 only
    model = dense_model(W, b, activation="sigmoid")
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    assert model.evaluate(X, T, verbose=0)[1] == pytest.approx(expected)


def test_mse_and_mae_metrics_and_their_keys(float64):
    X, Y, W, b = regression_data(n=10, u=2, seed=4)
    Xv, Yv, _, _ = regression_data(n=5, u=2, seed=5)
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="mae", metrics=["mse", "mae"])
    Z, Zv = X @ W + b, Xv @ W + b
    mse, mae = float(np.mean((Z - Y) ** 2)), float(np.mean(np.abs(Z - Y)))
    loss, got_mse, got_mae = model.evaluate(X, Y, verbose=0)
    assert (loss, got_mse, got_mae) == (pytest.approx(mae, rel=1e-12), pytest.approx(mse, rel=1e-12),
                                        pytest.approx(mae, rel=1e-12))
    history = model.fit(X, Y, validation_data=(Xv, Yv), batch_size=4, epochs=1, shuffle=False,
                        verbose=0)
    h = history.history
    assert set(h) == {"loss", "mse", "mae", "val_loss", "val_mse", "val_mae"}
    assert h["mse"][0] == pytest.approx(mse, rel=1e-12)
    assert h["val_mse"][0] == pytest.approx(float(np.mean((Zv - Yv) ** 2)), rel=1e-12)
    assert h["val_mae"][0] == pytest.approx(float(np.mean(np.abs(Zv - Yv))), rel=1e-12)


def test_metric_objects_and_their_history_keys(float64):
    X, W, b, rng = _classification_setup(3, seed=12, n=30)
    labels = rng.integers(0, 3, 30)
    onehot = np.eye(3)[labels]
    P = softmax(X @ W + b)
    model = dense_model(W, b, activation="softmax")
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="categorical_crossentropy",
                  metrics=[metrics.CategoricalAccuracy(), metrics.MeanSquaredError(),
                           metrics.MeanAbsoluteError(name="my_mae")])
    logs = model.evaluate(X, onehot, verbose=0, return_dict=True)
    assert list(logs) == ["loss", "categorical_accuracy", "mean_squared_error", "my_mae"]
    assert logs["categorical_accuracy"] == pytest.approx(_acc_categorical(P, onehot), abs=1e-12)
    assert logs["mean_squared_error"] == pytest.approx(float(np.mean((P - onehot) ** 2)), rel=1e-12)
    assert logs["my_mae"] == pytest.approx(float(np.mean(np.abs(P - onehot))), rel=1e-12)
    values = model.evaluate(X, onehot, verbose=0)
    assert values == [logs[k] for k in logs]
    history = model.fit(X, onehot, validation_split=0.5, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "categorical_accuracy", "mean_squared_error", "my_mae",
                                    "val_loss", "val_categorical_accuracy",
                                    "val_mean_squared_error", "val_my_mae"}

    sparse_model = dense_model(W, b, activation="softmax")
    sparse_model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                         metrics=[metrics.SparseCategoricalAccuracy()])
    logs = sparse_model.evaluate(X, labels, verbose=0, return_dict=True)
    assert logs["sparse_categorical_accuracy"] == pytest.approx(_acc_sparse(P, labels), abs=1e-12)

    Wb, bb = W[:, :1], b[:1]
    binary = (labels > 0).astype(np.float64)
    binary_model = dense_model(Wb, bb, activation="sigmoid")
    binary_model.compile(optimizer="sgd", loss="binary_crossentropy",
                         metrics=[metrics.BinaryAccuracy(), metrics.BinaryAccuracy(name="ba")])
    logs = binary_model.evaluate(X, binary, verbose=0, return_dict=True)
    expected = _acc_binary(sigmoid(X @ Wb + bb), binary)
    assert list(logs) == ["loss", "binary_accuracy", "ba"]
    assert logs["binary_accuracy"] == pytest.approx(expected, abs=1e-12) == logs["ba"]


def test_metrics_are_not_weighted_by_sample_weight(float64):
    X, W, b, rng = _classification_setup(3, seed=13, n=30)
    labels = rng.integers(0, 3, 30)
    P = softmax(X @ W + b)
    w = rng.uniform(0, 3, 30)
    model = dense_model(W, b, activation="softmax")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, acc = model.evaluate(X, labels, sample_weight=w, verbose=0)
    per_sample = -np.log(P[np.arange(30), labels])
    assert loss == pytest.approx(float(np.sum(per_sample * w) / 30), rel=1e-12)
    assert acc == pytest.approx(_acc_sparse(P, labels), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# fit options
# ---------------------------------------------------------------------------------------------
def _distinct_rows_data(n=10, seed=21):
    """Linear-model data whose rows have very different losses, so a wrong split shows."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    W = rng.normal(size=(2, 1))
    b = np.array([0.3])
    Y = X @ W + b + np.arange(1, n + 1).reshape(-1, 1) ** 0.5  # per-row mse = 1, 2, ..., n
    return X, Y, W, b


def _mse(X, Y, W, b, w=None):
    l = mse_per_sample(X @ W + b, Y)
    return float(np.mean(l) if w is None else np.sum(l * w) / len(l))


def test_validation_split_takes_the_last_rows_before_shuffling(float64):
    X, Y, W, b = _distinct_rows_data(n=10)
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="mse")
    h = model.fit(X, Y, validation_split=0.2, batch_size=3, epochs=2, shuffle=True, verbose=0).history
    # 10 * 0.2 = 2 rows (exact in both Keras's and KERAS.md's formula): rows 8 and 9
    for epoch in range(2):
        assert h["val_loss"][epoch] == pytest.approx(_mse(X[8:], Y[8:], W, b), rel=1e-12)
        assert h["loss"][epoch] == pytest.approx(_mse(X[:8], Y[:8], W, b), rel=1e-12)


def test_validation_split_size_when_n_times_split_is_not_an_integer(float64):
    X, Y, W, b = _distinct_rows_data(n=10)
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="mse")
    h = model.fit(X, Y, validation_split=0.25, batch_size=10, epochs=1, verbose=0).history
    split_at = int(math.floor(10 * (1.0 - 0.25)))  # Keras: 7 training rows
    assert h["val_loss"][0] == pytest.approx(_mse(X[split_at:], Y[split_at:], W, b), rel=1e-12)
    assert h["loss"][0] == pytest.approx(_mse(X[:split_at], Y[:split_at], W, b), rel=1e-12)


def test_validation_data_wins_over_validation_split(float64):
    X, Y, W, b = _distinct_rows_data(n=10)
    Xv, Yv = X[:3] * 2, Y[:3] - 1
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="mse")
    h = model.fit(X, Y, validation_split=0.5, validation_data=(Xv, Yv), batch_size=4, epochs=1,
                  verbose=0).history
    assert h["loss"][0] == pytest.approx(_mse(X, Y, W, b), rel=1e-12)  # all 10 rows trained
    assert h["val_loss"][0] == pytest.approx(_mse(Xv, Yv, W, b), rel=1e-12)


def test_validation_data_with_sample_weights(float64):
    X, Y, W, b = _distinct_rows_data(n=10)
    wv = np.array([0.0, 1.0, 3.0, 0.5])
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="mse")
    h = model.fit(X, Y, validation_data=(X[:4], Y[:4], wv), batch_size=3, epochs=1,
                  verbose=0).history
    assert h["val_loss"][0] == pytest.approx(_mse(X[:4], Y[:4], W, b, wv), rel=1e-12)


def test_sample_weight_weights_the_epoch_loss(float64):
    X, Y, W, b = _distinct_rows_data(n=10)
    w = np.array([0.0, 1.0, 2.0, 0.5, 1.5, 3.0, 0.0, 1.0, 0.25, 2.0])
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="mse")
    h = model.fit(X, Y, sample_weight=w, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    assert h["loss"][0] == pytest.approx(_mse(X, Y, W, b, w), rel=1e-12)  # sum(l*w)/n
    # with shuffling too (the weights travel with their rows)
    h = model.fit(X, Y, sample_weight=w, batch_size=4, epochs=1, shuffle=True, verbose=0).history
    assert h["loss"][0] == pytest.approx(_mse(X, Y, W, b, w), rel=1e-12)


def test_sample_weight_weights_the_gradient(float64):
    X, Y, W, b = regression_data()
    w = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 3.0])

    def weighted_grads(params, Xb, Yb):
        Wp, bp = params
        n, u = Yb.shape
        dZ = 2 * (Xb @ Wp + bp - Yb) / (n * u) * w[:, None]
        return [Xb.T @ dZ, dZ.sum(axis=0)]

    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    model.fit(X, Y, sample_weight=w, batch_size=6, epochs=2, shuffle=False, verbose=0)
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y, full_batches(6, 2), 0.1,
                                             grads_fn=weighted_grads))


def test_class_weight_sparse_labels(float64):
    X, W, b, rng = _classification_setup(3, seed=31, n=12)
    labels = rng.integers(0, 3, 12)
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    l = -log_softmax(X @ W + b)[np.arange(12), labels]
    expected = float(np.sum(l * np.array([cw[c] for c in labels])) / 12)
    model = dense_model(W, b, activation="softmax")
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR),
                  loss="sparse_categorical_crossentropy")
    h = model.fit(X, labels, class_weight=cw, batch_size=5, epochs=1, verbose=0).history
    assert h["loss"][0] == pytest.approx(expected, rel=1e-12)


def test_class_weight_one_hot_and_binary_labels(float64):
    X, W, b, rng = _classification_setup(3, seed=32, n=12)
    labels = rng.integers(0, 3, 12)
    cw = {0: 2.0, 2: 0.25}  # class 1 missing -> weight 1
    weights = np.array([cw.get(c, 1.0) for c in labels])
    l = -log_softmax(X @ W + b)[np.arange(12), labels]
    model = dense_model(W, b, activation="softmax")
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="categorical_crossentropy")
    h = model.fit(X, np.eye(3)[labels], class_weight=cw, batch_size=5, epochs=1, verbose=0).history
    assert h["loss"][0] == pytest.approx(float(np.sum(l * weights) / 12), rel=1e-12)

    Wb, bb = W[:, :1], b[:1]
    y = (labels == 1).astype(np.float64)
    l = _bce_from_logits(X @ Wb + bb, y.reshape(-1, 1))
    weights = np.where(y == 1, 4.0, 1.0)
    model = dense_model(Wb, bb, activation="sigmoid")
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="binary_crossentropy")
    h = model.fit(X, y, class_weight={0: 1.0, 1: 4.0}, batch_size=5, epochs=1, verbose=0).history
    assert h["loss"][0] == pytest.approx(float(np.sum(l * weights) / 12), rel=1e-12)


def test_class_weight_with_sample_weight_raises(float64):
    X, W, b, rng = _classification_setup(3, seed=33, n=6)
    model = dense_model(W, b, activation="softmax")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError):
        model.fit(X, rng.integers(0, 3, 6), sample_weight=np.ones(6), class_weight={0: 2.0},
                  verbose=0)


def test_initial_epoch(float64):
    X, Y, W, b = regression_data()
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    history = model.fit(X, Y, batch_size=3, epochs=5, initial_epoch=2, shuffle=False, verbose=0)
    assert history.epoch == [2, 3, 4]
    assert len(history.history["loss"]) == 3
    assert int(model.optimizer.iterations) == 6  # 3 epochs of 2 steps
    batches = [np.arange(0, 3), np.arange(3, 6)] * 3
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y, batches, 0.1))


class SampleOrder(callbacks.Callback):
    """Recovers the order in which samples were trained (batch size 1, weights frozen).

    Sample i has loss i+1; batch logs carry running means m_k, so the k-th loss of the epoch is
    (k+1) m_k - k m_(k-1).
    """

    def __init__(self):
        super().__init__()
        self.orders = []

    def on_epoch_begin(self, epoch, logs=None):
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        m = np.array(self.means)
        k = np.arange(len(m))
        losses_ = (k + 1) * m - k * np.concatenate([[0.0], m[:-1]])
        self.orders.append(list(np.rint(losses_).astype(int) - 1))


def _order_model(n=8):
    X, Y, W, b = _distinct_rows_data(n=n, seed=41)
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="mse")
    return model, X, Y


def test_shuffle_false_trains_rows_in_order(float64):
    model, X, Y = _order_model()
    rec = SampleOrder()
    model.fit(X, Y, batch_size=1, epochs=2, shuffle=False, verbose=0, callbacks=[rec])
    assert rec.orders == [list(range(8))] * 2


def test_shuffle_true_draws_a_new_permutation_each_epoch(float64):
    model, X, Y = _order_model()
    rec = SampleOrder()
    model.fit(X, Y, batch_size=1, epochs=3, shuffle=True, verbose=0, callbacks=[rec])
    for order in rec.orders:
        assert sorted(order) == list(range(8))  # every sample exactly once per epoch
    assert rec.orders[0] != list(range(8))
    assert len({tuple(o) for o in rec.orders}) == 3


def test_shuffle_is_reproducible_with_set_random_seed(float64):
    orders = []
    for _ in range(2):
        fastdense.utils.set_random_seed(99)
        model, X, Y = _order_model()
        rec = SampleOrder()
        model.fit(X, Y, batch_size=1, epochs=2, shuffle=True, verbose=0, callbacks=[rec])
        orders.append(rec.orders)
    assert orders[0] == orders[1]


def test_epoch_loss_is_the_batch_size_weighted_mean_of_pre_update_losses(float64):
    X, Y, W, b = regression_data(n=10, seed=7)
    lr = 0.1
    # NumPy: batches of 4, 4, 2 in order; the loss of each batch before its update
    params = [W.copy(), b.copy()]
    batch_losses, sizes, running = [], [], []
    for epoch in range(2):
        for rows in (np.arange(0, 4), np.arange(4, 8), np.arange(8, 10)):
            batch_losses.append(_mse(X[rows], Y[rows], *params))
            sizes.append(len(rows))
            k = len(batch_losses) - 3 * epoch
            bl, bs = np.array(batch_losses[-k:]), np.array(sizes[-k:])
            running.append(float(np.sum(bl * bs) / np.sum(bs)))
            g = mse_grads(params, X[rows], Y[rows])
            params = [p - lr * gi for p, gi in zip(params, g)]
    seen = []
    rec = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(
        (batch, logs["loss"])))
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=lr), loss="mse")
    h = model.fit(X, Y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[rec]).history
    assert [s[0] for s in seen] == [0, 1, 2, 0, 1, 2]
    np.testing.assert_allclose([s[1] for s in seen], running, rtol=1e-12)
    assert h["loss"] == pytest.approx([running[2], running[5]], rel=1e-12)
    assert_weights(model, params)


def test_train_test_predict_on_batch(float64):
    X, W, b, rng = _classification_setup(3, seed=51, n=6)
    labels = rng.integers(0, 3, 6)
    model = dense_model(W, b, activation="softmax")
    model.compile(optimizer=optimizers.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    Z = X @ W + b
    P = softmax(Z)
    pred = model.predict_on_batch(X)
    assert isinstance(pred, np.ndarray) and pred.dtype == np.float64 and pred.shape == (6, 3)
    np.testing.assert_allclose(pred, P, **TOL64)

    loss0 = float(np.mean(-log_softmax(Z)[np.arange(6), labels]))
    result = model.test_on_batch(X, labels)
    assert isinstance(result, list) and len(result) == 2
    assert result[0] == pytest.approx(loss0, rel=1e-12)
    assert result[1] == pytest.approx(_acc_sparse(P, labels), abs=1e-12)
    assert_weights(model, [W, b])  # test_on_batch does not train

    result = model.train_on_batch(X, labels)  # pre-update values, then one SGD step
    assert isinstance(result, list) and len(result) == 2 and np.ndim(result[0]) == 0
    assert result[0] == pytest.approx(loss0, rel=1e-12)
    dZ = (P - np.eye(3)[labels]) / 6
    W1, b1 = W - 0.5 * X.T @ dZ, b - 0.5 * dZ.sum(0)
    assert_weights(model, [W1, b1])

    logs = model.train_on_batch(X, labels, return_dict=True)  # the second batch's own loss
    assert set(logs) == {"loss", "accuracy"}
    assert logs["loss"] == pytest.approx(
        float(np.mean(-log_softmax(X @ W1 + b1)[np.arange(6), labels])), rel=1e-12)
    assert model.test_on_batch(X, labels, return_dict=True).keys() == {"loss", "accuracy"}

    plain = dense_model(W, b, activation="softmax")
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    single = plain.train_on_batch(X, labels)
    assert np.ndim(single) == 0 and float(single) == pytest.approx(loss0, rel=1e-12)
    assert np.ndim(plain.test_on_batch(X, labels)) == 0


# ---------------------------------------------------------------------------------------------
# Callbacks in real fits
# ---------------------------------------------------------------------------------------------
def _one_weight_model(lr=0.1):
    """w starts at 0 and moves to 1 on the training data: w_e = 1 - 0.8**(e+1) after epoch e."""
    model = Sequential([Input((1,)), Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=optimizers.SGD(learning_rate=lr), loss="mse")
    x, y = np.ones((4, 1)), np.ones((4, 1))
    xv, yv = np.ones((1, 1)), np.full((1, 1), 0.5)  # val_loss = (w - 0.5)^2
    return model, x, y, xv, yv


def test_early_stopping_restores_the_best_epochs_weights(float64):
    model, x, y, xv, yv = _one_weight_model()
    rec = WeightRecorder()
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = model.fit(x, y, validation_data=(xv, yv), batch_size=4, epochs=20, verbose=0,
                  callbacks=[rec, stop])
    w = [1 - 0.8 ** (e + 1) for e in range(5)]  # 0.2, 0.36, 0.488, 0.5904, 0.67232
    np.testing.assert_allclose(h.history["val_loss"], [(v - 0.5) ** 2 for v in w], rtol=1e-12)
    assert h.epoch == [0, 1, 2, 3, 4]  # best epoch 2, then 2 epochs without improvement
    assert stop.stopped_epoch == 4
    np.testing.assert_allclose(model.get_weights()[0], [[w[2]]], rtol=1e-12)
    np.testing.assert_array_equal(model.get_weights()[0], rec.weights[2][0])


def test_model_checkpoint_keras_and_weights_files(float64, tmp_path):
    X, Y, W, b = regression_data()
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    rec = WeightRecorder()
    full = callbacks.ModelCheckpoint(str(tmp_path / "model-{epoch:02d}.keras"), monitor="loss")
    weights_only = callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch:02d}-{loss:.3f}.weights.h5"),
                                             save_weights_only=True, monitor="loss")
    h = model.fit(X, Y, batch_size=6, epochs=3, shuffle=False, verbose=0,
                  callbacks=[rec, full, weights_only])
    for epoch in range(3):
        path = tmp_path / f"model-{epoch + 1:02d}.keras"
        assert {"metadata.json", "config.json", "model.weights.h5"} <= set(
            zipfile.ZipFile(path).namelist())
        loaded = fastdense.models.load_model(str(path))
        for got, want in zip(loaded.get_weights(), rec.weights[epoch]):
            np.testing.assert_array_equal(got, want)
        wpath = tmp_path / f"w-{epoch + 1:02d}-{h.history['loss'][epoch]:.3f}.weights.h5"
        fresh = dense_model(np.zeros_like(W), np.zeros_like(b))
        fresh.load_weights(str(wpath))
        for got, want in zip(fresh.get_weights(), rec.weights[epoch]):
            np.testing.assert_array_equal(got, want)
    expected = reference_training(sgd_rule(), [W, b], X, Y, full_batches(6, 3), 0.1)
    for got, want in zip(rec.weights[2], expected):
        np.testing.assert_allclose(got, want, **TOL64)


def test_reduce_lr_on_plateau_changes_the_optimizer_learning_rate(float64):
    X, _, W, b = regression_data(u=1)
    Y = X @ W + b  # already optimal: the loss never improves by min_delta
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    seen = []
    rec = callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(float(model.optimizer.learning_rate)))
    reduce = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1)
    h = model.fit(X, Y, batch_size=6, epochs=5, verbose=0, callbacks=[rec, reduce])
    # epoch 0 improves on inf; each later epoch is a plateau of patience 1 -> halve
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.0125], rel=1e-12)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.00625, rel=1e-12)
    assert h.history["learning_rate"] == pytest.approx(seen, rel=1e-12)


def test_learning_rate_scheduler_sets_the_rate_used_by_each_epoch(float64):
    X, Y, W, b = regression_data()
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.01), loss="mse")
    calls = []

    def schedule(epoch, lr):
        calls.append((epoch, lr))
        return 0.2 * 0.5 ** epoch

    h = model.fit(X, Y, batch_size=6, epochs=3, shuffle=False, verbose=0,
                  callbacks=[callbacks.LearningRateScheduler(schedule)])
    assert [c[0] for c in calls] == [0, 1, 2]
    assert [c[1] for c in calls] == pytest.approx([0.01, 0.2, 0.1], rel=1e-12)
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y, full_batches(6, 3),
                                             lambda t: 0.2 * 0.5 ** t))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05, rel=1e-12)
    assert h.history["learning_rate"] == pytest.approx([0.2, 0.1, 0.05], rel=1e-12)


def test_terminate_on_nan_stops_a_diverging_fit_quietly(capsys):
    model = Sequential([Input((1,)), Dense(1)])
    model.set_weights([np.ones((1, 1)), np.zeros(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=1.0), loss="mse")
    x = np.full((64, 1), 1000.0)
    y = np.zeros((64, 1))
    h = model.fit(x, y, batch_size=8, epochs=5, shuffle=False, verbose=0,
                  callbacks=[callbacks.TerminateOnNaN()])
    assert h.epoch == [0]
    assert not math.isfinite(h.history["loss"][0])
    assert "Invalid loss, terminating training" in capsys.readouterr().out


def test_csv_logger_file_content(float64, tmp_path):
    X, Y, W, b = regression_data(n=8)
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05), loss="mse", metrics=["mae"])
    path = tmp_path / "log.csv"
    h = model.fit(X, Y, validation_data=(X[:3], Y[:3]), batch_size=4, epochs=3, verbose=0,
                  callbacks=[callbacks.CSVLogger(str(path))])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "mae", "val_loss", "val_mae"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    for key_index, key in enumerate(rows[0][1:], start=1):
        assert [float(r[key_index]) for r in rows[1:]] == h.history[key]


def test_lambda_callback_hooks_in_a_real_fit(float64):
    X, Y, W, b = regression_data(n=10)
    events = []
    cb = callbacks.LambdaCallback(
        on_train_begin=lambda logs: events.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: events.append(("epoch_begin", epoch)),
        on_train_batch_begin=lambda batch, logs: events.append(("batch_begin", batch)),
        on_train_batch_end=lambda batch, logs: events.append(("batch_end", batch)),
        on_epoch_end=lambda epoch, logs: events.append(("epoch_end", epoch, logs["loss"])),
        on_train_end=lambda logs: events.append("train_end"))
    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05), loss="mse")
    h = model.fit(X, Y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    expected = ["train_begin"]
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for batch in range(3):
            expected += [("batch_begin", batch), ("batch_end", batch)]
        expected.append(("epoch_end", epoch, h.history["loss"][epoch]))
    expected.append("train_end")
    assert events == expected


def test_stop_training_inside_an_epoch_skips_its_remaining_batches(float64):
    X, Y, W, b = regression_data(n=8)

    class StopAfterSecondBatch(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    model = dense_model(W, b)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    h = model.fit(X, Y, batch_size=2, epochs=3, shuffle=False, verbose=0,
                  callbacks=[StopAfterSecondBatch()])
    assert h.epoch == [0]
    assert int(model.optimizer.iterations) == 2
    assert_weights(model, reference_training(sgd_rule(), [W, b], X, Y,
                                             [np.arange(0, 2), np.arange(2, 4)], 0.1))


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------
def test_flatten_input_shape_on_raw_uint8_images(float64):
    rng = np.random.default_rng(61)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    W = rng.normal(scale=0.01, size=(784, 3))
    b = rng.normal(size=3)
    model = Sequential([Flatten(input_shape=(28, 28)), Dense(3)])
    assert model.input_shape == (None, 28, 28) and model.output_shape == (None, 3)
    model.set_weights([W, b])
    expected = images.reshape(5, 784).astype(np.float64) @ W + b
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, **TOL64)
    model.compile(optimizer="sgd", loss="mse")
    y = rng.normal(size=(5, 3))
    assert model.evaluate(images, y, verbose=0) == pytest.approx(
        float(np.mean((expected - y) ** 2)), rel=1e-12)


def test_input_declares_the_shape_and_builds_the_weights(float64):
    model = Sequential([Input((3,)), Dense(2)])
    assert model.input_shape == (None, 3)
    assert [w.shape for w in model.get_weights()] == [(3, 2), (2,)]
    X, _, W, b = regression_data()
    model.set_weights([W, b])
    np.testing.assert_allclose(model.predict(X, verbose=0), X @ W + b, **TOL64)


def _dropout_model(rate, units=200):
    # x = 1 -> 200 ones -> dropout -> sum: the output is (kept units) / (1 - rate)
    model = Sequential([Input((1,)), Dense(units, use_bias=False), Dropout(rate),
                        Dense(1, use_bias=False)])
    model.set_weights([np.ones((1, units)), np.ones((units, 1))])
    model.compile(optimizer=optimizers.SGD(learning_rate=TINY_LR), loss="mse")
    return model


def test_dropout_is_the_identity_at_inference(float64):
    model = _dropout_model(0.5)
    x, y = np.ones((3, 1)), np.zeros((3, 1))
    np.testing.assert_array_equal(model.predict(x, verbose=0), np.full((3, 1), 200.0))
    np.testing.assert_array_equal(model(x), np.full((3, 1), 200.0))
    np.testing.assert_array_equal(model.predict_on_batch(x), np.full((3, 1), 200.0))
    assert model.evaluate(x, y, verbose=0) == 40000.0
    assert model.test_on_batch(x, y) == 40000.0


def test_dropout_in_training_drops_rate_and_scales_by_inverse_keep(float64):
    rate, units, calls = 0.3, 200, 40
    model = _dropout_model(rate, units)
    x, y = np.ones((1, 1)), np.zeros((1, 1))
    kept = []
    for _ in range(calls):
        loss = model.train_on_batch(x, y)  # (kept / (1 - rate))^2
        k = math.sqrt(loss) * (1 - rate)
        assert abs(k - round(k)) < 1e-6, "output is not an integer count / (1 - rate)"
        kept.append(round(k))
    # about `rate` of the units dropped: E[kept] = 140, sd of the mean ~1
    assert abs(np.mean(kept) - units * (1 - rate)) < 5
    assert len(set(kept)) > 3  # a new mask per step
    assert_weights(model, [np.ones((1, units)), np.ones((units, 1))])  # lr tiny: unchanged


def test_dropout_is_reproducible_with_set_random_seed(float64):
    runs = []
    for seed in (7, 7, 8):
        fastdense.utils.set_random_seed(seed)
        model = _dropout_model(0.5, 50)
        runs.append([model.train_on_batch(np.ones((2, 1)), np.zeros((2, 1))) for _ in range(6)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("name, fn", [
    ("tanh", np.tanh), ("relu", lambda z: np.maximum(z, 0)), ("softmax", softmax),
    ("sigmoid", sigmoid), ("hard_sigmoid", lambda z: np.clip(z + 3, 0, 6) / 6),
])
def test_activation_layer_equals_the_dense_activation(float64, name, fn):
    X, _, W, b = regression_data(n=7, u=3, seed=71)
    X = X * 3
    fused = dense_model(W, b, activation=name)
    separate = Sequential([Input((3,)), Dense(3), Activation(name)])
    separate.set_weights([W, b])
    expected = fn(X @ W + b)
    np.testing.assert_allclose(separate.predict(X, verbose=0), expected, **TOL64)
    np.testing.assert_allclose(fused.predict(X, verbose=0), expected, **TOL64)


def test_activation_layer_softmax_trains_like_dense_softmax(float64):
    X, W, b, rng = _classification_setup(3, seed=72, n=6)
    T = np.eye(3)[rng.integers(0, 3, 6)]
    separate = Sequential([Input((3,)), Dense(3), Activation("softmax")])
    separate.set_weights([W, b])
    separate.compile(optimizer=optimizers.SGD(learning_rate=0.5), loss="categorical_crossentropy")
    loss = separate.train_on_batch(X, T)
    Z = X @ W + b
    assert loss == pytest.approx(float(np.mean(_cce_from_logits(Z, T))), rel=1e-12)
    dZ = (softmax(Z) - T) / 6
    assert_weights(separate, [W - 0.5 * X.T @ dZ, b - 0.5 * dZ.sum(0)])


REGULARIZER_CASES = {
    "l1_string": ("l1", None, lambda W, b: 0.01 * np.abs(W).sum()),
    "l2_string": ("l2", None, lambda W, b: 0.01 * (W ** 2).sum()),
    "L1_object": (regularizers.L1(0.3), None, lambda W, b: 0.3 * np.abs(W).sum()),
    "L2_object": (regularizers.L2(0.2), None, lambda W, b: 0.2 * (W ** 2).sum()),
    "L1L2_object": (regularizers.L1L2(0.1, 0.05), None,
                    lambda W, b: 0.1 * np.abs(W).sum() + 0.05 * (W ** 2).sum()),
    "kernel_and_bias": (regularizers.L2(0.2), regularizers.L1(0.4),
                        lambda W, b: 0.2 * (W ** 2).sum() + 0.4 * np.abs(b).sum()),
    "bias_l2_string": (None, "l2", lambda W, b: 0.01 * (b ** 2).sum()),
}


@pytest.mark.parametrize("case", sorted(REGULARIZER_CASES))
def test_regularizers_add_their_penalty_to_the_loss_and_gradient(float64, case):
    kernel_reg, bias_reg, penalty = REGULARIZER_CASES[case]
    X, Y, W, b = regression_data()
    b = b + np.array([0.5, -0.7])
    model = dense_model(W, b, kernel_regularizer=kernel_reg, bias_regularizer=bias_reg)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    p = float(penalty(W, b))
    assert p > 1e-3
    data_loss = _mse(X, Y, W, b)
    assert model.evaluate(X, Y, verbose=0) - data_loss == pytest.approx(p, rel=1e-10)
    # training: the returned loss includes the penalty, and so does the gradient
    assert model.train_on_batch(X, Y) == pytest.approx(data_loss + p, rel=1e-12)
    # the penalty strengths, read back from the formula rather than from fastdense's objects
    l1k, l2k = _strengths(penalty, W.shape, "kernel")
    l1b, l2b = _strengths(penalty, b.shape, "bias")
    gW, gb = mse_grads([W, b], X, Y)
    gW = gW + l1k * np.sign(W) + 2 * l2k * W
    gb = gb + l1b * np.sign(b) + 2 * l2b * b
    assert_weights(model, [W - 0.1 * gW, b - 0.1 * gb])


def _strengths(penalty, shape, which):
    """(l1, l2) of the penalty on one weight, probed on constant arrays: p(c) = l1*|c|*N + l2*c^2*N."""
    def at(c):
        W = np.full((3, 2), c if which == "kernel" else 0.0)
        b = np.full(2, c if which == "bias" else 0.0)
        return float(penalty(W, b)) / (W.size if which == "kernel" else b.size)
    p1, p2 = at(1.0), at(2.0)  # l1 + l2, 2 l1 + 4 l2
    l2 = (p2 - 2 * p1) / 2
    return p1 - l2, l2


@pytest.mark.parametrize("name, kind, scale", [
    ("glorot_uniform", "uniform", math.sqrt(6 / (400 + 300))),
    ("he_uniform", "uniform", math.sqrt(6 / 400)),
    ("lecun_uniform", "uniform", math.sqrt(3 / 400)),
    ("random_uniform", "uniform", 0.05),
    ("glorot_normal", "truncated", math.sqrt(2 / (400 + 300))),
    ("he_normal", "truncated", math.sqrt(2 / 400)),
    ("lecun_normal", "truncated", math.sqrt(1 / 400)),
    ("random_normal", "normal", 0.05),
    ("zeros", "constant", 0.0),
    ("ones", "constant", 1.0),
])
def test_kernel_initializers(name, kind, scale):
    model = Sequential([Input((400,)), Dense(300, kernel_initializer=name)])
    kernel, bias = model.get_weights()
    w = kernel.astype(np.float64).ravel()
    np.testing.assert_array_equal(bias, 0.0)  # bias_initializer="zeros"
    if kind == "constant":
        np.testing.assert_array_equal(w, scale)
        return
    assert abs(w.mean()) < 0.02 * scale
    if kind == "uniform":
        assert np.abs(w).max() <= scale * (1 + 1e-6)
        assert np.abs(w).max() > 0.999 * scale
        assert w.std() == pytest.approx(scale / math.sqrt(3), rel=0.02)
    elif kind == "truncated":
        # Keras: truncated at 2 sd of a normal whose sd is scale / 0.8796..., so the draws have sd
        # `scale` and |w| <= 2 * scale / 0.87962566103423978
        bound = 2 * scale / 0.87962566103423978
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert np.abs(w).max() > 0.99 * bound
        assert w.std() == pytest.approx(scale, rel=0.03)
    else:  # untruncated normal
        assert w.std() == pytest.approx(scale, rel=0.03)
        assert np.abs(w).max() > 3.5 * scale


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------
from formulas import ACTIVATIONS  # noqa: E402  (Keras 3's activations in float64)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_formula(float64, name):
    rng = np.random.default_rng(81)
    X = rng.uniform(-2, 2, size=(64, 3))
    W = rng.normal(size=(3, 5))
    b = np.array([0.0, -1.0, 1.0, 2.5, -3.5])
    Z = X @ W + b
    assert Z.min() < -3.5 and Z.max() > 3.5  # beyond every kink (hard_sigmoid's at +-3)
    model = dense_model(W, b, activation=name)
    np.testing.assert_allclose(model.predict(X, verbose=0), ACTIVATIONS[name](Z), **TOL64)


def test_activation_exact_points(float64):
    # Hand-checkable values at chosen inputs (weights: identity, bias 0)
    z = np.array([[-4.0, -1.0, 0.0, 1.0, 2.0]])
    model = dense_model(np.eye(5), np.zeros(5), activation="hard_sigmoid")
    np.testing.assert_allclose(model.predict(z, verbose=0), [[0.0, 1 / 3, 0.5, 2 / 3, 5 / 6]], **TOL64)
    model = dense_model(np.eye(5), np.zeros(5), activation="leaky_relu")
    np.testing.assert_allclose(model.predict(z, verbose=0), [[-0.8, -0.2, 0.0, 1.0, 2.0]], **TOL64)
    model = dense_model(np.eye(5), np.zeros(5), activation="gelu")
    np.testing.assert_allclose(model.predict(z, verbose=0)[0, 3], 0.8413447460685429, rtol=1e-12)


def test_unknown_activation_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        Dense(3, activation="reluu")
    message = str(err.value)
    for valid in ("relu", "gelu", "hard_sigmoid", "leaky_relu", "softmax", "selu"):
        assert valid in message
