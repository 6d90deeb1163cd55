"""The one home of input checks and their messages.

Every check runs in Python before any compiled code, so the kernels may assume C-contiguous,
native-endian, finite float32/float64 buffers and in-range labels. Messages name the argument,
say what was expected and end with `Received: ...`, as Keras's do. Nothing passed in is modified:
conversions make new arrays, and arrays that already fit are used as they are (read-only is fine).
"""
import math
import numbers

import numpy as np

from . import _kernels, config

_INT_MAX = 2**31 - 1  # BLAS takes C int sizes


def positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def nonneg_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    return int(value)


def finite_float(name, value, positive=False, minimum=None, below=None):
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    v = float(value) if ok else float("nan")
    if not ok or not math.isfinite(v) or (positive and v <= 0) or \
            (minimum is not None and v < minimum) or (below is not None and v >= below):
        what = "a positive finite number" if positive else "a finite number"
        if minimum is not None and below is not None:
            what = f"a number in [{minimum}, {below})"
        elif minimum is not None:
            what = f"a finite number >= {minimum}"
        raise ValueError(f"`{name}` must be {what}. Received: {name}={value!r}")
    return v


def verbose_level(value, default=1):
    if value == "auto":
        return default
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if not isinstance(value, numbers.Integral) or value not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 'auto', 0, 1 or 2. Received: verbose={value!r}")
    return int(value)


def numeric_array(name, value):
    """`value` as an ndarray of a real numeric dtype (bool/int/uint/float), not yet cast."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        if value is None:
            raise TypeError(f"`{name}` must be array-like with numeric data. Received: {name}=None")
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"`{name}` could not be converted to a numeric array ({exc}). "
                f"Received: {name} of type {type(value).__name__}"
            ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must hold real numbers (bool, int or float). "
            f"Received: {name}.dtype={arr.dtype}"
        )
    return arr


def _finite(out):
    if out.ndim == 2 and out.dtype in (np.float32, np.float64) and out.dtype.isnative:
        return _kernels.all_finite(out, config.num_threads())
    return bool(np.isfinite(out).all())


def blas_sizes(name, arr):
    if any(d > _INT_MAX for d in arr.shape[:2]):
        raise ValueError(f"`{name}` has a dimension >= 2**31, beyond what BLAS accepts. "
                         f"Received: {name}.shape={arr.shape}")


def as_float_matrix(name, arr, dtype):
    """2-D C-contiguous native `dtype` array, finite; a copy only when needed."""
    # Sizes first: refusing a (2**31, 1) broadcast view must not allocate 8 GB on the way.
    blas_sizes(name, arr)
    target = np.dtype(dtype).newbyteorder("=")
    # A float64 1e300 cast to float32 is Inf: reported below as an error, not as a
    # RuntimeWarning from inside NumPy's cast.
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=target)
    if out.dtype.kind == "f" and arr.dtype.kind == "f" and not _finite(out):
        if np.isnan(out).any():
            bad = "NaN"
        elif not np.isfinite(arr).all():
            bad = "Inf"
        else:
            big = np.abs(arr[~np.isfinite(out)]).max()
            raise ValueError(f"Input {name} holds values too large for {target.name} (up to "
                             f"{float(big):.4g}), which would become Inf. Scale {name} or use a "
                             f"float64 model. Received: {name}.dtype={arr.dtype}")
        raise ValueError(f"Input {name} contains {bad}: only finite values can be used. "
                         f"Received: {name} with {bad} values")
    return out


def model_input(name, x, feature_shape, dtype):
    """Validates x against the model's per-sample input shape; returns (n, n_features) floats.

    A 1-D x is n samples of one feature (Keras 2 behaviour that tutorials rely on).
    """
    arr = numeric_array(name, x)
    n_features = int(np.prod(feature_shape))
    if arr.ndim == 1 and tuple(feature_shape) == (1,):
        arr = arr.reshape(-1, 1)
    if arr.ndim == 0:
        raise ValueError(f"`{name}` must have a batch dimension. Received: {name}.shape={arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: at least one sample is needed. "
                         f"Received: {name}.shape={arr.shape}")
    if tuple(arr.shape[1:]) != tuple(feature_shape):
        expect = "(None, " + ", ".join(map(str, feature_shape)) + ")"
        raise ValueError(
            f"Input {name} is incompatible with the model: it expects {n_features} input "
            f"features per sample, shape {expect}. Received: {name}.shape={arr.shape}"
        )
    return as_float_matrix(name, arr.reshape(arr.shape[0], n_features), dtype)


def infer_feature_shape(name, x):
    arr = numeric_array(name, x)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty batch of samples. Received: {name}.shape={arr.shape}")
    shape = tuple(arr.shape[1:]) or (1,)
    if 0 in shape:
        raise ValueError(f"`{name}` has a zero-sized feature dimension. Received: {name}.shape={arr.shape}")
    return shape


def same_length(n, name, other, other_name="x"):
    if np.ndim(other) == 0:
        raise ValueError(f"`{name}` must hold one entry per sample ({n} samples in "
                         f"`{other_name}`). Received: {name}.shape=()")
    if len(other) != n:
        raise ValueError(
            f"Data cardinality is ambiguous: `{other_name}` and `{name}` must have the same number "
            f"of samples. Received: {other_name} sizes: {n}, {name} sizes: {len(other)}"
        )
