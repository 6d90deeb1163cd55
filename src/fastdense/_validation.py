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


def as_float_matrix(name, arr, dtype, finite=True):
    """2-D C-contiguous native `dtype` array, finite; a copy only when needed.

    finite=False keeps NaN/Inf: a loss or metric called directly computes with them (giving
    nan), as Keras's does; only training data must be finite.
    """
    # Sizes first: refusing a (2**31, 1) broadcast view must not allocate 8 GB on the way.
    blas_sizes(name, arr)
    target = np.dtype(dtype).newbyteorder("=")
    # A float64 1e300 cast to float32 is Inf: reported below as an error, not as a
    # RuntimeWarning from inside NumPy's cast.
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=target)
    if finite and out.dtype.kind == "f" and arr.dtype.kind == "f" and not _finite(out):
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


def float_dtype(arr):
    """The float type a direct call computes in: float32 or float64 inputs keep theirs, float16
    becomes float32, and bool/int inputs take the policy (`config.floatx()`)."""
    if arr.dtype.kind != "f":
        return np.dtype(config.floatx())
    return np.dtype(np.float64) if arr.dtype.itemsize == 8 else np.dtype(np.float32)


def batch_dimension(name, arr):
    """Refuses a scalar or an empty batch: every computation here is over >= 1 sample."""
    if arr.ndim == 0:
        raise ValueError(f"`{name}` must have a batch dimension. Received: {name}.shape={arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: at least one sample is needed. "
                         f"Received: {name}.shape={arr.shape}")
    return arr


def predictions(name, value, dtype=None):
    """`y_pred` of a direct loss or metric call as an (n, k) float matrix (1-D: n samples of one
    output, as for `fit`'s targets); NaN/Inf kept, as Keras computes with them."""
    arr = batch_dimension(name, numeric_array(name, value))
    if arr.ndim > 2:
        raise ValueError(f"`{name}` must have shape (n,) or (n, k): fastdense's losses and metrics "
                         f"work on the outputs of dense layers. Received: {name}.shape={arr.shape}")
    return as_float_matrix(name, arr.reshape(len(arr), -1), dtype or float_dtype(arr), finite=False)


def class_labels(name, arr, n_classes, owner, outputs):
    """Sparse labels must be integers in [0, n_classes): an out-of-range one read in C would be an
    out-of-bounds read. `owner` says who needs them ("the loss 'x'"), `outputs` what sets
    n_classes ("a model with 3 output units")."""
    flat = arr.reshape(-1)
    if arr.dtype.kind == "f":
        bad = flat[~np.isfinite(flat) | (flat != np.round(flat))]
        if bad.size:
            raise ValueError(
                f"`{name}` must hold integer class labels for {owner}. "
                f"Received: non-integer values such as {bad[:3].tolist()}"
            )
    lo, hi = flat.min(), flat.max()
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"`{name}` holds a class label outside [0, {n_classes}) for {outputs}. "
            f"Received: label {bad.item()!r}"
        )
    return flat


def shape_tuple(shape, name="shape"):
    """An initializer's `shape` as a tuple of non-negative ints (lists accepted, as in Keras)."""
    if shape is None or not hasattr(shape, "__iter__") or isinstance(shape, (str, bytes)):
        raise ValueError(f"Cannot convert {shape!r} to a shape: expected a tuple of non-negative "
                         f"integers. Received: {name}={shape!r}")
    dims = tuple(shape)
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
            raise ValueError(f"Cannot convert {dims!r} to a shape: found the invalid entry {d!r} "
                             f"of type {type(d).__name__}. Received: {name}={shape!r}")
        if d < 0:
            raise ValueError(f"Cannot convert {dims!r} to a shape: negative dimensions are not "
                             f"allowed. Received: {name}={shape!r}")
    return tuple(int(d) for d in dims)


def dtype_arg(dtype, kinds="f", name="dtype"):
    """`dtype` (None: the floatx policy) as a NumPy dtype of one of `kinds` ("f": float only)."""
    if dtype is None:
        return np.dtype(config.floatx())
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind not in kinds:
        what = "a float dtype" if kinds == "f" else "a real numeric dtype (bool, int or float)"
        raise ValueError(f"Invalid dtype: expected {what} such as 'float32'. Received: {name}={dtype!r}")
    return dt


def model_input(name, x, feature_shape, dtype):
    """Validates x against the model's per-sample input shape; returns (n, n_features) floats.

    A 1-D x is n samples of one feature (Keras 2 behaviour that tutorials rely on).
    """
    arr = numeric_array(name, x)
    n_features = int(np.prod(feature_shape))
    if arr.ndim == 1 and tuple(feature_shape) == (1,):
        arr = arr.reshape(-1, 1)
    batch_dimension(name, arr)
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


def sample_weights(name, value, n, xname="x", dtype=np.float64, finite=True):
    """One weight per sample: (n,) or (n, 1), as a 1-D `dtype` array.

    finite=True (fit, evaluate) also requires finite, non-negative weights. A direct loss or
    metric call (finite=False) computes with any value, as Keras does, and also takes a scalar
    for every sample.
    """
    arr = numeric_array(name, value)
    if arr.ndim == 0 and not finite:
        arr = np.broadcast_to(arr, (n,))
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, one weight per sample. "
                         f"Received: {name}.shape={arr.shape}")
    same_length(n, name, arr, xname)
    sw = as_float_matrix(name, arr.reshape(-1, 1), dtype, finite=finite).reshape(-1)
    if finite and (sw < 0).any():
        raise ValueError(f"`{name}` must be non-negative. Received: a weight of "
                         f"{sw[sw < 0][0].item()!r}")
    return sw


def same_length(n, name, other, other_name="x"):
    if np.ndim(other) == 0:
        raise ValueError(f"`{name}` must hold one entry per sample ({n} samples in "
                         f"`{other_name}`). Received: {name}.shape=()")
    if len(other) != n:
        raise ValueError(
            f"Data cardinality is ambiguous: `{other_name}` and `{name}` must have the same number "
            f"of samples. Received: {other_name} sizes: {n}, {name} sizes: {len(other)}"
        )
