"""Utilities with Keras's names: `to_categorical`, `set_random_seed`."""
import numpy as np

from . import _random, _validation


def to_categorical(y, num_classes=None):
    """Integer class labels -> one-hot float64 rows, shape `y.shape + (num_classes,)`.

    A trailing axis of size 1 is dropped first, as Keras does: `(n, 1)` -> `(n, C)`.

    Args:
        y: integer labels in `[0, num_classes)`.
        num_classes: number of classes; default `max(y) + 1`.

    Example:
    >>> fastdense.utils.to_categorical([0, 2, 1])
    array([[1., 0., 0.], [0., 0., 1.], [0., 1., 0.]])
    """
    arr = _validation.numeric_array("y", y)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise ValueError("`y` must hold integer class labels. Received: non-integer values "
                             f"such as {arr[(~np.isfinite(arr)) | (arr != np.round(arr))][:3]}")
    labels = arr.astype(np.int64)
    if labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels.reshape(labels.shape[:-1])
    if labels.size == 0:
        num = _validation.positive_int("num_classes", num_classes) if num_classes is not None else 0
        return np.zeros(labels.shape + (num,), dtype=np.float64)
    if labels.min() < 0:
        raise ValueError(f"`y` must hold non-negative class labels. Received: label {labels.min()}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    num_classes = _validation.positive_int("num_classes", num_classes)
    if labels.max() >= num_classes:
        raise ValueError(f"`y` holds label {labels.max()}, outside [0, num_classes={num_classes}). "
                         f"Received: num_classes={num_classes}")
    out = np.zeros((labels.size, num_classes), dtype=np.float64)
    out[np.arange(labels.size), labels.reshape(-1)] = 1.0
    return out.reshape(labels.shape + (num_classes,))


def set_random_seed(seed):
    """Seeds everything fastdense draws (initial weights, shuffling, dropout) and NumPy's legacy
    global generator, so the same seed and data give bit-identical training.

    Args:
        seed: a non-negative integer.
    """
    seed = _validation.nonneg_int("seed", seed)
    _random.seed(seed)
    np.random.seed(seed % (2**32))
