"""model.export(path, format="onnx"): onnxruntime's outputs equal fastdense's predict for every
layer and activation, in float32 and float64, on 1 row and many rows."""
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from scipy import special

import fastdense
from fastdense import Sequential, activations, layers
from fastdense.export import onnx as onnx_export

ACTIVATIONS = sorted(activations._CODES)
# float32: 1e-5 relative, float64: 1e-12 relative, relative to the size of the outputs (a
# dot product summed in another order differs by round-off relative to its terms, not its value)
RTOL = {"float32": 1e-5, "float64": 1e-12}


def _session(path_or_proto):
    data = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _run(session, x):
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _assert_close(got, want, dtype):
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def _model(act, dtype):
    fastdense.utils.set_random_seed(3)
    return Sequential([layers.Input((3, 4), dtype=dtype), layers.Flatten(dtype=dtype),
                       layers.Dense(9, activation=act, dtype=dtype),
                       layers.Dropout(0.4, dtype=dtype),
                       layers.Dense(5, dtype=dtype, bias_initializer="random_normal"),
                       layers.Activation(act, dtype=dtype),
                       layers.Dense(4, use_bias=False, activation=act, dtype=dtype)])


def test_every_layer_and_activation_has_a_translation():
    assert set(activations._CODES) <= set(onnx_export.ACTIVATION_CONVERTERS)
    assert set(layers.LAYER_CLASSES) - {"InputLayer"} <= set(onnx_export.LAYER_CONVERTERS)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_onnxruntime_equals_predict(tmp_path, act, dtype):
    model = _model(act, dtype)
    path = str(tmp_path / "model.onnx")
    assert model.export(path, format="onnx", verbose=False) == path
    session = _session(path)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3, 4)) * (0.5 if act == "exponential" else 2.0)
    for rows in (1, 300):  # one row, and more rows than one batch of predict
        batch = x[:rows].astype(dtype)
        _assert_close(_run(session, batch), model.predict(batch, verbose=0), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trained_model_exports(tmp_path, dtype):
    fastdense.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(dtype)
    y = fastdense.utils.to_categorical((x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1), 3)
    model = Sequential([layers.Dense(16, activation="relu", input_shape=(6,), dtype=dtype),
                        layers.Dropout(0.2, dtype=dtype),
                        layers.Dense(3, activation="softmax", dtype=dtype)])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    path = str(tmp_path / "trained.onnx")
    model.export(path, format="onnx", verbose=False)
    _assert_close(_run(_session(path), x), model.predict(x, verbose=0), dtype)


def test_graph_is_standard_with_a_dynamic_batch(tmp_path, capsys):
    model = _model("relu", "float64")
    path = str(tmp_path / "m.onnx")
    model.export(path, format="onnx")
    assert "Saved artifact at" in capsys.readouterr().out
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.ir_version == 8
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 4]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    ops = {n.op_type for n in proto.graph.node}
    assert "Dropout" not in ops and {"MatMul", "Flatten", "Relu"} <= ops
    # another opset
    model.export(path, format="onnx", verbose=False, opset_version=21)
    assert onnx.load(path).opset_import[0].version == 21
    x = np.ones((2, 3, 4))
    _assert_close(_run(_session(path), x), model.predict(x, verbose=0), "float64")


def _identity_model(act, dtype, width):
    model = Sequential([layers.Dense(width, activation=act, input_shape=(width,), dtype=dtype)])
    model.set_weights([np.eye(width), np.zeros(width)])
    return model


_POINTS = np.array([-800.0, -60.0, -30.0, -7.5, -5.9, -3.0, -1.0, -1e-3, -1e-10, -1e-300, 0.0,
                    1e-300, 1e-10, 1e-3, 0.7, 1.0, 2.9, 3.0, 3.1, 5.99, 6.0, 6.01, 30.0, 700.0])
_FORMULAS = {  # independent definitions (SciPy / NumPy), as Keras 3 states them
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772
                                                     * np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.logaddexp(0, x),
    "gelu": lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2))),
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "softsign": lambda x: x / (1 + np.abs(x)),
}


@pytest.mark.parametrize("act", sorted(_FORMULAS))
def test_activation_formulas_are_precise_near_zero_and_far_out(act):
    """Each element on its own scale: expm1, log1p and erf keep their precision near 0."""
    model = _identity_model(act, "float64", len(_POINTS))
    got = _run(_session(onnx_export.to_onnx(model.layers, (len(_POINTS),), "float64")),
               _POINTS[None, :])[0]
    want = _FORMULAS[act](_POINTS)
    # gelu's 1 + erf(x / sqrt(2)) cancels for x < 0 (in Keras and fastdense alike), so erf's
    # absolute error (the float64 table's is below 3e-15) shows up times |x| / 2
    slack = 1.5e-15 * np.abs(_POINTS) if act == "gelu" else 0.0
    assert np.all(np.abs(got - want) <= 1e-13 * np.abs(want) + slack), (got, want)


def test_float64_erf_table_against_scipy():
    model = _identity_model("gelu", "float64", 1)
    session = _session(onnx_export.to_onnx(model.layers, (1,), "float64"))
    x = np.linspace(-12, 12, 48001)[:, None]
    want = 0.5 * x * (1 + special.erf(x / np.sqrt(2)))
    np.testing.assert_allclose(_run(session, x), want, rtol=1e-14, atol=1e-14)


def test_clear_errors(tmp_path, monkeypatch):
    model = _model("relu", "float32")
    with pytest.raises(ValueError, match="format='onnx'"):
        model.export(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="opset_version"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", opset_version=12)
    with pytest.raises(ValueError, match="Unknown argument"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", dynamic_axes=True)
    with pytest.raises(ValueError, match="must be built"):
        Sequential([layers.Dense(3)]).export(str(tmp_path / "m.onnx"), format="onnx")

    class Mystery(layers.Dropout):
        pass

    odd = Sequential([layers.Dense(3, input_shape=(2,)), Mystery(0.1)])
    with pytest.raises(ValueError, match="Mystery has no ONNX translation"):
        odd.export(str(tmp_path / "m.onnx"), format="onnx")
    assert not (tmp_path / "m.onnx").exists()
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "fastdense\[onnx\]"'):
        model.export(str(tmp_path / "m.onnx"), format="onnx")


# -- normalization layers: their inference formulas (Keras configs and weight order) ----------
class _Stub:
    """Stands for a layer kind by its class name, config and weights (as Keras describes them)."""

    def __init__(self, config, weights, width):
        self.name = type(self).__name__.lower()
        self._config, self._weights = config, weights
        self.input_feature_shape = self.output_feature_shape = (width,)

    def get_config(self):
        return dict(self._config)

    def get_weights(self):
        return [np.array(w) for w in self._weights]


class BatchNormalization(_Stub):
    pass


class LayerNormalization(_Stub):
    pass


class Normalization(_Stub):
    pass


class Rescaling(_Stub):
    pass


class GaussianNoise(_Stub):
    pass


def _stub_cases(rng):
    w = 5
    gamma, beta = rng.normal(size=w), rng.normal(size=w)
    mean, var = rng.normal(size=w), rng.uniform(0.1, 2, size=w)
    return [
        (BatchNormalization({"axis": -1, "epsilon": 1e-3, "center": True, "scale": True},
                            [gamma, beta, mean, var], w),
         lambda x: (x - mean) / np.sqrt(var + 1e-3) * gamma + beta),
        (BatchNormalization({"axis": -1, "epsilon": 1e-2, "center": True, "scale": False},
                            [beta, mean, var], w),
         lambda x: (x - mean) / np.sqrt(var + 1e-2) + beta),
        (LayerNormalization({"axis": -1, "epsilon": 1e-3, "center": True, "scale": True},
                            [gamma, beta], w),
         lambda x: (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-3)
         * gamma + beta),
        (Normalization({"axis": -1, "invert": False}, [mean, var, np.array(10)], w),
         lambda x: (x - mean) / np.maximum(np.sqrt(var), 1e-7)),
        (Normalization({"axis": -1, "invert": True, "mean": 2.0, "variance": 4.0}, [], w),
         lambda x: x * 2.0 + 2.0),
        (Rescaling({"scale": 1 / 255, "offset": -0.5}, [], w), lambda x: x / 255 - 0.5),
        (GaussianNoise({"stddev": 0.3}, [], w), lambda x: x),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opset", [17, 18])
def test_normalization_and_noise_layers_as_inference_formulas(dtype, opset):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5)) * 3 + 1
    for layer, formula in _stub_cases(rng):
        session = _session(onnx_export.to_onnx([layer], (5,), dtype, opset_version=opset))
        _assert_close(_run(session, x.astype(dtype)), formula(x).astype(dtype), dtype)
    bad = LayerNormalization({"axis": 0}, [], 5)
    with pytest.raises(ValueError, match="last axis"):
        onnx_export.to_onnx([bad], (5,), dtype)


def test_serving_snippet_from_the_docs(tmp_path):
    """docs/export-and-scale.md: serving with onnxruntime alone."""
    model = _model("gelu", "float32")
    model.export(str(tmp_path / "model.onnx"), format="onnx", verbose=False)
    x = np.random.default_rng(0).normal(size=(1, 3, 4)).astype("float32")

    import onnxruntime as rt
    session = rt.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    probabilities = session.run(None, {name: x})[0]

    _assert_close(probabilities, model.predict(x, verbose=0), "float32")
