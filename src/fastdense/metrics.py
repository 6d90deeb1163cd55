"""Metrics with Keras's names, computed inside the compiled step on the pre-update outputs.

`metrics=["accuracy"]` (or `"acc"`) resolves by shapes only, as Keras does: one output unit ->
binary accuracy (threshold 0.5); labels of lower rank than the output, or shape (n, 1) with more
than one output, or a sparse loss -> sparse categorical accuracy; otherwise categorical accuracy.
The history key is the string the user wrote.
"""
import numpy as np

from . import _kernels

_K = _kernels.CODES


class Metric:
    """A metric the kernels compute: `code`, and `name` (its history key)."""
    code = None
    default_name = None
    elementwise = False  # compares y and the output column by column (needs equal widths)

    def __init__(self, name=None, dtype=None):
        self.name = name or self.default_name

    def get_config(self):
        return {"name": self.name, "dtype": "float32"}

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The (weighted) mean of the metric over the given samples, as a float."""
        pred = np.ascontiguousarray(np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1))
        y = np.asarray(y_true, dtype=np.float64)
        y = np.ascontiguousarray(y.reshape(len(y), -1))
        sw = np.empty(0) if sample_weight is None else \
            np.ascontiguousarray(np.asarray(sample_weight, dtype=np.float64).reshape(-1))
        acc = np.zeros(2)
        _kernels.metric_update(np.array([self.code], dtype=np.intp), pred, y, sw, acc)
        return float(acc[0] / acc[1]) if acc[1] else 0.0


class BinaryAccuracy(Metric):
    code, default_name = _K["METRIC_BINARY_ACCURACY"], "binary_accuracy"
    elementwise = True

    def __init__(self, name=None, dtype=None, threshold=0.5):
        if threshold != 0.5:
            raise ValueError(
                "fastdense's BinaryAccuracy supports Keras's default threshold 0.5 only. "
                f"Received: threshold={threshold!r}"
            )
        super().__init__(name, dtype)


class CategoricalAccuracy(Metric):
    code, default_name = _K["METRIC_CATEGORICAL_ACCURACY"], "categorical_accuracy"


class SparseCategoricalAccuracy(Metric):
    code, default_name = _K["METRIC_SPARSE_CATEGORICAL_ACCURACY"], "sparse_categorical_accuracy"


class MeanSquaredError(Metric):
    code, default_name = _K["METRIC_MSE"], "mean_squared_error"
    elementwise = True


class MeanAbsoluteError(Metric):
    code, default_name = _K["METRIC_MAE"], "mean_absolute_error"
    elementwise = True


_BY_NAME = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
}
_BY_CLASS = {c.__name__: c for c in _BY_NAME.values()}
_ACCURACY = ("accuracy", "acc")


def _is_accuracy(identifier):
    # Keras 3 matches the accuracy shortcut case-insensitively ("Accuracy", "ACC").
    return isinstance(identifier, str) and identifier.lower() in _ACCURACY


def check(identifier):
    """Validates a metric identifier at `compile()` time (resolution waits for data shapes)."""
    if isinstance(identifier, Metric) or _is_accuracy(identifier) or identifier in _BY_NAME:
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    import difflib

    names = sorted(set(_ACCURACY) | set(_BY_NAME))
    close = difflib.get_close_matches(str(identifier), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown metric: expected one of {names} or a fastdense.metrics.Metric.{hint} "
        f"Received: metric={identifier!r}"
    )


def resolve(identifier, y_shape, units, sparse_loss):
    """The concrete `Metric` for an identifier, given the label shape and the output width."""
    if isinstance(identifier, Metric):
        return identifier
    if _is_accuracy(identifier):
        if units == 1:
            cls = BinaryAccuracy
        elif sparse_loss or len(y_shape) == 1 or (len(y_shape) == 2 and y_shape[1] == 1):
            cls = SparseCategoricalAccuracy
        else:
            cls = CategoricalAccuracy
    else:
        cls = _BY_NAME[identifier]
    return cls(name=identifier)
