"""Pickling goes through the `.keras` format (Keras 3's `__reduce__`): predictions are identical
after a round trip, training continues exactly where it stopped, and nothing else of the model's
object graph is pickled."""
import copy
import io
import pickle
import pickletools
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastdense
from fastdense import Sequential, layers, optimizers


def _data(n=64, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = fastdense.utils.to_categorical(rng.integers(0, classes, size=n), classes)
    return x, y


def _model(dtype=None):
    return Sequential([layers.Input((6,), dtype=dtype), layers.Dense(8, activation="tanh", dtype=dtype),
                       layers.Dropout(0.1), layers.Dense(3, activation="softmax", dtype=dtype)])


def _trained(dtype=None, optimizer=None):
    fastdense.utils.set_random_seed(1)
    model = _model(dtype)
    model.compile(optimizer=optimizer or optimizers.Adam(learning_rate=0.01),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model


def _globals(payload):
    """Every (module, name) the pickle stream would import."""
    names, strings = [], []
    for op, arg, _ in pickletools.genops(payload):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.append(tuple(strings[-2:]))
        elif op.name == "GLOBAL":
            names.append(tuple(arg.split(" ")))
    return names


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trained_model_round_trip_predicts_identically(dtype):
    model = _trained(dtype)
    clone = pickle.loads(pickle.dumps(model))
    x, _ = _data(n=33, seed=5)
    assert clone is not model and clone.dtype == dtype
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]
    assert clone.compiled and clone.metrics_names == model.metrics_names


@pytest.mark.parametrize("optimizer", [lambda: optimizers.Adam(learning_rate=0.01),
                                       lambda: optimizers.SGD(0.05, momentum=0.9),
                                       lambda: optimizers.RMSprop(0.01)])
def test_training_continues_exactly_after_unpickling(optimizer):
    model = _trained(optimizer=optimizer())
    clone = pickle.loads(pickle.dumps(model))
    assert clone.optimizer.iterations == model.optimizer.iterations > 0
    x, y = _data(seed=2)
    for m in (model, clone):  # the same seed, the same data: the same shuffles and dropout masks
        fastdense.utils.set_random_seed(7)
        m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert clone.optimizer.iterations == model.optimizer.iterations


def test_optimizer_state_survives():
    model = _trained()
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.optimizer._slots, model.optimizer._slots)
    assert np.any(model.optimizer._slots != 0)


def test_unbuilt_and_uncompiled_models_round_trip():
    model = Sequential([layers.Dense(4, activation="relu"), layers.Dense(2)], name="plain")
    clone = pickle.loads(pickle.dumps(model))
    assert not clone.built and not clone.compiled and clone.name == "plain"
    assert [type(l).__name__ for l in clone.layers] == ["Dense", "Dense"]
    built = _model()
    clone = pickle.loads(pickle.dumps(built))
    assert clone.built and not clone.compiled
    x, _ = _data(n=5)
    np.testing.assert_array_equal(clone(x), built(x))
    # compiled but never trained: compiles again, trains
    built.compile(optimizer="sgd", loss="categorical_crossentropy")
    clone = pickle.loads(pickle.dumps(built))
    assert clone.compiled and clone.optimizer.iterations == 0
    clone.fit(*_data(), epochs=1, verbose=0)


def test_pickle_holds_only_the_keras_file():
    model = _trained()
    payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    # the only code the stream names is fastdense's loader of `.keras` bytes
    assert _globals(payload) == [("fastdense._keras_bytes", "from_bytes")]
    reduced = model.__reduce__()
    data = reduced[1][0]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    assert len(payload) < len(data) + 200


def test_deepcopy_is_independent():
    model = _trained()
    clone = copy.deepcopy(model)
    before = model.get_weights()
    clone.fit(*_data(seed=3), epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(np.any(a != b) for a, b in zip(before, clone.get_weights()))


def test_unpickling_rejects_bad_bytes():
    from fastdense import _keras_bytes

    with pytest.raises(ValueError):
        _keras_bytes.from_bytes(b"not a zip file")
    with pytest.raises(TypeError, match="Received: data of type str"):
        _keras_bytes.from_bytes("model.keras")


def test_model_crosses_a_process_boundary():
    model = _trained()
    x, _ = _data(n=7, seed=9)
    code = ("import pickle, sys; m, x = pickle.load(sys.stdin.buffer); "
            "pickle.dump(m.predict(x, verbose=0), sys.stdout.buffer)")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((model, x)),
                         capture_output=True, check=True, timeout=120)
    np.testing.assert_array_equal(pickle.loads(out.stdout), model.predict(x, verbose=0))
