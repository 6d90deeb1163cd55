"""Metrics with Keras's names, computed inside the compiled step on the pre-update outputs.

`metrics=["accuracy"]` (or `"acc"`) resolves by shapes only, as Keras does: one output unit ->
binary accuracy (threshold 0.5); labels of lower rank than the output, or shape (n, 1) with more
than one output, or a sparse loss -> sparse categorical accuracy; otherwise categorical accuracy.
The history key is the string the user wrote.
"""
import numpy as np

from . import _kernels, _validation

_K = _kernels.CODES


class Metric:
    """A metric the kernels compute: `code`, and `name` (its history key).

    Called directly it is a Keras metric: `update_state(y_true, y_pred, sample_weight=None)` adds a
    batch to a running weighted mean (kept in float64), `result()` reads it, `reset_state()` clears
    it, and `metric(y_true, y_pred)` is `update_state` then `result`. Inputs are checked first, so
    a rejected batch leaves the state as it was.
    """
    code = None
    default_name = None
    target = "dense"  # what y_true holds: "dense" (one-hot, as wide as y_pred) or "sparse" labels
    elementwise = False  # compares y and the output column by column (needs equal widths)

    def __init__(self, name=None, dtype=None):
        self.name = name or self.default_name
        self._acc = np.zeros(2)  # sum of w_i * metric_i, sum of w_i

    def get_config(self):
        return {"name": self.name, "dtype": "float32"}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def check_target_shape(self, y, units, name="y", outputs="the model's output"):
        """Refuses targets this metric would misread (`outputs` has `units` columns)."""
        wide = y.ndim == 2 and y.shape[1] == units and units > 1
        one_per_row = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
        if self.target == "sparse" and wide:
            raise ValueError(
                f"`{name}` looks one-hot encoded (shape {y.shape}), but the metric {self.name!r} "
                "expects integer class labels of shape (n,) or (n, 1). Use "
                f"metrics=['categorical_accuracy'] for one-hot labels. Received: {name}.shape={y.shape}")
        if self.target == "sparse" and not one_per_row:
            raise ValueError(
                f"`{name}` must hold one integer class label per sample, shape (n,) or (n, 1), for "
                f"the metric {self.name!r}. Received: {name}.shape={y.shape}")
        if self.target == "dense" and not self.elementwise and units > 1 and one_per_row:
            raise ValueError(
                f"The metric {self.name!r} expects targets of shape (n, {units}) like {outputs}, "
                f"but `{name}` holds one value per sample. For integer class labels use "
                f"metrics=['sparse_categorical_accuracy']. Received: {name}.shape={y.shape}")
        if self.target == "dense" and (y.ndim > 2 or (1 if y.ndim < 2 else y.shape[1]) != units):
            what = "compares targets and outputs element by element, so" if self.elementwise \
                else "compares the arg max of targets and outputs, so"
            raise ValueError(
                f"The metric {self.name!r} {what} `{name}` needs {units} columns like {outputs}. "
                f"Received: {name}.shape={y.shape}")

    def _inputs(self, y_true, y_pred, sample_weight):
        pred = _validation.predictions("y_pred", y_pred, np.float64)
        n, units = pred.shape
        y = _validation.numeric_array("y_true", y_true)
        _validation.same_length(n, "y_true", y, "y_pred")
        self.check_target_shape(y, units, "y_true", "`y_pred`")
        if self.target == "sparse":
            y = _validation.class_labels("y_true", y, units, f"the metric {self.name!r}",
                                         f"`y_pred` with {units} columns")
        y = _validation.as_float_matrix("y_true", y.reshape(n, -1), np.float64, finite=False)
        sw = np.empty(0) if sample_weight is None else \
            _validation.sample_weights("sample_weight", sample_weight, n, "y_pred", finite=False)
        return pred, y, sw

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch: y_pred (n,) or (n, k), y_true as the metric reads it, weights (n,)."""
        pred, y, sw = self._inputs(y_true, y_pred, sample_weight)
        _kernels.metric_update(np.array([self.code], dtype=np.intp), pred, y, sw, self._acc)

    def result(self):
        """The weighted mean so far, as a float (0.0 before any sample, as in Keras)."""
        return float(self._acc[0] / self._acc[1]) if self._acc[1] else 0.0

    def reset_state(self):
        self._acc[:] = 0.0

    def __call__(self, y_true, y_pred, sample_weight=None):
        """`update_state` then `result`, as Keras's metrics do."""
        self.update_state(y_true, y_pred, sample_weight)
        return self.result()


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

    def get_config(self):
        return {**super().get_config(), "threshold": 0.5}


class CategoricalAccuracy(Metric):
    code, default_name = _K["METRIC_CATEGORICAL_ACCURACY"], "categorical_accuracy"


class SparseCategoricalAccuracy(Metric):
    code, default_name = _K["METRIC_SPARSE_CATEGORICAL_ACCURACY"], "sparse_categorical_accuracy"
    target = "sparse"


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
