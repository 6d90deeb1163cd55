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


def _default_threads():
    import os

    env = os.environ.get("FASTDENSE_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return min(2, os.cpu_count() or 1)


_THREADS = {"max": None}


def num_threads():
    """The most threads `fit` (and inference over several batches) may use: 1 or 2."""
    if _THREADS["max"] is None:
        _THREADS["max"] = min(2, _default_threads())
    return _THREADS["max"]


def set_num_threads(n):
    """Sets the most threads `fit` may use for its larger matrix products: 1, or 2 (the default
    on machines with two or more cores; `FASTDENSE_NUM_THREADS` sets it at import).

    With 2, `fit` times one and two threads on short probe chunks and keeps the faster (on a
    machine where another process holds a core, one thread is faster). Each dense layer's work
    is cut along its inputs, and one thread computes the same two halves in the same order, so
    results are bit-identical either way. `predict` and `evaluate` over more than one batch let
    the two threads share the batches (same results); a single batch uses one thread.

    Args:
        n: a positive integer; values above 2 mean 2.
    """
    from . import _validation

    _THREADS["max"] = min(2, _validation.positive_int("n", n))
