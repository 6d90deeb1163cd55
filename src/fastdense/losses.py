"""Losses with Keras 3's names, formulas and reduction (mean over the batch of per-sample losses).

A loss here is a specification the compiled training step executes; calling it on arrays
(`loss(y_true, y_pred)`) evaluates it with the same kernel. When a softmax (sigmoid) output meets
categorical (binary) crossentropy, the loss is computed from the logits, exactly, as TF-Keras does
inside `fit`, so the gradient at the logits is `p - y`. Probabilities given directly are clipped to
[1e-7, 1 - 1e-7].
"""
import numpy as np

from . import _kernels, _kinds, _validation

_K = _kernels.CODES


class Loss:
    """Base class. Subclasses set `kind` and the Keras default `name`."""
    kind = None
    default_name = None

    def __init__(self, from_logits=False, label_smoothing=0.0, name=None, reduction="sum_over_batch_size"):
        if reduction not in ("sum_over_batch_size", "auto"):
            raise ValueError(
                "fastdense supports the Keras default reduction 'sum_over_batch_size' only. "
                f"Received: reduction={reduction!r}"
            )
        self.from_logits = bool(from_logits)
        self.label_smoothing = _validation.finite_float("label_smoothing", label_smoothing,
                                                        minimum=0.0, below=1.0)
        self.name = name or self.default_name

    # -- what the kernels run ------------------------------------------------------------------
    def codes(self, last_activation):
        """(loss code, fused): fused means the loss reads the last op's pre-activation (logits).

        The codes and the fusing activation are the loss's row in _kinds.LOSSES.
        """
        row = _kinds.LOSS_BY_KIND[self.kind]
        if row.logits_kernel and (self.from_logits or last_activation == row.fuses_with):
            return _K["LOSS_" + row.logits_kernel], not self.from_logits
        return _K["LOSS_" + row.kernel], False

    @property
    def sparse(self):
        return _kinds.LOSS_BY_KIND[self.kind].sparse

    def prepare_targets(self, y, n, units, dtype, name="y", xname="x", outputs=None, finite=True):
        """Validated targets as the kernels read them: (n, units) floats, or (n, 1) class ids.

        `outputs` names what has the `units` columns ("a model with 3 output units", or `y_pred` in
        a direct call); finite=False keeps NaN/Inf in dense targets (a direct call computes with them).
        """
        outputs = outputs or f"a model with {units} output units"
        arr = _validation.numeric_array(name, y)
        _validation.same_length(n, name, arr, xname)
        if self.kind == "scce":
            if arr.ndim == 2 and arr.shape[1] == units and units > 1:
                raise ValueError(
                    f"`{name}` looks one-hot encoded (shape {arr.shape}), but the loss "
                    f"'{self.name}' expects integer class labels of shape (n,) or (n, 1). Use "
                    "loss='categorical_crossentropy' for one-hot labels. "
                    f"Received: {name}.shape={arr.shape}"
                )
            if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
                raise ValueError(
                    f"`{name}` must hold one integer class label per sample, shape (n,) or (n, 1), "
                    f"for the loss '{self.name}'. Received: {name}.shape={arr.shape}"
                )
            flat = _validation.class_labels(name, arr, units, f"the loss '{self.name}'", outputs)
            return np.ascontiguousarray(flat.reshape(-1, 1), dtype=dtype)
        if arr.ndim == 1 and units == 1:
            arr = arr.reshape(-1, 1)
        if self.kind == "cce" and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1 and units > 1)):
            raise ValueError(
                f"The loss '{self.name}' expects one-hot targets of shape (n, {units}), but `{name}` "
                "holds one label per sample. Use loss='sparse_categorical_crossentropy', or "
                f"fastdense.utils.to_categorical({name}). Received: {name}.shape={arr.shape}"
            )
        if arr.ndim != 2 or arr.shape[1] != units:
            raise ValueError(
                f"`{name}` must have shape (n, {units}) for {outputs} and the loss "
                f"'{self.name}'. Received: {name}.shape={arr.shape}"
            )
        out = _validation.as_float_matrix(name, arr, dtype, finite=finite)
        if self.label_smoothing:
            ls = self.label_smoothing
            out = out * (1 - ls) + (ls / units if self.kind == "cce" else 0.5 * ls)
            out = out.astype(dtype, copy=False)
        return out

    # -- Keras's callable interface ------------------------------------------------------------
    def __call__(self, y_true, y_pred, sample_weight=None):
        """The mean weighted loss of a batch, as a float.

        y_pred (n,) or (n, k); y_true as `fit` takes it; sample_weight (n,), (n, 1) or a scalar.
        Checked with `fit`'s messages; NaN/Inf give nan/inf, as in Keras. Computed in y_pred's
        float type (float16: float32; ints and bools: `fastdense.config.floatx()`).
        """
        pred = _validation.predictions("y_pred", y_pred)
        n, units = pred.shape
        y = self.prepare_targets(y_true, n, units, pred.dtype, name="y_true", xname="y_pred",
                                 outputs=f"`y_pred` with {units} columns", finite=False)
        sw = np.empty(0, pred.dtype) if sample_weight is None else _validation.sample_weights(
            "sample_weight", sample_weight, n, "y_pred", pred.dtype, finite=False)
        code, _ = self.codes(None)
        return float(_kernels.loss_grad(code, pred, y, sw))

    def get_config(self):
        cfg = {"name": self.name, "reduction": "sum_over_batch_size"}
        if self.kind in ("cce", "bce"):
            cfg.update(from_logits=self.from_logits, label_smoothing=self.label_smoothing)
        elif self.kind == "scce":
            cfg.update(from_logits=self.from_logits)
        return cfg

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("dtype", None)
        config.pop("axis", None)
        config.pop("ignore_class", None)
        return cls(**config)


class MeanSquaredError(Loss):
    kind, default_name = "mse", "mean_squared_error"

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)


class MeanAbsoluteError(Loss):
    kind, default_name = "mae", "mean_absolute_error"

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)


class CategoricalCrossentropy(Loss):
    kind, default_name = "cce", "categorical_crossentropy"


class BinaryCrossentropy(Loss):
    kind, default_name = "bce", "binary_crossentropy"


class SparseCategoricalCrossentropy(Loss):
    kind, default_name = "scce", "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False, name=None, reduction="sum_over_batch_size"):
        super().__init__(from_logits=from_logits, name=name, reduction=reduction)


# Keras name -> class, from the names in _kinds.LOSSES
_CLASSES = (MeanSquaredError, MeanAbsoluteError, CategoricalCrossentropy, BinaryCrossentropy,
            SparseCategoricalCrossentropy)
_BY_NAME = {name: cls for cls in _CLASSES for name in _kinds.LOSS_BY_KIND[cls.kind].names}
_BY_CLASS = {c.__name__: c for c in _BY_NAME.values()}


def _function(cls, fname):
    def loss_fn(y_true, y_pred):
        return cls()(y_true, y_pred)

    loss_fn.__name__ = fname
    return loss_fn


mean_squared_error = mse = _function(MeanSquaredError, "mean_squared_error")
mean_absolute_error = mae = _function(MeanAbsoluteError, "mean_absolute_error")
categorical_crossentropy = _function(CategoricalCrossentropy, "categorical_crossentropy")
binary_crossentropy = _function(BinaryCrossentropy, "binary_crossentropy")
sparse_categorical_crossentropy = _function(SparseCategoricalCrossentropy,
                                            "sparse_categorical_crossentropy")


def get(identifier):
    """A `Loss` from a Keras name (case-sensitive, as in Keras), a class name, config or instance.

    Returns (loss, key): `key` is what the user wrote, for configs.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, dict) and identifier.get("class_name") in _BY_CLASS:
        return _BY_CLASS[identifier["class_name"]].from_config(identifier.get("config") or {})
    if isinstance(identifier, str) and identifier in _BY_NAME:
        loss = _BY_NAME[identifier]()
        loss.name = identifier
        return loss
    if callable(identifier) and getattr(identifier, "__name__", None) in _BY_NAME:
        return _BY_NAME[identifier.__name__]()
    import difflib

    close = difflib.get_close_matches(str(identifier), list(_BY_NAME), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown loss: expected one of {sorted(_BY_NAME)} or a fastdense.losses.Loss.{hint} "
        f"Received: loss={identifier!r}"
    )
