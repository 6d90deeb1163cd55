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

    def _flat_weights(self):
        """(array, trainable) of the weights the model keeps in its flat parameter vector, in
        the order `_bind` takes their views."""
        return [(w, self.trainable) for w in self.weights]

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
        return _flat_only(self, feature_shape)

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
        return _flat_only(self, feature_shape)

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


# ---------------------------------------------------------------------------------------------
# Normalization and noise layers. Their weights (named, some non-trainable) live in the model's
# flat parameter vector like Dense's; the model lays trainable weights out first, and the
# optimizer steps over that part only (see Sequential.build).
# ---------------------------------------------------------------------------------------------
def _flat_only(layer, feature_shape):
    if len(feature_shape) != 1:
        raise ValueError(f"{type(layer).__name__} layer {layer.name!r} works on flat inputs "
                         f"(batch, features) here; add a Flatten layer before it. Received: "
                         f"input shape (None, {', '.join(map(str, feature_shape))})")
    return feature_shape


def _last_axis(owner, axis):
    """Keras's `axis` for a layer of flat inputs: -1 (or 1, or [-1]) is the one supported."""
    value = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if len(value) != 1 or isinstance(value[0], bool) or value[0] not in (-1, 1):
        raise ValueError(f"fastdense's {owner} normalizes the last axis of flat inputs: "
                         f"`axis` must be -1. Received: axis={axis!r}")
    return -1


def _unsupported(owner, **given):
    for arg, value in given.items():
        if value not in (None, False):
            raise ValueError(f"fastdense's {owner} does not support `{arg}`. "
                             f"Received: {arg}={value!r}")


def _bool_arg(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def _seed_arg(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"`seed` must be None or a non-negative integer. Received: seed={seed!r}")
    return None if seed is None else int(seed)


class _WeightedLayer(Layer):
    """A layer whose weights have Keras names and trainable flags of their own.

    `_SPECS`: (attribute, Keras weight name, trainable when the layer is) in Keras's order;
    attributes left None (e.g. no `gamma` with scale=False) are not weights."""

    _SPECS = ()

    def _specs(self):
        return [(a, n, t) for a, n, t in self._SPECS if getattr(self, a, None) is not None]

    @property
    def weights(self):
        return [getattr(self, a) for a, _, _ in self._specs()]

    def _weight_names(self):
        return [n for _, n, _ in self._specs()]

    @property
    def trainable_weights(self):
        return [getattr(self, a) for a, _, t in self._specs() if t and self.trainable]

    @property
    def non_trainable_weights(self):
        return [getattr(self, a) for a, _, t in self._specs() if not (t and self.trainable)]

    def _flat_weights(self):
        """(array, trainable) of what the model keeps in its parameter vector, in `_bind` order."""
        return [(getattr(self, a), t and self.trainable) for a, _, t in self._specs()]

    def _bind(self, views):
        for (attr, _, _), view in zip(self._specs(), views):
            view[...] = getattr(self, attr)
            setattr(self, attr, view)

    def _reset_weights(self):
        for attr, _, _ in self._SPECS:
            setattr(self, attr, None)

    def _new_weight(self, initializer, shape):
        return np.ascontiguousarray(initializer(shape, self.dtype), dtype=self.dtype)

    def compute_output_feature_shape(self, feature_shape):
        return _flat_only(self, feature_shape)


def _plan_float_bits(value):
    """A float64 argument stored in an int64 plan column by its bits (PLAN_F0/PLAN_F1)."""
    return int(np.array(value, dtype=np.float64).view(np.int64))


class BatchNormalization(_WeightedLayer):
    """Normalizes each feature over the batch: `gamma * (x - mean) / sqrt(var + epsilon) + beta`.

    In training, `mean` and `var` are the batch's (the biased variance), and the moving
    statistics follow them: `moving = moving * momentum + batch * (1 - momentum)`. At inference
    (and in training when the layer is frozen with `trainable=False`) the moving statistics are
    used instead.

    Args:
        axis: -1 (the features of flat inputs).
        momentum: of the moving statistics, in [0, 1] (default 0.99).
        epsilon: added to the variance, > 0 (default 1e-3).
        center, scale: whether to learn `beta` and `gamma` (default True).
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer: default "zeros", "ones", "zeros", "ones".

    Input shape: `(batch_size, features)`. Output shape: the same.

    Weights (Keras's order): gamma, beta (trainable), moving_mean, moving_variance (not).

    Example:
    >>> Sequential([Input((12,)), Dense(12), BatchNormalization(), Activation("relu"), Dense(3)])
    """

    _SPECS = (("gamma", "gamma", True), ("beta", "beta", True),
              ("moving_mean", "moving_mean", False), ("moving_variance", "moving_variance", False))

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, renorm=False, renorm_clipping=None, renorm_momentum=0.99,
                 synchronized=False, **kwargs):
        _unsupported("BatchNormalization", beta_regularizer=beta_regularizer,
                     gamma_regularizer=gamma_regularizer, beta_constraint=beta_constraint,
                     gamma_constraint=gamma_constraint, renorm=renorm,
                     renorm_clipping=renorm_clipping, synchronized=synchronized)
        super().__init__(**kwargs)
        self.axis = _last_axis("BatchNormalization", axis)
        self.momentum = _validation.finite_float("momentum", momentum, minimum=0.0)
        if self.momentum > 1:
            raise ValueError(f"`momentum` must be a number in [0, 1]. Received: momentum={momentum!r}")
        self.epsilon = _validation.finite_float("epsilon", epsilon, positive=True)
        self.center = _bool_arg("center", center)
        self.scale = _bool_arg("scale", scale)
        self.renorm_momentum = renorm_momentum
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self._reset_weights()

    def build(self, input_shape):
        super().build(input_shape)
        shape = (self.input_feature_shape[0],)
        if self.moving_mean is not None and self.moving_mean.shape == shape:
            return  # already built for this width: keep the values
        self.gamma = self._new_weight(self.gamma_initializer, shape) if self.scale else None
        self.beta = self._new_weight(self.beta_initializer, shape) if self.center else None
        self.moving_mean = self._new_weight(self.moving_mean_initializer, shape)
        self.moving_variance = self._new_weight(self.moving_variance_initializer, shape)

    def _config_weights(self, feature_shape):
        """[(shape, dtype kind, trainable)] of the weights a config implies, before building
        (loading checks a file against them)."""
        w = (_flat_only(self, feature_shape)[0],)
        return [(w, "f", self.trainable)] * (int(self.scale) + int(self.center)) + [(w, "f", False)] * 2

    def _plan_op(self, offsets, training):
        off = dict(zip([a for a, _, _ in self._specs()], offsets))
        return {"kind": "OP_BATCHNORM", "W": off.get("gamma", -1), "B": off.get("beta", -1),
                "P2": off["moving_mean"], "P3": off["moving_variance"],
                "F0": _plan_float_bits(self.epsilon),
                "reg": [self.momentum, 0.0 if self.trainable else 1.0,
                        1.0 if self.trainable else 0.0, 0.0],
                "xhat": training, "aux": lambda B, m: 3 * m}

    def _forward(self, x):
        inv = 1.0 / np.sqrt(self.moving_variance.astype(np.float64) + self.epsilon)
        g = self.gamma if self.scale else 1.0
        b = self.beta if self.center else 0.0
        return ((x - self.moving_mean) * (inv.astype(self.dtype) * g) + b).astype(self.dtype)

    def get_config(self):
        cfg = super().get_config()
        cfg.update({
            "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
            "center": self.center, "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
            "gamma_constraint": None, "synchronized": False, "renorm": False,
            "renorm_clipping": None, "renorm_momentum": self.renorm_momentum})
        return cfg


class LayerNormalization(_WeightedLayer):
    """Normalizes each sample over its features: `gamma * (x - mean) / sqrt(var + epsilon) + beta`
    with the sample's own mean and (biased) variance, in training and at inference alike.

    Args:
        axis: -1 (the features of flat inputs).
        epsilon: added to the variance, > 0 (default 1e-3).
        center, scale: whether to learn `beta` and `gamma` (default True).
        beta_initializer, gamma_initializer: default "zeros", "ones".

    Input shape: `(batch_size, features)`. Output shape: the same. Weights: gamma, beta.
    """

    _SPECS = (("gamma", "gamma", True), ("beta", "beta", True))

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, rms_scaling=False, **kwargs):
        _unsupported("LayerNormalization", beta_regularizer=beta_regularizer,
                     gamma_regularizer=gamma_regularizer, beta_constraint=beta_constraint,
                     gamma_constraint=gamma_constraint, rms_scaling=rms_scaling)
        super().__init__(**kwargs)
        self.axis = _last_axis("LayerNormalization", axis)
        self.epsilon = _validation.finite_float("epsilon", epsilon, positive=True)
        self.center = _bool_arg("center", center)
        self.scale = _bool_arg("scale", scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self._reset_weights()

    def build(self, input_shape):
        super().build(input_shape)
        shape = (self.input_feature_shape[0],)
        current = self.gamma if self.gamma is not None else self.beta
        if current is not None and current.shape == shape:
            return
        self.gamma = self._new_weight(self.gamma_initializer, shape) if self.scale else None
        self.beta = self._new_weight(self.beta_initializer, shape) if self.center else None

    def _config_weights(self, feature_shape):
        w = (_flat_only(self, feature_shape)[0],)
        return [(w, "f", self.trainable)] * (int(self.scale) + int(self.center))

    def _plan_op(self, offsets, training):
        off = dict(zip([a for a, _, _ in self._specs()], offsets))
        return {"kind": "OP_LAYERNORM", "W": off.get("gamma", -1), "B": off.get("beta", -1),
                "F0": _plan_float_bits(self.epsilon),
                "reg": [0.0, 0.0, 1.0 if self.trainable else 0.0, 0.0],
                "xhat": training, "aux": lambda B, m: B + 2 * m}

    def _forward(self, x):
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=1, keepdims=True)
        var = ((x64 - mean) ** 2).mean(axis=1, keepdims=True)
        out = (x64 - mean) / np.sqrt(var + self.epsilon)
        if self.scale:
            out = out * self.gamma
        if self.center:
            out = out + self.beta
        return out.astype(self.dtype)

    def get_config(self):
        cfg = super().get_config()
        cfg.update({
            "axis": [self.axis], "epsilon": self.epsilon, "center": self.center,
            "scale": self.scale, "rms_scaling": False,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
            "gamma_constraint": None})
        return cfg


class Normalization(_WeightedLayer):
    """Feature-wise standardization: `(x - mean) / max(sqrt(variance), 1e-7)`.

    `mean` and `variance` are given, or learnt by `adapt(data)` (Keras's statistics: the mean and
    the biased variance of every feature over all samples). Never trained by `fit`.

    Args:
        axis: -1 (one mean and variance per feature of flat inputs).
        mean, variance: numbers or per-feature arrays, both or neither. When given, the layer
            has no weights; when not, its weights are mean, variance and count (non-trainable;
            as in Keras 3, `adapt` of an array leaves count at 0).
        invert: False (the inverse transform is not supported).

    Example:
    >>> norm = Normalization(); norm.adapt(x_train)
    >>> model = Sequential([Input((12,)), norm, Dense(1)])
    """

    _SPECS = (("mean", "mean", False), ("variance", "variance", False), ("count", "count", False))

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = _last_axis("Normalization", axis)
        if invert not in (False, 0) or isinstance(invert, (np.ndarray,)):
            raise ValueError(f"fastdense's Normalization does not support `invert=True`. "
                             f"Received: invert={invert!r}")
        self.invert = False
        if (mean is None) != (variance is None):
            raise ValueError("When setting values directly, both `mean` and `variance` must be "
                             f"set. Received: mean={mean!r} and variance={variance!r}")
        self.input_mean = self.input_variance = None
        if mean is not None:
            m = _validation.numeric_array("mean", mean).astype(np.float64)
            v = _validation.numeric_array("variance", variance).astype(np.float64)
            if m.shape != v.shape or m.ndim > 1:
                raise ValueError("`mean` and `variance` must be numbers or 1-D arrays of one "
                                 f"shape. Received: mean shape {m.shape} and variance shape {v.shape}")
            if not (np.isfinite(m).all() and np.isfinite(v).all()) or (v < 0).any():
                raise ValueError("`mean` must be finite and `variance` finite and >= 0. "
                                 f"Received: mean={mean!r}, variance={variance!r}")
            self.input_mean, self.input_variance = m, v
        self._reset_weights()
        self._given = None  # the given mean/variance broadcast to the features (not weights)

    def build(self, input_shape):
        super().build(input_shape)
        width = self.input_feature_shape[0]
        if self.input_mean is not None:
            if self.input_mean.ndim == 1 and self.input_mean.shape[0] != width:
                raise ValueError(f"Normalization layer {self.name!r} has {self.input_mean.shape[0]} "
                                 f"means for inputs of {width} features. Received: input shape "
                                 f"(None, {width})")
            if self._given is None or self._given[0].shape != (width,):
                self._given = [np.ascontiguousarray(np.broadcast_to(a, (width,)), dtype=self.dtype)
                               for a in (self.input_mean, self.input_variance)]
            return
        if self.mean is not None and self.mean.shape == (width,):
            return
        self.mean = np.zeros(width, dtype=self.dtype)
        self.variance = np.ones(width, dtype=self.dtype)
        self.count = np.zeros((), dtype=np.int64)

    def _flat_weights(self):
        arrays = self._given if self.input_mean is not None else [self.mean, self.variance]
        return [(a, False) for a in arrays]

    def _bind(self, views):
        if self.input_mean is not None:
            for a, v in zip(self._given, views):
                v[...] = a
            self._given = list(views)
            return
        views[0][...] = self.mean
        views[1][...] = self.variance
        self.mean, self.variance = views

    def _config_weights(self, feature_shape):
        w = (_flat_only(self, feature_shape)[0],)
        return [] if self.input_mean is not None else [(w, "f", False), (w, "f", False),
                                                       ((), "iu", False)]

    def adapt(self, data):
        """Sets `mean` and `variance` to the per-feature statistics of `data` (an array of
        shape (samples, features)); as Keras's, the variance is the biased one. The weights
        change in place (also inside a compiled model)."""
        if self.input_mean is not None:
            raise ValueError("This Normalization layer was given `mean` and `variance`; it has "
                             "nothing to adapt. Received: a call to adapt()")
        arr = _validation.numeric_array("data", data)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError("`data` must be a non-empty array of shape (samples, features). "
                             f"Received: data.shape={arr.shape}")
        x = arr.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError("`data` contains NaN or Inf. Received: data with non-finite values")
        if not self.built:
            self.build((None, arr.shape[1]))
        elif arr.shape[1] != self.input_feature_shape[0]:
            raise ValueError(f"The layer was built for inputs of {self.input_feature_shape[0]} "
                             f"features. Received: data.shape={arr.shape}")
        self.mean[...] = x.mean(axis=0)
        self.variance[...] = x.var(axis=0)

    def _plan_op(self, offsets, training):
        return {"kind": "OP_NORMALIZE", "P2": offsets[0], "P3": offsets[1]}

    def _forward(self, x):
        mean, var = self._given if self.input_mean is not None else (self.mean, self.variance)
        return ((x - mean) / np.maximum(np.sqrt(var), np.asarray(1e-7, self.dtype))).astype(self.dtype)

    def get_config(self):
        cfg = super().get_config()
        cfg.update({"axis": [self.axis], "invert": False,
                    "mean": None if self.input_mean is None else self.input_mean.tolist(),
                    "variance": None if self.input_variance is None else self.input_variance.tolist()})
        return cfg


class Rescaling(Layer):
    """`x * scale + offset` (e.g. `Rescaling(1 / 255)` for uint8 pixels); no weights.

    Args:
        scale, offset: finite numbers (offset default 0.0).
    """

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = _validation.finite_float("scale", scale)
        self.offset = _validation.finite_float("offset", offset)

    def compute_output_feature_shape(self, feature_shape):
        return _flat_only(self, feature_shape)

    def _plan_op(self, offsets, training):
        return {"kind": "OP_RESCALE", "F0": _plan_float_bits(self.scale),
                "F1": _plan_float_bits(self.offset)}

    def _forward(self, x):
        return x * np.asarray(self.scale, self.dtype) + np.asarray(self.offset, self.dtype)

    def get_config(self):
        cfg = super().get_config()
        cfg.update({"scale": self.scale, "offset": self.offset})
        return cfg


class GaussianNoise(Layer):
    """Adds zero-mean Gaussian noise of standard deviation `stddev` in training; the identity
    at inference. Draws from fastdense's seeded generator (`fastdense.utils.set_random_seed`).

    Args:
        stddev: >= 0.
        seed: accepted for Keras compatibility (fastdense's generator decides the draws).
    """

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.stddev = _validation.finite_float("stddev", stddev, minimum=0.0)
        self.seed = _seed_arg(seed)

    def compute_output_feature_shape(self, feature_shape):
        return _flat_only(self, feature_shape)

    def _plan_op(self, offsets, training):
        return {"kind": "OP_GAUSS_NOISE", "reg": [self.stddev, 0.0, 0.0, 0.0]}

    def get_config(self):
        cfg = super().get_config()
        cfg.update({"stddev": self.stddev, "seed": self.seed})
        return cfg


class GaussianDropout(Layer):
    """Multiplies the inputs by Gaussian noise of mean 1 and standard deviation
    `sqrt(rate / (1 - rate))` in training; the identity at inference.

    Args:
        rate: in [0, 1).
        seed: accepted for Keras compatibility (fastdense's generator decides the draws).
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _validation.finite_float("rate", rate, minimum=0.0, below=1.0)
        self.seed = _seed_arg(seed)

    def compute_output_feature_shape(self, feature_shape):
        return _flat_only(self, feature_shape)

    def _plan_op(self, offsets, training):
        return {"kind": "OP_GAUSS_DROPOUT", "reg": [math.sqrt(self.rate / (1.0 - self.rate)), 0.0, 0.0, 0.0],
                "xhat": training}

    def get_config(self):
        cfg = super().get_config()
        cfg.update({"rate": self.rate, "seed": self.seed})
        return cfg


LAYER_CLASSES = {c.__name__: c for c in (InputLayer, Dense, Activation, Dropout, Flatten,
                                         BatchNormalization, LayerNormalization, Normalization,
                                         Rescaling, GaussianNoise, GaussianDropout)}

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Activation", "Dropout", "Flatten",
           "BatchNormalization", "LayerNormalization", "Normalization", "Rescaling",
           "GaussianNoise", "GaussianDropout"]
