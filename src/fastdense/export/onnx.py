"""`model.export(path, format="onnx")`: a fastdense model as a standard ONNX graph.

The graph is the inference function (`predict`): input `(batch, *feature_shape)` with a dynamic
batch dimension, output `(batch, units)`, in the model's float type (float32 or float64).

Layers are translated by `LAYER_CONVERTERS`, a table from the layer's class name to one small
function `convert(graph, layer, x) -> y`; activations by `ACTIVATION_CONVERTERS`, keyed by the
Keras name (aliases from fastdense/_kinds.py). Adding a layer kind is one function and one entry;
a layer kind not in the table is a clear error. Layers that only act in training (Dropout and the
noise layers) are identities; normalization layers are their inference formulas, read from their
Keras config and weights.

Operators are chosen so onnxruntime's CPU provider runs every graph in both float types (it has
no float64 Erf, Elu, Selu, Softplus, Softsign or HardSigmoid, so those are built from
elementary operators), and so each formula is the one fastdense's kernels compute: expm1 and log1p
keep their precision near 0 (Kahan's forms), and float64 erf uses a table of polynomials
accurate to a few ulps. Opset 17, IR version 8: onnxruntime 1.12 or newer loads the files.
`pip install "fastdense[onnx]"` installs the `onnx` package that writes them.
"""
import os

import numpy as np

from .. import _kinds

OPSET = 17
# The IR version that came with each opset: runtimes refuse files marked newer than they know.
_IR_VERSIONS = {17: 8, 18: 8, 19: 9, 20: 9, 21: 10}


def _require_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError('Exporting to ONNX needs the `onnx` package: install it with '
                          '`pip install "fastdense[onnx]"` (or `pip install onnx`).') from exc
    return onnx


class Graph:
    """Collects nodes and constants of one ONNX graph; every value name is unique."""

    def __init__(self, dtype, opset=OPSET):
        self.onnx = _require_onnx()
        self.dtype = np.dtype(dtype)
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self._count = 0

    def _name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, hint="const", dtype=None):
        """A constant tensor (the model's float type unless `dtype` says otherwise)."""
        from onnx import numpy_helper

        arr = np.asarray(value, dtype=dtype or self.dtype)
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type, *inputs, **attrs):
        """Appends one node; returns the name of its output."""
        out = self._name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out],
                                                     name=out + "_node", **attrs))
        return out

    def scalar(self, value):
        return self.const(value, "scalar")


# ---------------------------------------------------------------------------------------------
# Precise elementary functions from ONNX operators
# ---------------------------------------------------------------------------------------------
def _expm1_nonpositive(g, v):
    """exp(v) - 1 for v <= 0, exact near 0 (Kahan: (u - 1) * v / log(u) with u = exp(v))."""
    v = g.op("Max", v, g.scalar(-40.0))  # exp(-40) - 1 is -1 in both types; log(u) stays finite
    u = g.op("Exp", v)
    ratio = g.op("Div", g.op("Mul", g.op("Sub", u, g.scalar(1.0)), v), g.op("Log", u))
    return g.op("Where", g.op("Equal", u, g.scalar(1.0)), v, ratio)


def _log1p_unit(g, t):
    """log(1 + t) for t in [0, 1], exact near 0 (Kahan: log(u) * t / (u - 1) with u = 1 + t)."""
    u = g.op("Add", t, g.scalar(1.0))
    ratio = g.op("Div", g.op("Mul", g.op("Log", u), t), g.op("Sub", u, g.scalar(1.0)))
    return g.op("Where", g.op("Equal", u, g.scalar(1.0)), t, ratio)


_ERF_WIDTH, _ERF_DEGREE, _ERF_LIMIT = 0.25, 12, 6.0  # |erf(x)| rounds to 1 beyond 6 in float64


def _erf_table():
    """Polynomials of degree 12 in t in [-1, 1], one per 0.25-wide piece of [0, 6], interpolating
    erf at Chebyshev points (computed with SciPy; absolute error below 2e-15)."""
    from numpy.polynomial import chebyshev
    from scipy import special

    half = _ERF_WIDTH / 2
    mids = (np.arange(int(_ERF_LIMIT / _ERF_WIDTH)) + 0.5) * _ERF_WIDTH
    rows = [chebyshev.cheb2poly(chebyshev.chebinterpolate(
        lambda t, m=m: special.erf(m + t * half), _ERF_DEGREE)) for m in mids]
    return mids, np.array(rows)


def _erf(g, z):
    if g.dtype == np.float32:
        return g.op("Erf", z)  # onnxruntime has Erf for float32 only
    mids, table = _erf_table()
    a = g.op("Min", g.op("Abs", z), g.scalar(_ERF_LIMIT))
    piece = g.op("Cast", g.op("Floor", g.op("Mul", a, g.scalar(1 / _ERF_WIDTH))),
                 to=g.onnx.TensorProto.INT64)
    piece = g.op("Min", piece, g.const(len(mids) - 1, "last_piece", np.int64))
    t = g.op("Mul", g.op("Sub", a, g.op("Gather", g.const(mids, "erf_mids"), piece)),
             g.scalar(2 / _ERF_WIDTH))
    acc = g.op("Gather", g.const(table[:, -1], "erf_c"), piece)
    for j in range(_ERF_DEGREE - 1, -1, -1):  # Horner, each element with its piece's coefficients
        acc = g.op("Add", g.op("Mul", acc, t), g.op("Gather", g.const(table[:, j], "erf_c"), piece))
    # beyond 5.9, erf(a) rounds to 1 in float64 (erfc(5.9) < 1e-16 / 2): exactly 1, as libm gives
    acc = g.op("Where", g.op("Greater", a, g.scalar(5.9)), g.scalar(1.0), acc)
    return g.op("Where", g.op("Less", z, g.scalar(0.0)), g.op("Neg", acc), acc)


def _where_positive(g, x, negative_branch):
    return g.op("Where", g.op("Greater", x, g.scalar(0.0)), x, negative_branch)


# ---------------------------------------------------------------------------------------------
# Activations: Keras name -> convert(graph, x) -> y, the formulas of fastdense's kernels
# ---------------------------------------------------------------------------------------------
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_LEAKY_SLOPE = 0.2
_INV_SQRT2 = 0.7071067811865476


def _softplus(g, x):  # log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
    return g.op("Add", _log1p_unit(g, g.op("Exp", g.op("Neg", g.op("Abs", x)))), g.op("Relu", x))


def _elu(g, x):  # alpha = 1
    return _where_positive(g, x, _expm1_nonpositive(g, g.op("Min", x, g.scalar(0.0))))


def _selu(g, x):
    negative = g.op("Mul", g.scalar(_SELU_ALPHA), _expm1_nonpositive(g, g.op("Min", x, g.scalar(0.0))))
    return g.op("Mul", g.scalar(_SELU_SCALE), _where_positive(g, x, negative))


def _gelu(g, x):  # exact erf form: 0.5 x (1 + erf(x / sqrt(2)))
    erf = _erf(g, g.op("Mul", x, g.scalar(_INV_SQRT2)))
    return g.op("Mul", g.op("Mul", g.scalar(0.5), x), g.op("Add", g.scalar(1.0), erf))


def _hard_sigmoid(g, x):  # relu6(x + 3) / 6, computed as clip(x / 6 + 0.5, 0, 1) like the kernel
    y = g.op("Add", g.op("Div", x, g.scalar(6.0)), g.scalar(0.5))
    return g.op("Min", g.op("Max", y, g.scalar(0.0)), g.scalar(1.0))


# One graph per activation of _kinds.ACTIVATIONS, by its kernel name.
_ACTIVATION_GRAPHS = {
    "LINEAR": lambda g, x: x,
    "SIGMOID": lambda g, x: g.op("Sigmoid", x),
    "SOFTMAX": lambda g, x: g.op("Softmax", x, axis=-1),
    "TANH": lambda g, x: g.op("Tanh", x),
    "RELU": lambda g, x: g.op("Relu", x),
    "ELU": _elu,
    "SELU": _selu,
    "SOFTPLUS": _softplus,
    "SOFTSIGN": lambda g, x: g.op("Div", x, g.op("Add", g.scalar(1.0), g.op("Abs", x))),
    "SWISH": lambda g, x: g.op("Mul", x, g.op("Sigmoid", x)),
    "GELU": _gelu,
    "LEAKY_RELU": lambda g, x: _where_positive(g, x, g.op("Mul", g.scalar(_LEAKY_SLOPE), x)),
    "HARD_SIGMOID": _hard_sigmoid,
    "EXPONENTIAL": lambda g, x: g.op("Exp", x),
}
# Keras name (aliases included) -> graph; an activation without a graph is a clear error below.
ACTIVATION_CONVERTERS = {name: _ACTIVATION_GRAPHS[a.kernel] for a in _kinds.ACTIVATIONS
                         for name in a.names if a.kernel in _ACTIVATION_GRAPHS}


def _activation(g, name, x, where):
    convert = ACTIVATION_CONVERTERS.get(name)
    if convert is None:
        raise ValueError(f"The activation {name!r} of layer {where!r} has no ONNX translation. "
                         f"Supported: {sorted(ACTIVATION_CONVERTERS)}. Received: activation={name!r}")
    return convert(g, x)


# ---------------------------------------------------------------------------------------------
# Layers: class name -> convert(graph, layer, x) -> y
# ---------------------------------------------------------------------------------------------
def _dense(g, layer, x):
    y = g.op("MatMul", x, g.const(layer.kernel, f"{layer.name}_kernel"))
    if layer.use_bias:
        y = g.op("Add", y, g.const(layer.bias, f"{layer.name}_bias"))
    return _activation(g, layer.activation.name, y, layer.name)


def _identity(g, layer, x):
    return x  # Dropout and noise layers act only in training


def _last_axis(layer):
    axis = layer.get_config().get("axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if axes not in ([-1], [1]):
        raise ValueError(f"ONNX export supports normalization over the last axis of flat inputs. "
                         f"Received: axis={axis!r} on layer {layer.name!r}")


def _scale_center(g, layer, y, weights):
    """y * gamma + beta, for the weights the config says exist (Keras order: gamma, beta)."""
    cfg = layer.get_config()
    k = 0
    if cfg.get("scale", True):
        y = g.op("Mul", y, g.const(weights[k], f"{layer.name}_gamma"))
        k += 1
    if cfg.get("center", True):
        y = g.op("Add", y, g.const(weights[k], f"{layer.name}_beta"))
    return y


def _batch_normalization(g, layer, x):
    """Inference: (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta."""
    _last_axis(layer)
    weights = layer.get_weights()
    mean, variance = weights[-2], weights[-1]
    eps = layer.get_config().get("epsilon", 1e-3)
    std = g.op("Sqrt", g.op("Add", g.const(variance, f"{layer.name}_moving_variance"), g.scalar(eps)))
    y = g.op("Div", g.op("Sub", x, g.const(mean, f"{layer.name}_moving_mean")), std)
    return _scale_center(g, layer, y, weights)


def _row_mean(g, x):
    if g.opset >= 18:  # the axes became an input in opset 18
        return g.op("ReduceMean", x, g.const([-1], "axes", np.int64), keepdims=1)
    return g.op("ReduceMean", x, axes=[-1], keepdims=1)


def _layer_normalization(g, layer, x):
    """Per row: (x - mean) / sqrt(biased variance + epsilon) * gamma + beta."""
    _last_axis(layer)
    eps = layer.get_config().get("epsilon", 1e-3)
    centered = g.op("Sub", x, _row_mean(g, x))
    variance = _row_mean(g, g.op("Mul", centered, centered))
    y = g.op("Div", centered, g.op("Sqrt", g.op("Add", variance, g.scalar(eps))))
    return _scale_center(g, layer, y, layer.get_weights())


def _normalization(g, layer, x):
    """(x - mean) / max(sqrt(variance), 1e-7), or its inverse with invert=True."""
    _last_axis(layer)
    cfg = layer.get_config()
    weights = layer.get_weights()
    if len(weights) >= 2:  # adapted: mean, variance (, count)
        mean, variance = weights[0], weights[1]
    else:
        mean, variance = cfg["mean"], cfg["variance"]
    width = layer.input_feature_shape[-1]
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64).reshape(-1), (width,))
    std = np.maximum(np.sqrt(np.broadcast_to(np.asarray(variance, dtype=np.float64).reshape(-1),
                                             (width,))), 1e-7)
    if cfg.get("invert", False):
        return g.op("Add", g.op("Mul", x, g.const(std, f"{layer.name}_std")),
                    g.const(mean, f"{layer.name}_mean"))
    return g.op("Div", g.op("Sub", x, g.const(mean, f"{layer.name}_mean")),
                g.const(std, f"{layer.name}_std"))


def _rescaling(g, layer, x):
    cfg = layer.get_config()
    return g.op("Add", g.op("Mul", x, g.scalar(cfg["scale"])), g.scalar(cfg.get("offset", 0.0)))


LAYER_CONVERTERS = {
    "Dense": _dense,
    "Activation": lambda g, layer, x: _activation(g, layer.activation.name, x, layer.name),
    "Flatten": lambda g, layer, x: g.op("Flatten", x, axis=1),
    "Dropout": _identity,
    "GaussianNoise": _identity,
    "GaussianDropout": _identity,
    "AlphaDropout": _identity,
    "BatchNormalization": _batch_normalization,
    "LayerNormalization": _layer_normalization,
    "Normalization": _normalization,
    "Rescaling": _rescaling,
}


# ---------------------------------------------------------------------------------------------
# Model -> ONNX
# ---------------------------------------------------------------------------------------------
def to_onnx(layers, feature_shape, dtype, input_name="input_layer", output_name="output_0",
            graph_name="fastdense", opset_version=OPSET):
    """The ONNX `ModelProto` of `layers` applied in order to inputs `(batch, *feature_shape)`."""
    g = Graph(dtype, opset_version)
    onnx = g.onnx
    x = input_name
    for layer in layers:
        convert = LAYER_CONVERTERS.get(type(layer).__name__)
        if convert is None:
            raise ValueError(f"Layer {layer.name!r} of type {type(layer).__name__} has no ONNX "
                             f"translation. Supported: {sorted(LAYER_CONVERTERS)}. "
                             f"Received: a {type(layer).__name__} layer")
        x = convert(g, layer, x)
    g.nodes.append(onnx.helper.make_node("Identity", [x], [output_name], name="output_node"))
    elem = onnx.TensorProto.FLOAT if g.dtype == np.float32 else onnx.TensorProto.DOUBLE
    units = layers[-1].output_feature_shape[-1] if layers else feature_shape[-1]
    graph = onnx.helper.make_graph(
        g.nodes, graph_name,
        [onnx.helper.make_tensor_value_info(input_name, elem, ["batch"] + list(feature_shape))],
        [onnx.helper.make_tensor_value_info(output_name, elem, ["batch", units])],
        initializer=g.initializers)
    model = onnx.helper.make_model(graph, producer_name="fastdense",
                                   opset_imports=[onnx.helper.make_opsetid("", opset_version)])
    model.ir_version = _IR_VERSIONS[opset_version]
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(model, filepath, verbose=None, opset_version=None):
    """Writes `model`'s inference function as an ONNX file (atomically)."""
    from .. import _validation
    from .._atomic import atomic_write

    if not model.built:
        raise ValueError("The model must be built before it is exported: give the first layer "
                         "`input_shape=` (or start with `Input(shape)`), call `model.build(...)`, "
                         "or predict once. Received: an unbuilt model")
    opset = OPSET if opset_version is None else _validation.positive_int("opset_version", opset_version)
    if opset not in _IR_VERSIONS:
        raise ValueError(f"`opset_version` must be between 17 and 21. Received: opset_version={opset!r}")
    path = os.fspath(filepath)
    if not isinstance(path, str):
        raise TypeError(f"`filepath` must be a path. Received: filepath={filepath!r}")
    input_name = model._input_layer.name if model._input_layer is not None else "input_layer"
    proto = to_onnx(model.layers, tuple(model._feature_shape), model.dtype, input_name=input_name,
                    graph_name=model.name, opset_version=opset)
    data = proto.SerializeToString()
    atomic_write(path, lambda fh: fh.write(data))
    if verbose is None or verbose:
        print(f"Saved artifact at '{path}'.")
    return path


__all__ = ["export_onnx", "to_onnx", "LAYER_CONVERTERS", "ACTIVATION_CONVERTERS", "OPSET"]
