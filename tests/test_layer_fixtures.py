"""fastdense's normalization layers against numbers produced by TF-Keras 3.15.1
(tests/data/keras_fixtures/layers, the repository's copy of the shared fixtures).

Each case's spec lists its layers as [Keras class name, kwargs]; the model is built from that
list with the same initial weights (after adapt, for the Normalization case), fitted with
shuffle=False, and its history, every trained weight (moving statistics included), evaluate and
predict compared with Keras's; its `.keras` file, saved by Keras, must load and predict the same.
"""
import json

import numpy as np
import pytest

from fastdense import Sequential, layers, load_model, optimizers

from conftest import KERAS_FIXTURES, assert_history_matches_keras, assert_weights_match_keras

LAYER_FIXTURES = KERAS_FIXTURES / "layers"
CASES = ["batchnorm_relu_sgd", "layernorm_tanh_adam", "normalization_adapt_rmsprop",
         "rescaling_frozen_sgd"]


def load_case(name):
    spec = json.loads((LAYER_FIXTURES / f"{name}.json").read_text())
    arrays = dict(np.load(LAYER_FIXTURES / f"{name}.npz"))
    return spec, arrays


def build_model(spec, arrays):
    model = Sequential([layers.Input(tuple(spec["input_shape"]))]
                       + [getattr(layers, cname)(**kwargs) for cname, kwargs in spec["layers"]])
    initial = [arrays[f"initial_{i}"] for i in range(spec["n_weights"])]
    if spec["adapt"]:
        # Keras's adapt results are among the fixture's initial weights: compare, then use them
        pos = 0
        for layer in model.layers:
            if isinstance(layer, layers.Normalization):
                layer.adapt(arrays["x"])
                for got in layer.get_weights():
                    expected = initial[pos]
                    assert got.dtype == expected.dtype, pos
                    np.testing.assert_allclose(got, expected, rtol=2e-6, err_msg=f"weight {pos}")
                    pos += 1
            else:
                pos += len(layer.weights)
    model.set_weights(initial)
    opt = dict(spec["optimizer"])
    name = opt.pop("name")
    optimizer = name if not opt else getattr(optimizers, name)(**opt)
    model.compile(optimizer=optimizer, loss=spec["loss"], metrics=spec["metrics"])
    return model


@pytest.fixture(scope="module", params=CASES)
def trained(request):
    spec, arrays = load_case(request.param)
    model = build_model(spec, arrays)
    assert [list(w.shape) for w in model.get_weights()] == spec["weight_shapes"]
    history = model.fit(arrays["x"], arrays["y"], verbose=0, **spec["fit"])
    return spec, arrays, model, history


def test_history_matches_keras(trained):
    spec, _, _, history = trained
    assert_history_matches_keras(history, spec)


def test_trained_weights_match_keras(trained):
    spec, arrays, model, _ = trained
    assert_weights_match_keras(model.get_weights(), spec, arrays, rtol=2e-4)


def test_evaluate_matches_keras(trained):
    spec, arrays, model, _ = trained
    result = model.evaluate(arrays["x"], arrays["y"], batch_size=spec["evaluate_batch_size"],
                            verbose=0)
    np.testing.assert_allclose(result, spec["evaluate"], rtol=1e-4)


def test_predict_matches_keras(trained):
    _, arrays, model, _ = trained
    pred = model.predict(arrays["xv"], verbose=0)
    np.testing.assert_allclose(pred, arrays["predict"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_keras_file_loads_and_predicts(name):
    spec, arrays = load_case(name)
    model = load_model(LAYER_FIXTURES / f"{name}.keras")
    assert [type(l).__name__ for l in model.layers] == [c for c, _ in spec["layers"]]
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_array_equal(w, arrays[f"trained_{i}"], err_msg=f"weight {i}")
    np.testing.assert_allclose(model.predict(arrays["xv"], verbose=0), arrays["predict"],
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("edit,match", [
    (lambda f: f.__setitem__("count", np.int64(-5)), r"count.*out of range"),
    (lambda f: f.__setitem__("count", np.float32(3.0)), r"vars/2"),
    (lambda f: f.__setitem__("mean", np.zeros(7, np.float32)), r"vars/0"),
    (lambda f: f.__setitem__("variance", np.full(12, np.inf, np.float32)), r"NaN or Inf"),
])
def test_bad_normalization_weights_in_a_file_are_refused(tmp_path, edit, match):
    import io
    import zipfile

    import h5py

    src = LAYER_FIXTURES / "normalization_adapt_rmsprop.keras"
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buf, "r+") as f:
        group = f["layers/normalization/vars"]
        names = {"mean": "0", "variance": "1", "count": "2"}

        class Setter:
            def __setitem__(self, key, value):
                del group[names[key]]
                group[names[key]] = value

        edit(Setter())
    members["model.weights.h5"] = buf.getvalue()
    dst = tmp_path / "bad.keras"
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ValueError, match=match):
        load_model(dst)
