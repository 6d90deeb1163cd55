"""Dense-layer math on NumPy arrays, on fastdense's compiled kernels.

    from fastdense import ops
    y = ops.dense(x, kernel, bias, activation="relu")          # relu(x @ kernel + bias)
    dx, dkernel, dbias = ops.dense_grad(x, kernel, bias, dy, activation="relu")
    value, dy = ops.loss_grad("mse", y_true, y)

Every function validates its arguments in Python (types, shapes, lengths, labels) before any
compiled code runs, and raises `TypeError`/`ValueError` with Keras-style "Received: ..." messages.
Inputs are never modified and may have any memory layout, byte order or real dtype; they are cast
to one float type, float64 if any floating input is float64, else float32 (`fastdense.config.floatx()`
when no input is floating), and results come back in that type. `out=` takes a C-contiguous array of
that type and shape, that shares no memory with the inputs, to write into instead of allocating.

Non-finite values in `x`, weights or gradients are not searched for (that would cost a pass over
the weights on every call, more than a one-row product); the loss functions refuse them, as
`Model.fit` does. Note that `relu` (like the kernels `fit` runs) maps NaN to 0.
"""
import numpy as np

from . import _kernels, _validation, activations as activations_mod, config, losses as losses_mod

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
# The kernels' float32/float64 specialisations, looked up once: calling a fused Cython function
# picks one from its arguments' types on every call, which costs as much as a one-row product.
_SPEC = {_F32: "float", _F64: "double"}
_FORWARD = {dt: _kernels.dense_forward[s] for dt, s in _SPEC.items()}
_BACKWARD = {dt: _kernels.dense_backward[s] for dt, s in _SPEC.items()}
_ACT_FORWARD = {dt: _kernels.activation_forward[s] for dt, s in _SPEC.items()}
_ACT_BACKWARD = {dt: _kernels.activation_backward[s] for dt, s in _SPEC.items()}
_LOSS_GRAD = {dt: _kernels.loss_grad[s] for dt, s in _SPEC.items()}
_LINEAR = _kernels.CODES["ACT_LINEAR"]
_NEEDS_PRE = activations_mod.NEEDS_PRE_ACTIVATION
# The kernels index with C ints in places (BLAS sizes, some products of two dimensions).
_MAX_ELEMENTS = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# Argument checks (all before any compiled code runs)
# ---------------------------------------------------------------------------------------------
def _array(name, value, optional=False):
    if value is None and optional:
        return None
    return _validation.numeric_array(name, value)


def _compute_dtype(*arrays):
    """float64 if any floating input is float64, else float32; floatx() without floating inputs."""
    kinds = [a.dtype for a in arrays if a is not None and a.dtype.kind == "f"]
    for dt in kinds:
        if dt.itemsize > 8:
            raise TypeError("fastdense computes in float32 or float64; convert extended-precision "
                            f"arrays first. Received: an array of dtype {dt}")
    if not kinds:
        return np.dtype(config.floatx())
    return _F64 if any(dt.itemsize == 8 for dt in kinds) else _F32


def _check_rank(name, arr, ndim, what):
    if arr.ndim != ndim:
        raise ValueError(f"`{name}` must be a {ndim}-D array {what}. Received: {name}.shape={arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty: every dimension must be at least 1. "
                         f"Received: {name}.shape={arr.shape}")
    if arr.size > _MAX_ELEMENTS:
        raise ValueError(f"`{name}` has more than 2**31 - 1 elements, beyond what the compiled "
                         f"kernels index. Received: {name}.shape={arr.shape}")


def _cast(arr, dtype):
    """C-contiguous, native `dtype`; the array itself when it already is (never modified)."""
    if arr.dtype == dtype and arr.flags.c_contiguous:
        return arr
    # A float64 1e300 becomes float32 Inf, as in NumPy's own cast, without its warning.
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(arr, dtype=dtype)


def _output(out, shape, dtype, inputs, name="out"):
    """`out` checked as a destination (or a new array when None)."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"`{name}` must be a NumPy array. Received: {name} of type {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"`{name}` must have dtype {dtype.name}, the type this call computes in. "
                        f"Received: {name}.dtype={out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}. Received: {name}.shape={out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"`{name}` must be a writable C-contiguous array. Received: {name} with "
                         f"c_contiguous={out.flags.c_contiguous}, writeable={out.flags.writeable}")
    for input_name, arr in inputs.items():
        if arr is not None and np.may_share_memory(out, arr):
            raise ValueError(f"`{name}` must not share memory with the inputs. Received: {name} "
                             f"overlapping `{input_name}`")
    return out


def _activation(activation):
    return activations_mod.get(activation)


def _dense_arrays(x, kernel, bias):
    """Checked (x, kernel, bias) as numeric arrays, the compute dtype, and units."""
    x = _array("x", x)
    kernel = _array("kernel", kernel)
    bias = _array("bias", bias, optional=True)
    dtype = _compute_dtype(x, kernel, bias)
    _check_rank("x", x, 2, "of shape (n_samples, input_dim); reshape a single sample with "
                "x.reshape(1, -1) or single features with x.reshape(-1, 1)")
    _check_rank("kernel", kernel, 2, "of shape (input_dim, units)")
    if kernel.shape[0] != x.shape[1]:
        raise ValueError(f"`kernel` must have shape (input_dim, units) with input_dim = "
                         f"x.shape[1] = {x.shape[1]}. Received: kernel.shape={kernel.shape}, "
                         f"x.shape={x.shape}")
    units = kernel.shape[1]
    if bias is not None:
        if bias.shape != (units,):
            raise ValueError(f"`bias` must have shape (units,) = ({units},) to match the kernel. "
                             f"Received: bias.shape={bias.shape}, kernel.shape={kernel.shape}")
    if x.shape[0] * units > _MAX_ELEMENTS:
        raise ValueError("The result would have more than 2**31 - 1 elements, beyond what the "
                         f"compiled kernels index. Received: x.shape={x.shape}, kernel.shape={kernel.shape}")
    return x, kernel, bias, dtype, units


# ---------------------------------------------------------------------------------------------
# Dense layer
# ---------------------------------------------------------------------------------------------
_CODE_BY_NAME = {name: activations_mod.get(name).code for name in activations_mod._CODES}
_CODE_BY_NAME[None] = _LINEAR
_NO_BIAS = {_F32: np.empty(0, _F32), _F64: np.empty(0, _F64)}


def _fast_dense_code(x, kernel, bias, activation):
    """The activation's code when `dense` may call the kernel on these arrays as they are
    (C-contiguous, one native float type, matching shapes, sizes in range), else None.

    One row through the general path's checks costs a third of the product itself; this
    shortened form of the same checks keeps `ops.dense` on one row as cheap as NumPy's
    `x @ kernel + bias` (any array it does not accept takes the general path)."""
    dt = x.dtype
    # (`is`: native float32/float64 arrays share NumPy's dtype singletons; others fall through)
    if (dt is not _F32 and dt is not _F64) or kernel.dtype is not dt or x.ndim != 2 \
            or kernel.ndim != 2:
        return None
    n, n_in = x.shape
    k_in, units = kernel.shape
    if n_in != k_in or not 0 < n * n_in * units or n * units > _MAX_ELEMENTS \
            or x.size > _MAX_ELEMENTS or kernel.size > _MAX_ELEMENTS:
        return None
    if bias is not None and (type(bias) is not np.ndarray or bias.dtype is not dt
                             or bias.shape != (units,) or not bias.flags.c_contiguous):
        return None
    if not (x.flags.c_contiguous and kernel.flags.c_contiguous):
        return None
    return _CODE_BY_NAME.get(activation) if activation is None or type(activation) is str else None


def dense(x, kernel, bias=None, activation=None, out=None):
    """A dense layer's output: `activation(x @ kernel + bias)`.

    Args:
        x: inputs, shape `(n_samples, input_dim)`.
        kernel: weights, shape `(input_dim, units)`.
        bias: optional, shape `(units,)`.
        activation: a name from `fastdense.activations` (or the function itself); None: linear.
        out: optional destination, `(n_samples, units)`.

    Returns:
        An array `(n_samples, units)` of the computed float type.

    Example:
    >>> ops.dense(np.ones((2, 3)), np.ones((3, 4)), np.zeros(4), activation="relu")[0]
    array([3., 3., 3., 3.])
    """
    if out is None and type(x) is np.ndarray and type(kernel) is np.ndarray:
        code = _fast_dense_code(x, kernel, bias, activation)
        if code is not None:
            Z = np.empty((x.shape[0], kernel.shape[1]), x.dtype)
            _FORWARD[x.dtype](x, kernel, bias if bias is not None else _NO_BIAS[x.dtype], code, Z)
            return Z
    act = _activation(activation)
    x, kernel, bias, dtype, units = _dense_arrays(x, kernel, bias)
    X, W = _cast(x, dtype), _cast(kernel, dtype)
    b = _cast(bias, dtype) if bias is not None else np.empty(0, dtype)
    Z = _output(out, (x.shape[0], units), dtype, {"x": x, "kernel": kernel, "bias": bias})
    _FORWARD[dtype](X, W, b, act.code, Z)
    return Z


def dense_grad(x, kernel, bias, outputs_grad, activation=None, outputs=None, out=None):
    """Gradients of `sum(outputs_grad * dense(x, kernel, bias, activation))`.

    `x_grad = d @ kernel.T`, `kernel_grad = x.T @ d`, `bias_grad = d.sum(0)`, where
    `d = outputs_grad * activation'(x @ kernel + bias)` (for softmax, the full Jacobian-vector
    product `p * (outputs_grad - sum(outputs_grad * p))` per row).

    Args:
        x, kernel, bias, activation: as for `dense` (bias may be None).
        outputs_grad: the gradient with respect to the layer's output, `(n_samples, units)`.
        outputs: optionally the forward result `dense(x, kernel, bias, activation)`, to skip
            recomputing it. (swish and gelu need the pre-activation, which is recomputed.)
        out: optional destinations `(x_grad, kernel_grad, bias_grad)`; any of them may be None
            (allocated), bias_grad must be None when bias is.

    Returns:
        `(x_grad, kernel_grad, bias_grad)`, shaped like x, kernel and bias; `bias_grad` is None
        when `bias` is None.
    """
    act = _activation(activation)
    x, kernel, bias, _, units = _dense_arrays(x, kernel, bias)
    dZ_in = _array("outputs_grad", outputs_grad)
    outputs = _array("outputs", outputs, optional=True)
    dtype = _compute_dtype(x, kernel, bias, dZ_in, outputs)
    n = x.shape[0]
    for name, arr in (("outputs_grad", dZ_in), ("outputs", outputs)):
        if arr is not None and arr.shape != (n, units):
            raise ValueError(f"`{name}` must have the layer output's shape (n_samples, units) = "
                             f"{(n, units)}. Received: {name}.shape={arr.shape}")
    X, W = _cast(x, dtype), _cast(kernel, dtype)
    b = _cast(bias, dtype) if bias is not None else np.empty(0, dtype)
    dZ = _cast(dZ_in, dtype)
    if act.code == _LINEAR:
        dS = dZ  # nothing to recompute: the derivative is 1
    else:
        if act.code in _NEEDS_PRE:
            # swish and gelu: the derivative reads the pre-activation only
            S = np.empty((n, units), dtype)
            _FORWARD[dtype](X, W, b, _LINEAR, S)
            Z = S
        elif outputs is not None:
            S = Z = _cast(outputs, dtype)
        else:
            S = Z = np.empty((n, units), dtype)
            _FORWARD[dtype](X, W, b, act.code, Z)
        dS = np.empty((n, units), dtype)
        _ACT_BACKWARD[dtype](act.code, S, Z, dZ, dS)
    dX, dW, db = _grad_outputs(out, (n, x.shape[1]), (x.shape[1], units), units, bias, dtype,
                               {"x": x, "kernel": kernel, "bias": bias,
                                "outputs_grad": dZ_in, "outputs": outputs})
    _BACKWARD[dtype](X, W, dS, dW, db, dX)
    return dX, dW, (db if bias is not None else None)


def _grad_outputs(out, x_shape, kernel_shape, units, bias, dtype, inputs):
    """dense_grad's three destinations: `out`'s (checked, none overlapping another) or new."""
    if out is None:
        out = (None, None, None)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ValueError("`out` must be a tuple (x_grad, kernel_grad, bias_grad) of arrays or "
                         f"None. Received: out of type {type(out).__name__}")
    if bias is None and out[2] is not None:
        raise ValueError("`out[2]` must be None when `bias` is None (there is no bias gradient). "
                         f"Received: out[2] of type {type(out[2]).__name__}")
    inputs = dict(inputs)
    dX = _output(out[0], x_shape, dtype, inputs, "out[0]")
    inputs["out[0]"] = dX
    dW = _output(out[1], kernel_shape, dtype, inputs, "out[1]")
    inputs["out[1]"] = dW
    db = _output(out[2], (units,), dtype, inputs, "out[2]") if bias is not None \
        else np.empty(0, dtype)
    return dX, dW, db


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------
def _rows(arr):
    """A 2-D view whose rows are the last axis (softmax's axis); 0-d counts as one value."""
    return arr.reshape(-1, arr.shape[-1] if arr.ndim else 1)


def _activation_input(name, z):
    z = _array(name, z)
    if z.size == 0:
        raise ValueError(f"`{name}` is empty. Received: {name}.shape={z.shape}")
    if z.size > _MAX_ELEMENTS:
        raise ValueError(f"`{name}` has more than 2**31 - 1 elements, beyond what the compiled "
                         f"kernels index. Received: {name}.shape={z.shape}")
    return z


def activation(name, z, out=None):
    """`activation(z)` elementwise (softmax over the last axis), any shape.

    Args:
        name: a name from `fastdense.activations` (or the function itself); None: linear.
        z: the pre-activation.
        out: optional destination shaped like z; it may be z itself (computed in place).
    """
    act = _activation(name)
    z = _activation_input("z", z)
    dtype = _compute_dtype(z)
    if out is None:
        Z = np.array(z, dtype=dtype, order="C", copy=True)
    else:
        Z = _output(out, z.shape, dtype, {})
        np.copyto(Z, z, casting="unsafe")
    _ACT_FORWARD[dtype](act.code, _rows(Z))
    return Z


def activation_grad(name, z, outputs_grad, out=None):
    """The gradient of `sum(outputs_grad * activation(z))` with respect to z: elementwise
    `outputs_grad * activation'(z)`, and for softmax the Jacobian-vector product
    `p * (outputs_grad - sum(outputs_grad * p))` over the last axis, p = softmax(z).

    Args:
        name: the activation, as for `activation`.
        z: the pre-activation.
        outputs_grad: the gradient with respect to `activation(z)`, shaped like z.
        out: optional destination shaped like z.
    """
    act = _activation(name)
    z = _activation_input("z", z)
    g = _array("outputs_grad", outputs_grad)
    if g.shape != z.shape:
        raise ValueError(f"`outputs_grad` must have the shape of `z`, {z.shape}. "
                         f"Received: outputs_grad.shape={g.shape}")
    dtype = _compute_dtype(z, g)
    dS = _output(out, z.shape, dtype, {"z": z, "outputs_grad": g})
    S = _rows(_cast(z, dtype))
    Z = S
    if act.code != _LINEAR and act.code not in _NEEDS_PRE:
        Z = S.copy()
        _ACT_FORWARD[dtype](act.code, Z)
    _ACT_BACKWARD[dtype](act.code, S, Z, _rows(_cast(g, dtype)), _rows(dS))
    return dS


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def _loss_object(loss, from_logits):
    if not isinstance(from_logits, (bool, np.bool_)):
        raise TypeError(f"`from_logits` must be True or False. Received: from_logits={from_logits!r}")
    if isinstance(loss, losses_mod.Loss):
        if from_logits and not loss.from_logits:
            raise ValueError("`from_logits=True` conflicts with the loss object's own setting: "
                             f"create it with from_logits=True instead. Received: loss={loss.name!r} "
                             "with from_logits=False, from_logits=True")
        return loss
    obj = losses_mod.get(loss)  # a new object for names, classes and functions
    if from_logits:
        if obj.kind not in ("cce", "scce", "bce"):
            raise ValueError("`from_logits` applies to the crossentropy losses only. "
                             f"Received: loss={loss!r}, from_logits=True")
        obj.from_logits = True
    return obj


def _loss_inputs(loss, y_true, y_pred, sample_weight, from_logits):
    obj = _loss_object(loss, from_logits)
    pred = _array("y_pred", y_pred)
    if pred.ndim not in (1, 2):
        raise ValueError("`y_pred` must be 1-D (one value per sample) or 2-D (n_samples, units). "
                         f"Received: y_pred.shape={pred.shape}")
    if pred.size == 0:
        raise ValueError(f"`y_pred` is empty. Received: y_pred.shape={pred.shape}")
    dtype = _compute_dtype(pred)
    P = _validation.as_float_matrix("y_pred", pred.reshape(len(pred), -1), dtype)
    n, units = P.shape
    if P.size > _MAX_ELEMENTS:
        raise ValueError(f"`y_pred` has more than 2**31 - 1 elements. Received: y_pred.shape={pred.shape}")
    Y = obj.prepare_targets(y_true, n, units, dtype, name="y_true", xname="y_pred")
    if sample_weight is None:
        sw = np.empty(0, dtype)
    else:
        w = _array("sample_weight", sample_weight)
        if w.ndim == 2 and w.shape[1] == 1:
            w = w.reshape(-1)
        if w.ndim != 1:
            raise ValueError("`sample_weight` must be 1-D, one weight per sample. "
                             f"Received: sample_weight.shape={w.shape}")
        _validation.same_length(n, "sample_weight", w, "y_pred")
        sw = _validation.as_float_matrix("sample_weight", w.reshape(-1, 1), dtype).reshape(-1)
    code, _ = obj.codes(None)
    return code, P, Y, sw, pred.shape, dtype


def loss(loss, y_true, y_pred, sample_weight=None, from_logits=False):
    """A loss with Keras's reduction: `sum_i(sample_weight_i * loss_i) / n_samples`, as a float.

    Args:
        loss: a name (`"mse"`, `"mae"`, `"binary_crossentropy"`, `"categorical_crossentropy"`,
            `"sparse_categorical_crossentropy"`, ...) or a `fastdense.losses` object.
        y_true: targets: like y_pred, or integer class labels `(n_samples,)` for the sparse loss.
        y_pred: predictions, `(n_samples, units)` or `(n_samples,)`; logits when `from_logits`.
        sample_weight: optional, one weight per sample.
        from_logits: with a loss name, read y_pred as logits (crossentropy losses only).
    """
    code, P, Y, sw, _, dtype = _loss_inputs(loss, y_true, y_pred, sample_weight, from_logits)
    return float(_LOSS_GRAD[dtype](code, P, Y, sw))


def loss_grad(loss, y_true, y_pred, sample_weight=None, from_logits=False, out=None):
    """`(value, y_pred_grad)`: `loss(...)` and its gradient with respect to y_pred (shaped like
    y_pred; with `from_logits`, with respect to the logits, e.g. `(softmax(y_pred) - y_true) / n`
    for categorical crossentropy). Where probabilities are clipped to [1e-7, 1 - 1e-7] the
    gradient is 0, as in an autodiff graph. Arguments as for `loss`; `out`: optional destination
    shaped like y_pred.
    """
    code, P, Y, sw, shape, dtype = _loss_inputs(loss, y_true, y_pred, sample_weight, from_logits)
    dL = _output(out, shape, dtype, {"y_true": Y, "y_pred": P, "sample_weight": sw})
    value = _LOSS_GRAD[dtype](code, P, Y, sw, dL.reshape(P.shape))
    return float(value), dL


__all__ = ["dense", "dense_grad", "activation", "activation_grad", "loss", "loss_grad"]
