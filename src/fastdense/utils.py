"""Utilities with Keras's names: `to_categorical`, `set_random_seed`, `PyDataset`."""
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


class PyDataset:
    """Base class for datasets that hand out batches by index (Keras 3's `keras.utils.PyDataset`).

    A subclass defines `__len__` (batches per epoch) and `__getitem__(index)` returning one batch:
    `(x, y)`, `(x, y, sample_weight)`, or `(x,)` / `x` for `predict`. `fit`, `evaluate` and
    `predict` accept it wherever they accept arrays, `validation_data` included; `fit` calls
    `on_epoch_end()` after every epoch and, with `shuffle=True`, visits the batches in a new
    random order each epoch.

    Args:
        workers: with more than 1, that many threads fetch batches ahead of training, in order
            (results are the same as with 1).
        use_multiprocessing: accepted for Keras compatibility; fastdense always uses threads
            (batches are not sent between processes), so this changes nothing.
        max_queue_size: how many batches the threads may fetch ahead.

    Example:
    >>> class Batches(fastdense.utils.PyDataset):
    ...     def __init__(self, x, y, batch_size, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.x, self.y, self.batch_size = x, y, batch_size
    ...     def __len__(self):
    ...         return -(-len(self.x) // self.batch_size)
    ...     def __getitem__(self, i):
    ...         s = slice(i * self.batch_size, (i + 1) * self.batch_size)
    ...         return self.x[s], self.y[s]
    >>> model.fit(Batches(x, y, 256), epochs=3)
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = _validation.positive_int("workers", workers)
        self._use_multiprocessing = bool(use_multiprocessing)
        self._max_queue_size = _validation.positive_int("max_queue_size", max_queue_size)

    # Subclasses that skip super().__init__() get the defaults.
    @property
    def workers(self):
        return getattr(self, "_workers", 1)

    @workers.setter
    def workers(self, value):
        self._workers = _validation.positive_int("workers", value)

    @property
    def use_multiprocessing(self):
        return getattr(self, "_use_multiprocessing", False)

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self._use_multiprocessing = bool(value)

    @property
    def max_queue_size(self):
        return getattr(self, "_max_queue_size", 10)

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = _validation.positive_int("max_queue_size", value)

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(index) "
                                  "returning one batch")

    @property
    def num_batches(self):
        """Batches per epoch: `len(self)`, or None for an endless dataset."""
        if hasattr(self, "__len__"):
            return len(self)
        return None

    def on_epoch_begin(self):
        """Called before every epoch of `fit`."""

    def on_epoch_end(self):
        """Called after every epoch of `fit`."""


Sequence = PyDataset  # Keras's older name
