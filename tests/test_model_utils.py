"""Keras's model utilities: get_layer, clone_model, to_json / model_from_json, layer configs."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastdense
from fastdense import Sequential, layers, optimizers
from fastdense.models import clone_model, model_from_json

FIXTURES = Path(__file__).resolve().parent / "data" / "keras_fixtures"


def _model(compiled=True, with_input=False):
    body = [layers.Flatten(), layers.Dense(5, activation="relu", kernel_regularizer="l2"),
            layers.Dropout(0.25), layers.Activation("tanh"),
            layers.Dense(3, activation="softmax", use_bias=False)]
    if with_input:
        m = Sequential([fastdense.Input((2, 3))] + body, name="net")
    else:
        body[0] = layers.Flatten(input_shape=(2, 3))
        m = Sequential(body, name="net")
    if compiled:
        m.compile(optimizer=optimizers.Adam(0.005), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return m


def _x(n=10):
    return np.random.default_rng(0).normal(size=(n, 2, 3))


# ---------------------------------------------------------------------------------------------
# get_layer
# ---------------------------------------------------------------------------------------------
def test_get_layer_by_name_and_index():
    m = _model()
    names = [l.name for l in m.layers]
    assert m.get_layer(names[1]) is m.layers[1]
    assert m.get_layer(index=0) is m.layers[0]
    assert m.get_layer(index=-1) is m.layers[-1]
    assert m.get_layer(index=np.int64(2)) is m.layers[2]


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"name": "x", "index": 0}, ValueError, r"Provide only a layer name or a layer index. "
                                            r"Received: index=0, name='x'"),
    ({}, ValueError, r"Provide either a layer name or layer index"),
    ({"index": 5}, ValueError, r"retrieve layer at index 5 but model only has 5 layers"),
    ({"index": -6}, ValueError, r"index -6 but model only has 5 layers"),
    ({"index": 1.0}, TypeError, r"`index` must be an integer. Received: index=1.0"),
    ({"index": True}, TypeError, r"Received: index=True"),
    ({"name": "nope"}, ValueError, r"No such layer: nope. Existing layers are: \['flatten"),
])
def test_get_layer_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _model().get_layer(**kwargs)


# ---------------------------------------------------------------------------------------------
# clone_model
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_input", [False, True])
def test_clone_model_same_architecture_fresh_weights_uncompiled(with_input):
    m = _model(with_input=with_input)
    m.layers[1].trainable = False
    c = clone_model(m)
    assert c is not m and c.name == m.name
    assert c.get_config() == m.get_config()
    assert not c.compiled and c.optimizer is None
    assert c.built and c.input_shape == m.input_shape == (None, 2, 3)
    assert all(a is not b for a, b in zip(c.layers, m.layers))
    assert not c.layers[1].trainable
    assert [w.shape for w in c.get_weights()] == [w.shape for w in m.get_weights()]
    # fresh draws of the initializers (glorot_uniform): different kernels
    assert not np.array_equal(c.get_weights()[0], m.get_weights()[0])
    # independent: changing the clone leaves the original alone
    before = m.get_weights()
    c.set_weights([w + 1 for w in c.get_weights()])
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    # and with the original's weights it computes the same function
    c.set_weights(m.get_weights())
    np.testing.assert_array_equal(c.predict(_x(), verbose=0), m.predict(_x(), verbose=0))


def test_clone_of_a_model_built_by_fit_and_of_an_unbuilt_model():
    m = Sequential([layers.Dense(4), layers.Dense(1)])
    assert not clone_model(m).built
    m.compile(optimizer="sgd", loss="mse")
    m.fit(np.ones((8, 3)), np.ones(8), verbose=0)
    c = clone_model(m)
    assert c.built and c.input_shape == (None, 3) and c.count_params() == m.count_params()


def test_clone_function_replaces_layers():
    m = _model()

    def swap(layer):
        cfg = layer.get_config()
        if isinstance(layer, layers.Dense) and cfg["activation"] == "relu":
            cfg["activation"] = "elu"
        return type(layer).from_config(cfg)

    c = clone_model(m, clone_function=swap)
    assert c.layers[1].activation.name == "elu" and m.layers[1].activation.name == "relu"


@pytest.mark.parametrize("call,match", [
    (lambda m: clone_model("model"), r"Expected `model` argument to be a fastdense `Sequential`"),
    (lambda m: clone_model(m, input_tensors=[1]), r"supports `clone_function` only. Received: "
                                                  r"\{'input_tensors': \[1\]\}"),
    (lambda m: clone_model(m, clone_function=3), r"`clone_function` must be callable"),
    (lambda m: clone_model(m, clone_function=lambda l: l), r"must return a new layer"),
    (lambda m: clone_model(m, clone_function=lambda l: "layer"), r"must return a fastdense layer"),
])
def test_clone_model_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(_model())


# ---------------------------------------------------------------------------------------------
# to_json / model_from_json
# ---------------------------------------------------------------------------------------------
def test_to_json_is_keras_serialize_keras_object_layout():
    m = _model()
    cfg = json.loads(m.to_json())
    assert cfg["module"] == "keras" and cfg["class_name"] == "Sequential"
    assert cfg["registered_name"] is None
    assert cfg["build_config"] == {"input_shape": [None, 2, 3]}
    assert cfg["config"]["name"] == "net"
    entries = cfg["config"]["layers"]
    assert [e["class_name"] for e in entries] == ["InputLayer", "Flatten", "Dense", "Dropout",
                                                  "Activation", "Dense"]
    assert all(e["module"] == "keras.layers" for e in entries)
    assert entries[2]["config"]["units"] == 5 and entries[5]["config"]["use_bias"] is False
    assert cfg["compile_config"]["optimizer"]["class_name"] == "Adam"
    assert cfg["compile_config"]["loss"] == "sparse_categorical_crossentropy"
    assert "compile_config" not in json.loads(_model(compiled=False).to_json())
    assert m.to_json(indent=2).startswith("{\n  ")


def test_to_json_is_the_config_that_save_writes_for_keras(tmp_path):
    """model.save's config.json is what Keras 3 loads (tests/test_saving_interop.py); to_json
    writes the same object, so keras.models.model_from_json reads it."""
    m = _model()
    m.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        saved = json.loads(zf.read("config.json"))
    assert json.loads(m.to_json()) == saved


@pytest.mark.parametrize("compiled", [False, True])
def test_model_from_json_round_trip(compiled):
    m = _model(compiled=compiled)
    r = model_from_json(m.to_json())
    assert r.get_config() == m.get_config() and r.built
    assert r.compiled == compiled
    if compiled:
        assert isinstance(r.optimizer, optimizers.Adam) and r.optimizer.learning_rate == 0.005
        assert r.loss.name == "sparse_categorical_crossentropy" and r.metrics_names == ["loss", "accuracy"]
        r.fit(_x(), np.arange(10) % 3, epochs=1, verbose=0)
    r.set_weights(m.get_weights())
    np.testing.assert_array_equal(r.predict(_x(), verbose=0), m.predict(_x(), verbose=0))
    assert model_from_json(m.to_json().encode()).get_config() == m.get_config()


@pytest.mark.parametrize("case", ["reference_sigmoid_softmax_sgd", "relu_adam_sparse",
                                  "tanh_rmsprop_mse", "float64_tanh_adam"])
def test_model_from_json_reads_keras_written_json(case):
    """Keras 3's to_json() is its serialize_keras_object(model): the config.json of its .keras
    files. Those written by TF-Keras 3.15.1 load, and predict what Keras predicted."""
    path = FIXTURES / f"{case}.keras"
    with zipfile.ZipFile(path) as zf:
        text = zf.read("config.json").decode()
    m = model_from_json(text)
    assert m.compiled and m.built
    m.load_weights(path)
    ref = np.load(FIXTURES / f"{case}.npz")
    np.testing.assert_allclose(m.predict(ref["x"][:20], verbose=0), ref["predict"],
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("text,exc,match", [
    (123, TypeError, r"`json_string` must be a JSON string. Received: json_string of type int"),
    ("{not json", ValueError, r"Invalid model JSON: .*Received: a string of 9 characters"),
    ('{"class_name": "Sequential", "config": {"layers": [], "x": NaN}}', ValueError,
     r"holds NaN, which is not valid JSON"),
    ("[1, 2]", ValueError, r"expected an object .* Received: list"),
    ('{"module": "keras", "class_name": "Functional", "config": {}}', ValueError,
     r"Invalid model JSON: .*fastdense loads Sequential models only"),
    ('{"module": "keras", "class_name": "Sequential", "config": {"layers": [{"module": '
     '"os", "class_name": "system", "config": {}}]}}', ValueError,
     r"never imports code named in a file"),
    ('{"module": "keras", "class_name": "Sequential", "config": {"layers": [{"module": '
     '"keras.layers", "class_name": "Conv2D", "config": {}}]}}', ValueError,
     r"'Conv2D' layer, which fastdense does not implement"),
])
def test_model_from_json_errors(text, exc, match):
    with pytest.raises(exc, match=match):
        model_from_json(text)


def test_model_from_json_refuses_custom_objects():
    with pytest.raises(ValueError, match=r"`custom_objects` is not supported"):
        model_from_json(_model().to_json(), custom_objects={"X": object})


# ---------------------------------------------------------------------------------------------
# layer configs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: layers.Dense(7, activation="gelu", use_bias=False, kernel_initializer="he_normal",
                         kernel_regularizer=fastdense.regularizers.L1L2(0.01, 0.02),
                         bias_regularizer="l2", dtype="float64", name="d1", trainable=False),
    lambda: layers.Dense(3),
    lambda: layers.Activation("softmax", name="act"),
    lambda: layers.Dropout(0.3, seed=4),
    lambda: layers.Flatten(),
    lambda: fastdense.Input((4, 5), name="inp"),
])
def test_layer_get_config_from_config_round_trip(make):
    layer = make()
    cfg = layer.get_config()
    json.dumps(cfg)  # plain JSON types only
    again = type(layer).from_config(cfg)
    assert type(again) is type(layer) and again is not layer
    assert again.get_config() == cfg
    assert again.name == layer.name and getattr(again, "trainable", True) == getattr(layer, "trainable", True)
