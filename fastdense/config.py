"""Global defaults, as in `keras.config`: the float type of new layers."""
_FLOATX = "float32"
_VALID = ("float32", "float64")


def floatx():
    """Returns the default float type of new layers: `"float32"` (default) or `"float64"`."""
    return _FLOATX


def set_floatx(value):
    """Sets the default float type of layers created afterwards.

    Args:
        value: `"float32"` or `"float64"`.

    Example:
    >>> fastdense.config.set_floatx("float64")
    """
    global _FLOATX
    if value not in _VALID:
        raise ValueError(
            f"Unknown floatx type: expected one of {list(_VALID)}. Received: value={value!r}"
        )
    _FLOATX = str(value)


def epsilon():
    """The fuzz factor of losses, as in Keras: 1e-7."""
    return 1e-7
