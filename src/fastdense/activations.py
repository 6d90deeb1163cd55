"""Activation functions by Keras name.

Each name maps to a code the compiled kernels understand; the functions here (`relu`, `softmax`,
...) are also callable on arrays, as `keras.activations.*` are, and `Dense(activation=relu)` works
with them. Arbitrary Python callables cannot run inside the compiled kernels and are refused.
"""
import numpy as np

from . import _kernels, _kinds, _validation

_kinds.check_compiled(_kernels.CODES)  # kernels built from this version of the table

# Keras 3 name (aliases such as "silu" included) -> kernel code; declared in _kinds.ACTIVATIONS.
_CODES = dict(_kinds.ACTIVATION_CODES)
NEEDS_PRE_ACTIVATION = frozenset(_kinds.NEEDS_PRE)


class Activation:
    """A named activation: `fastdense.activations.relu(x)` applies it to an array."""

    def __init__(self, name):
        self.name = name
        self.code = _CODES[name]
        self.__name__ = name

    def __call__(self, x):
        """A new array act(x) (softmax over the last axis); float64 for float64 x, else float32.

        Any shape, lists and scalars included; NaN/Inf propagate as in Keras.
        """
        x = _validation.numeric_array("x", x)
        z = np.array(x, dtype=_validation.float_dtype(x).newbyteorder("="), order="C", copy=True)
        if z.size:
            flat = z.reshape(-1, z.shape[-1] if z.ndim else 1)
            _kernels.activation_forward(self.code, flat)
        return z

    def __repr__(self):
        return f"<activation {self.name}>"


for _name in _CODES:
    globals()[_name] = Activation(_name)


def serialize(activation):
    """The Keras config name of an activation: `"relu"`, ..., `"linear"` for None."""
    return get(activation).name


def get(identifier):
    """Returns the `Activation` for a Keras name, an `Activation`, or None (linear).

    Raises:
        ValueError: for an unknown name or an arbitrary callable.
    """
    if identifier is None:
        return globals()["linear"]
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str):
        key = identifier
        if key not in _CODES:
            import difflib

            close = difflib.get_close_matches(key.lower(), list(_CODES), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"Unknown activation: expected one of {sorted(_CODES)}.{hint} "
                f"Received: activation={identifier!r}"
            )
        return globals()[key]
    name = getattr(identifier, "__name__", None)
    if callable(identifier) and name in _CODES:
        # e.g. keras.activations.relu or tf.nn.relu passed by a ported script
        return globals()[name]
    raise ValueError(
        "Could not interpret activation: fastdense runs activations in compiled kernels, so it "
        f"accepts one of {sorted(_CODES)} by name (or None). Received: activation={identifier!r}"
    )


__all__ = ["get", "serialize", "Activation"] + sorted(_CODES)
