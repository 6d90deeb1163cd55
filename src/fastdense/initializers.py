"""Weight initializers with Keras's names and formulas, drawing from fastdense's seeded generator.

`init(shape, dtype=None)` checks its arguments as Keras does: `shape` a tuple (or list) of
non-negative ints, `dtype` a float dtype (None: `fastdense.config.floatx()`; the constant
initializers also take int and bool dtypes), `seed` None or a non-negative int.
"""
import math

import numpy as np

from . import _random, _validation


def _fans(shape):
    """Keras's fans: scalars count 1; beyond 2-D the leading axes are a receptive field."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _seed(seed):
    return None if seed is None else _validation.nonneg_int("seed", seed)


class Initializer:
    """Base class: `init(shape, dtype=None)` returns a new array; subclasses fill `_generate`."""
    dtype_kinds = "f"  # random draws need a float dtype

    def __call__(self, shape, dtype=None):
        shape = _validation.shape_tuple(shape)
        return self._generate(shape, _validation.dtype_arg(dtype, self.dtype_kinds))

    def _generate(self, shape, dtype):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Keras 3.15 writes these layout hints (null for dense kernels); they do not change the draw.
        for key in ("input_axes", "output_axes"):
            if config.get(key) is None:
                config.pop(key, None)
        return cls(**config)


class Zeros(Initializer):
    dtype_kinds = "biuf"

    def _generate(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)


class Ones(Initializer):
    dtype_kinds = "biuf"

    def _generate(self, shape, dtype):
        return np.ones(shape, dtype=dtype)


class Constant(Initializer):
    dtype_kinds = "biuf"

    def __init__(self, value=0.0):
        self.value = _validation.finite_float("value", value)

    def _generate(self, shape, dtype):
        return np.full(shape, self.value, dtype=dtype)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _validation.finite_float("mean", mean)
        self.stddev = _validation.finite_float("stddev", stddev)
        self.seed = _seed(seed)

    def _generate(self, shape, dtype):
        rng = _rng(self.seed)
        return (rng.standard_normal(shape) * self.stddev + self.mean).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval = _validation.finite_float("minval", minval)
        self.maxval = _validation.finite_float("maxval", maxval)
        self.seed = _seed(seed)

    def _generate(self, shape, dtype):
        return _rng(self.seed).uniform(self.minval, self.maxval, shape).astype(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class VarianceScaling(Initializer):
    """Keras's VarianceScaling: variance `scale / n`, n = fan_in, fan_out or their mean."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(
                "Invalid `mode` argument: expected 'fan_in', 'fan_out' or 'fan_avg'. "
                f"Received: mode={mode!r}"
            )
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                "Invalid `distribution` argument: expected 'truncated_normal', "
                f"'untruncated_normal' or 'uniform'. Received: distribution={distribution!r}"
            )
        self.scale = _validation.finite_float("scale", scale, positive=True)
        self.mode, self.distribution, self.seed = mode, distribution, _seed(seed)

    def _generate(self, shape, dtype):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        rng = _rng(self.seed)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape).astype(dtype)
        if self.distribution == "untruncated_normal":
            return (rng.standard_normal(shape) * math.sqrt(variance)).astype(dtype)
        # Normal truncated at two standard deviations, rescaled to keep the variance (Keras's
        # constant is the std of a unit normal truncated to [-2, 2]).
        stddev = math.sqrt(variance) / 0.87962566103423978
        out = rng.standard_normal(shape)
        bad = np.abs(out) > 2
        while bad.any():
            out[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(out) > 2
        return (out * stddev).astype(dtype)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed}


def _variant(name, scale, mode, distribution):
    class _Init(VarianceScaling):
        def __init__(self, seed=None):
            super().__init__(scale, mode, distribution, seed)

        def get_config(self):
            return {"seed": self.seed}

    _Init.__name__ = _Init.__qualname__ = name
    return _Init


GlorotUniform = _variant("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variant("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _variant("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _variant("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _variant("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _variant("LecunNormal", 1.0, "fan_in", "truncated_normal")


def _rng(seed):
    return _random.generator() if seed is None else np.random.default_rng(seed)


_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "random_normal": RandomNormal, "random_uniform": RandomUniform,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal,
    "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
    "variance_scaling": VarianceScaling,
}
_BY_CLASS = {cls.__name__: cls for cls in _BY_NAME.values()}


def get(identifier):
    """An initializer from a Keras name, class name, `{"class_name", "config"}` dict or instance."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, dict):
        cls = _BY_CLASS.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(
                f"Unknown initializer class: expected one of {sorted(_BY_CLASS)}. "
                f"Received: class_name={identifier.get('class_name')!r}"
            )
        return cls.from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _BY_CLASS.get(identifier)
        if cls is not None:
            return cls()
    raise ValueError(
        f"Unknown initializer: expected one of {sorted(_BY_NAME)}. Received: {identifier!r}"
    )


def serialize(initializer):
    return {"module": "keras.initializers", "class_name": type(initializer).__name__,
            "config": initializer.get_config(), "registered_name": None}
