"""Weight penalties added to the loss as Keras does: `l1 * sum(|w|) + l2 * sum(w**2)`.

They are applied inside the compiled training step, with their gradients.
"""
import numpy as np

from . import _validation


class Regularizer:
    """Base class; fastdense's penalties are `L1L2` combinations."""
    l1 = 0.0
    l2 = 0.0

    def __call__(self, x):
        """The penalty of a weight array (any shape), as a float64 scalar; NaN propagates."""
        x = _validation.numeric_array("x", x).astype(np.float64)
        return self.l1 * np.abs(x).sum() + self.l2 * np.square(x).sum()

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


def _check(name, value, default=0.0):
    # Keras 3 takes None as the default and refuses strings, negatives and non-finite factors.
    return default if value is None else _validation.finite_float(name, value, minimum=0.0)


class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _check("l1", l1)
        self.l2 = _check("l2", l2)


class L1(Regularizer):
    def __init__(self, l1=0.01):
        self.l1 = _check("l1", l1, 0.01)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    def __init__(self, l2=0.01):
        self.l2 = _check("l2", l2, 0.01)

    def get_config(self):
        return {"l2": self.l2}


_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": L1L2, "L1": L1, "L2": L2, "L1L2": L1L2}


def get(identifier):
    """A regularizer from None, a name (`'l1'`, `'l2'`, `'l1_l2'`), a config dict or an instance."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") in _BY_NAME:
        return _BY_NAME[identifier["class_name"]](**(identifier.get("config") or {}))
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    raise ValueError(
        f"Unknown regularizer: expected one of ['l1', 'l2', 'l1_l2'], a Regularizer or None. "
        f"Received: {identifier!r}"
    )


def serialize(regularizer):
    if regularizer is None:
        return None
    return {"module": "keras.regularizers", "class_name": type(regularizer).__name__,
            "config": regularizer.get_config(), "registered_name": None}
