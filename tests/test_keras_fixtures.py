"""fastdense against numbers produced by real TF-Keras 3.15.1 (tests/data/keras_fixtures).

Same initial weights, same data, shuffle=False: per-epoch history, trained weights, evaluate and
predict must match Keras's. The fixtures hold float32 numbers (the "float64" case too: Keras
stored its weights and predictions as float32), hence rtol ~1e-4 throughout.
"""
import json

import numpy as np
import pytest

import fastdense
from fastdense import Sequential, layers, optimizers

from conftest import KERAS_FIXTURES, assert_history_matches_keras, assert_weights_match_keras

CASES = ["reference_sigmoid_softmax_sgd", "relu_adam_sparse", "tanh_rmsprop_mse",
         "relu_sgd_momentum_bce", "float64_tanh_adam"]


def load_case(name):
    spec = json.loads((KERAS_FIXTURES / f"{name}.json").read_text())
    arrays = dict(np.load(KERAS_FIXTURES / f"{name}.npz"))
    return spec, arrays


def build_model(spec, arrays):
    fastdense.config.set_floatx(spec["dtype"])
    model = Sequential()
    acts = spec["hidden_activations"]
    model.add(layers.Dense(spec["hidden_units"], activation=acts[0], input_shape=(spec["input_dim"],)))
    for act in acts[1:]:
        model.add(layers.Dense(spec["hidden_units"], activation=act))
    model.add(layers.Dense(spec["output_units"], activation=spec["output_activation"]))
    model.set_weights([arrays[f"initial_{i}"] for i in range(spec["n_weights"])])
    opt = dict(spec["optimizer"])
    name = opt.pop("name")
    optimizer = name if not opt else getattr(optimizers, name)(**opt)
    model.compile(optimizer=optimizer, loss=spec["loss"], metrics=spec["metrics"])
    return model


@pytest.fixture(params=CASES)
def trained(request):
    spec, arrays = load_case(request.param)
    model = build_model(spec, arrays)
    history = model.fit(arrays["x"], arrays["y"], verbose=0, **spec["fit"])
    return spec, arrays, model, history


def test_history_matches_keras(trained):
    spec, _, _, history = trained
    assert_history_matches_keras(history, spec)


def test_trained_weights_match_keras(trained):
    spec, arrays, model, _ = trained
    assert_weights_match_keras(model.get_weights(), spec, arrays, rtol=1e-4)


def test_evaluate_matches_keras(trained):
    spec, arrays, model, _ = trained
    result = model.evaluate(arrays["x"], arrays["y"], batch_size=spec["evaluate_batch_size"], verbose=0)
    np.testing.assert_allclose(result, spec["evaluate"], rtol=1e-4)


def test_predict_matches_keras(trained):
    spec, arrays, model, _ = trained
    pred = model.predict(arrays["x"][:20], verbose=0)
    assert pred.dtype == np.dtype(spec["dtype"])
    np.testing.assert_allclose(pred, arrays["predict"], rtol=1e-4, atol=1e-6)


def test_fixture_training_is_not_trivially_matched():
    """The comparison has teeth: a different learning rate gives different numbers."""
    spec, arrays = load_case("reference_sigmoid_softmax_sgd")
    model = build_model(spec, arrays)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.02), loss=spec["loss"], metrics=spec["metrics"])
    history = model.fit(arrays["x"], arrays["y"], verbose=0, **spec["fit"])
    assert not np.allclose(history.history["loss"][1], spec["history"]["loss"][1], rtol=1e-4)
