"""Layers of a dense network, with Keras 3's names, arguments and configs.

Layers hold configuration and, once built, their weights. Inside a `Sequential` model the weights
are views into the model's one flat parameter vector, which the compiled training step updates.
"""
import math

import numpy as np

from . import _kernels, _naming, _validation, activations, config, initializers, regularizers

_BASE_KWARGS = ("input_shape", "input_dim", "batch_input_shape", "batch_size")


def _shape_tuple(name, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        shape = tuple(value)
    except TypeError:
        raise ValueError(f"`{name}` must be a tuple of positive integers. Received: {name}={value!r}") from None
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0 for d in shape):
        raise ValueError(f"`{name}` must be a tuple of positive integers. Received: {name}={value!r}")
    return tuple(int(d) for d in shape)


def _dtype(value):
    if value is None:
        return config.floatx()
    if isinstance(value, dict):  # Keras 3 DTypePolicy config
        value = (value.get("config") or {}).get("name", value)
    name = np.dtype(value).name if not isinstance(value, str) else value
    if name not in ("float32", "float64"):
        raise ValueError(f"fastdense layers compute in 'float32' or 'float64'. Received: dtype={value!r}")
    return name


def assign_weights(current, weights, owner, names=None):
    """Copies `weights` into the arrays `current` after checking the count, every shape and that
    all values are finite -- all or nothing, so a failed call changes no weight.

    `owner` is None for the model, or the layer's name."""
    weights = list(weights)
    if len(weights) != len(current):
        if owner is None:
            shapes = ", ".join(str(w.shape) for w in current)
            head = f"The model expects {len(current)} weight arrays ({shapes})."
        else:
            head = f"Layer {owner!r} expects {len(current)} weight arrays."
        raise ValueError(f"{head} Received: {len(weights)} arrays")
    new = []
    for i, (w, cur) in enumerate(zip(weights, current)):
        arr = _validation.numeric_array(f"weights[{i}]", w)
        if arr.shape != cur.shape:
            where = f"Weight {i} of the model" if owner is None else \
                f"Layer {owner!r} weight {i} ({names[i]})"
            raise ValueError(f"{where} has shape {cur.shape}. "
                             f"Received: weights[{i}].shape={arr.shape}")
        arr = arr.astype(cur.dtype)
        if not np.isfinite(arr).all():
            where = f"Weight {i}" if owner is None else f"Layer {owner!r} weight {i}"
            raise ValueError(f"{where} contains NaN or Inf. "
                             f"Received: weights[{i}] with non-finite values")
        new.append(arr)
    for cur, arr in zip(current, new):
        cur[...] = arr


class Layer:
    """Base class of fastdense layers.

    Args:
        name: the layer's name; default `<snake_case class name>[_N]`, unique per process.
        dtype: `"float32"` or `"float64"`; default `fastdense.config.floatx()`.
        input_shape: per-sample input shape, for the first layer of a `Sequential` model.
        input_dim: the same as `input_shape=(input_dim,)` (Keras 2 spelling).
    """

    def __init__(self, name=None, dtype=None, trainable=True, **kwargs):
        self._input_shape_arg = None
        if kwargs.get("input_shape") is not None:
            self._input_shape_arg = _shape_tuple("input_shape", kwargs["input_shape"])
        elif kwargs.get("batch_input_shape") is not None:
            self._input_shape_arg = _shape_tuple("batch_input_shape", tuple(kwargs["batch_input_shape"])[1:])
        elif kwargs.get("input_dim") is not None:
            self._input_shape_arg = (_validation.positive_int("input_dim", kwargs["input_dim"]),)
        unknown = set(kwargs) - set(_BASE_KWARGS)
        if unknown:
            raise ValueError(f"Unrecognized keyword arguments passed to {type(self).__name__}: "
                             f"{ {k: kwargs[k] for k in sorted(unknown)} }")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"`name` must be a non-empty string without '/'. Received: name={name!r}")
        self.name = name or _naming.unique_name(_naming.snake_case(type(self).__name__))
        self.dtype = _dtype(dtype)
        self.trainable = bool(trainable)
        self.built = False
        self.input_feature_shape = None
        self.output_feature_shape = None

    # -- shapes and weights ---------------------------------------------------------------------
    def build(self, input_shape):
        """Creates the weights for inputs of per-sample shape `input_shape[1:]`."""
        feature_shape = tuple(int(d) for d in tuple(input_shape)[1:])
        self.output_feature_shape = self.compute_output_feature_shape(feature_shape)
        self.input_feature_shape = feature_shape
        self.built = True

    def compute_output_feature_shape(self, feature_shape):
        return feature_shape

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.compute_output_feature_shape(tuple(input_shape)[1:])

    @property
    def weights(self):
        return []

    def _weight_names(self):
        return []

    def get_weights(self):
        """Copies of the layer's weights, in Keras's order."""
        return [np.array(w) for w in self.weights]

    def set_weights(self, weights):
        """Assigns all weights at once, after checking count and every shape (all or nothing)."""
        assign_weights(self.weights, weights, self.name, self._weight_names())

    def count_params(self):
        return int(sum(w.size for w in self.weights))

    def _bind(self, views):
        """Points the weights at views into a model's flat parameter vector (values copied)."""

    # -- configs ---------------------------------------------------------------------------------
    def get_config(self):
        cfg = {"name": self.name, "trainable": self.trainable,
               "dtype": {"module": "keras", "class_name": "DTypePolicy",
                         "config": {"name": self.dtype}, "registered_name": None}}
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __call__(self, x):
        """Applies the layer to a batch (inference mode) and returns a new array."""
        arr = _validation.numeric_array("x", x)
        if not self.built:
            self.build((None,) + (tuple(arr.shape[1:]) or (1,)))
        x2 = _validation.model_input("x", arr, self.input_feature_shape, self.dtype)
        return self._forward(x2).reshape((len(x2),) + self.output_feature_shape)

    def _forward(self, x):
        return x.copy()

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


class InputLayer(Layer):
    """The model's input: per-sample `shape` (Keras's `Input(shape=...)` in a Sequential list)."""

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, batch_shape=None, **kwargs):
        if shape is None and batch_shape is not None:
            shape = tuple(batch_shape)[1:]
        if shape is None:
            raise ValueError("`Input` needs a `shape` (per sample, without the batch size). Received: shape=None")
        kwargs.pop("sparse", None)
        kwargs.pop("ragged", None)
        kwargs.pop("optional", None)
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.shape = _shape_tuple("shape", shape)
        self.batch_size = batch_size

    def get_config(self):
        return {"batch_shape": [self.batch_size] + list(self.shape), "dtype": self.dtype,
                "sparse": False, "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
    """Declares the model input; `Sequential([Input((784,)), Dense(10)])`.

    Args:
        shape: per-sample shape, e.g. `(784,)` or `(28, 28)`.
    """
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, name=name, batch_shape=batch_shape)


class Dense(Layer):
    """Densely connected layer: `output = activation(input @ kernel + bias)`.

    Args:
        units: positive integer, the output width.
        activation: a name from `fastdense.activations` (default None: linear).
        use_bias: whether to add a bias vector.
        kernel_initializer, bias_initializer: initializer names or objects
            (default `"glorot_uniform"`, `"zeros"`).
        kernel_regularizer, bias_regularizer: `"l1"`, `"l2"`, `"l1_l2"` or a regularizer object.
        input_shape / input_dim: for the first layer of a `Sequential` model.

    Input shape:
        `(batch_size, input_dim)`.

    Output shape:
        `(batch_size, units)`.

    Example:
    >>> model = Sequential([Dense(100, activation="sigmoid", input_shape=(784,)), Dense(10, activation="softmax")])
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 lora_rank=None, **kwargs):
        if isinstance(units, (bool, np.bool_)) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Received an invalid value for `units`, expected a positive integer. "
                             f"Received: units={units!r}")
        for arg, value in (("activity_regularizer", activity_regularizer),
                           ("kernel_constraint", kernel_constraint),
                           ("bias_constraint", bias_constraint), ("lora_rank", lora_rank)):
            if value is not None:
                raise ValueError(f"fastdense's Dense does not support `{arg}`. Received: {arg}={value!r}")
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel = None
        self.bias = None

    def compute_output_feature_shape(self, feature_shape):
        if len(feature_shape) != 1:
            raise ValueError(
                f"Dense layer {self.name!r} expects flat inputs of shape (batch, features); add a "
                f"Flatten layer before it. Received: input shape (None, {', '.join(map(str, feature_shape))})"
            )
        return (self.units,)

    def build(self, input_shape):
        feature_shape = tuple(int(d) for d in tuple(input_shape)[1:])
        super().build(input_shape)
        n_in = feature_shape[0]
        if self.kernel is None or self.kernel.shape != (n_in, self.units):
            try:
                kernel = np.ascontiguousarray(self.kernel_initializer((n_in, self.units), self.dtype),
                                              dtype=self.dtype)
                bias = np.ascontiguousarray(self.bias_initializer((self.units,), self.dtype),
                                            dtype=self.dtype) if self.use_bias else None
            except MemoryError:  # a clear error for a size this machine cannot hold
                gib = n_in * self.units * np.dtype(self.dtype).itemsize / 2**30
                raise ValueError(f"Dense layer {self.name!r} cannot allocate its kernel of shape "
                                 f"({n_in}, {self.units}) ({gib:.1f} GiB of {self.dtype}): not "
                                 f"enough memory. Received: units={self.units}") from None
            self.kernel, self.bias = kernel, bias

    @property
    def weights(self):
        if self.kernel is None:
            return []
        return [self.kernel] + ([self.bias] if self.use_bias else [])

    def _weight_names(self):
        return ["kernel", "bias"] if self.use_bias else ["kernel"]

    def _bind(self, views):
        views[0][...] = self.kernel
        self.kernel = views[0]
        if self.use_bias:
            views[1][...] = self.bias
            self.bias = views[1]

    def _forward(self, x):
        z = np.empty((len(x), self.units), dtype=self.dtype)
        b = self.bias if self.use_bias else np.empty(0, dtype=self.dtype)
        _kernels.dense_forward(x, self.kernel, b, self.activation.code, z)
        return z

    def get_config(self):
        cfg = super().get_config()
        cfg.update({
            "units": self.units, "activation": self.activation.name, "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": None, "bias_constraint": None,
        })
        return cfg

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("quantization_config", None)
        return cls(**config)


class Activation(Layer):
    """Applies an activation function: `Activation("relu")`."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def _forward(self, x):
        z = x.copy()
        _kernels.activation_forward(self.activation.code, z)
        return z

    def compute_output_feature_shape(self, feature_shape):
        if len(feature_shape) != 1:
            raise ValueError(f"Activation layer {self.name!r} works on flat inputs here; add a "
                             f"Flatten layer before it. Received: input shape (None, {feature_shape})")
        return feature_shape

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = self.activation.name
        return cfg


class Dropout(Layer):
    """Inverted dropout during training: zeroes a fraction `rate` of the inputs and scales the rest
    by `1 / (1 - rate)`; the identity at inference. Draws from fastdense's seeded generator."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _validation.finite_float("rate", rate, minimum=0.0, below=1.0)
        if noise_shape is not None:
            raise ValueError(f"fastdense's Dropout does not support `noise_shape`. Received: noise_shape={noise_shape!r}")
        self.seed = seed

    def compute_output_feature_shape(self, feature_shape):
        if len(feature_shape) != 1:
            raise ValueError(f"Dropout layer {self.name!r} works on flat inputs here; add a "
                             f"Flatten layer before it. Received: input shape (None, {feature_shape})")
        return feature_shape

    def get_config(self):
        cfg = super().get_config()
        cfg.update({"rate": self.rate, "seed": self.seed, "noise_shape": None})
        return cfg


class Flatten(Layer):
    """Flattens each sample: `(batch, 28, 28)` -> `(batch, 784)`. `Flatten(input_shape=(28, 28))`."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format

    def compute_output_feature_shape(self, feature_shape):
        return (int(math.prod(feature_shape)),)

    def get_config(self):
        cfg = super().get_config()
        cfg["data_format"] = self.data_format or "channels_last"
        return cfg


LAYER_CLASSES = {c.__name__: c for c in (InputLayer, Dense, Activation, Dropout, Flatten)}

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Activation", "Dropout", "Flatten"]
