"""Keras 3 callbacks.

Contract with the training engine (see `CallbackList`):

- `fit` builds `CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
  model=model, verbose=verbose, epochs=epochs, steps=steps_per_epoch)`, then
  calls `on_train_begin()`, and per epoch `on_epoch_begin(epoch)`, the batch
  hooks, the validation hooks (`on_test_begin()`, test batch hooks,
  `on_test_end(val_logs)`), `on_epoch_end(epoch, epoch_logs)`; finally
  `on_train_end(last_epoch_logs)`.
- The engine runs many batches per compiled call. If
  `CallbackList.needs_every_batch` is False it calls, once per chunk,
  `on_train_batch_begin(first_batch)` and `on_train_batch_end(last_batch, logs)`
  where `logs` holds the running epoch means so far; otherwise it calls both
  hooks for every batch. `needs_every_test_batch` plays the same role for
  evaluation. A callback class that is fine with chunked batch hooks says so
  with the class attribute `_chunk_tolerant = True` on the class that defines
  the hooks (a subclass that overrides a batch hook itself does not inherit
  the promise).
- After each `on_train_batch_end` call the engine checks `model.stop_training`
  and, if set, skips the remaining batches of the epoch (validation and
  `on_epoch_end` still run), as Keras 3 does.
"""

import csv
import inspect
import math
import numbers
import os
import sys
import warnings

import numpy as np

from ._progbar import Progbar

__all__ = [
    "Callback",
    "CallbackList",
    "History",
    "ProgbarLogger",
    "EarlyStopping",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "LearningRateScheduler",
    "TerminateOnNaN",
    "CSVLogger",
    "LambdaCallback",
]

_TRAIN_BATCH_HOOKS = (
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_batch_begin",
    "on_batch_end",
)
_TEST_BATCH_HOOKS = ("on_test_batch_begin", "on_test_batch_end")
_PREDICT_BATCH_HOOKS = ("on_predict_batch_begin", "on_predict_batch_end")
_HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_test_begin",
    "on_test_end",
    "on_predict_begin",
    "on_predict_end",
) + _TRAIN_BATCH_HOOKS + _TEST_BATCH_HOOKS + _PREDICT_BATCH_HOOKS


def _print(message):
    stream = sys.stdout
    if stream is not None:
        stream.write(message + "\n")
        stream.flush()


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_non_negative_int(name, value):
    if not _is_int(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative integer. Received: {name}={value!r}"
        )


def _check_real(name, value):
    if not _is_real(value) or math.isnan(value):
        raise ValueError(f"`{name}` must be a number. Received: {name}={value!r}")


def _check_mode(owner, mode):
    if mode in ("auto", "min", "max"):
        return mode
    warnings.warn(
        f"{owner} mode {mode!r} is unknown, fallback to auto mode. "
        "Expected one of 'auto', 'min', 'max'.",
        stacklevel=3,
    )
    return "auto"


# Optimisation direction of the names fit() can log (without the `val_`
# prefix). Keras 3 reads it from the metric objects; fastdense's metrics are a
# fixed set, so a table does the same job.
_MAXIMIZED = frozenset(
    {
        "accuracy",
        "acc",
        "binary_accuracy",
        "categorical_accuracy",
        "sparse_categorical_accuracy",
        "top_k_categorical_accuracy",
        "sparse_top_k_categorical_accuracy",
        "auc",
        "prc",
        "precision",
        "recall",
        "f1_score",
        "fbeta_score",
        "r2_score",
        "cosine_similarity",
    }
)
_MINIMIZED = frozenset(
    {
        "loss",
        "mse",
        "mae",
        "mape",
        "msle",
        "mean_squared_error",
        "mean_absolute_error",
        "mean_absolute_percentage_error",
        "mean_squared_logarithmic_error",
        "root_mean_squared_error",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "kl_divergence",
        "poisson",
        "hinge",
        "squared_hinge",
        "categorical_hinge",
        "log_cosh",
    }
)


def _auto_direction(owner, monitor):
    """Returns "min" or "max" for `monitor` in mode "auto", as Keras 3 infers it."""
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name in _MINIMIZED:
        return "min"
    if name in _MAXIMIZED:
        return "max"
    if name.endswith(("accuracy", "_acc", "auc")):
        return "max"
    if name.endswith(("loss", "error", "crossentropy")):
        return "min"
    raise ValueError(
        f"{owner} cannot tell whether `monitor` should be maximized or "
        "minimized. Pass mode='max' to use the highest value or mode='min' to "
        f"use the lowest. Received: monitor={monitor!r}"
    )


def _overrides_every_batch(callback, hooks):
    """Whether `callback` defines one of `hooks` in a way that needs every batch."""
    if isinstance(callback, CallbackList):
        return any(_overrides_every_batch(cb, hooks) for cb in callback.callbacks)
    # Hooks assigned on the instance (LambdaCallback, ModelCheckpoint with an
    # integer save_freq) always count.
    instance_attrs = getattr(callback, "__dict__", {})
    for name in hooks:
        if name in instance_attrs:
            return True
        for klass in type(callback).__mro__:
            if name in klass.__dict__:
                owner = klass
                break
        else:  # pragma: no cover - every Callback defines all hooks
            continue
        if owner is Callback:
            continue
        if owner.__dict__.get("_chunk_tolerant", False) is True:
            continue
        return True
    return False


def _to_float(value):
    if type(value) is float:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class Callback:
    """Base class used to build new callbacks.

    Subclass it and override the hooks you need; pass instances to `fit()`,
    `evaluate()` or `predict()` through `callbacks=[...]`. Set
    `self.model.stop_training = True` to stop training.

    Batch hooks and chunked execution: fastdense runs many batches per
    compiled call. If any callback overrides a train batch hook
    (`on_train_batch_begin/end`, `on_batch_begin/end`), the engine returns to
    Python after every batch so the hooks see each batch; otherwise batch
    hooks are called once per chunk with the index of the chunk's last batch.
    A class whose batch hooks work either way may set the class attribute
    `_chunk_tolerant = True`.

    Attributes:
        model: The model being trained (set by `set_model`).
        params: Dict of training parameters: `verbose`, `epochs`, `steps`.

    Example:

    ```python
    class StopAtLoss(fastdense.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs["loss"] < 0.1:
                self.model.stop_training = True

    model.fit(x, y, epochs=100, callbacks=[StopAtLoss()])
    ```
    """

    model = None
    params = None

    def __init__(self):
        self.model = None
        self.params = None

    def set_params(self, params):
        self.params = params

    def set_model(self, model):
        self.model = model

    def on_batch_begin(self, batch, logs=None):
        """Backwards-compatible alias of `on_train_batch_begin`."""

    def on_batch_end(self, batch, logs=None):
        """Backwards-compatible alias of `on_train_batch_end`."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of an epoch (`epoch` is 0-based); `logs` is empty."""

    def on_epoch_end(self, epoch, logs=None):
        """Called at the end of an epoch with that epoch's results.

        `logs` maps names to python floats, e.g.
        `{"accuracy": 0.81, "loss": 0.54, "val_accuracy": 0.8, "val_loss": 0.56}`.
        """

    def on_train_batch_begin(self, batch, logs=None):
        """Called before a training batch (or chunk of batches); calls `on_batch_begin`."""
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        """Called after a training batch with the epoch's running means so far.

        Calls `on_batch_end`.
        """
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        """Called before an evaluation (or validation) batch."""

    def on_test_batch_end(self, batch, logs=None):
        """Called after an evaluation batch with the running means so far."""

    def on_predict_batch_begin(self, batch, logs=None):
        """Called before a prediction batch."""

    def on_predict_batch_end(self, batch, logs=None):
        """Called after a prediction batch; `logs` holds `outputs`."""

    def on_train_begin(self, logs=None):
        """Called at the start of `fit`."""

    def on_train_end(self, logs=None):
        """Called at the end of `fit` with the last epoch's logs."""

    def on_test_begin(self, logs=None):
        """Called at the start of `evaluate` or of a validation run."""

    def on_test_end(self, logs=None):
        """Called at the end of `evaluate` or of a validation run with its results."""

    def on_predict_begin(self, logs=None):
        """Called at the start of `predict`."""

    def on_predict_end(self, logs=None):
        """Called at the end of `predict`."""


class History(Callback):
    """Records the epoch results of `fit()`.

    `fit()` adds one automatically and returns it; it is also available as
    `model.history`. `history` keeps growing if the same instance is used in
    several `fit()` calls, while `epoch` restarts, as in Keras.

    Attributes:
        history: Dict mapping each log name to a list with one python float
            per epoch, e.g. `{"loss": [0.9, 0.6], "val_loss": [0.8, 0.7]}`.
        epoch: List of the epoch indices recorded by the current `fit()`.
        params: The training parameters (`verbose`, `epochs`, `steps`).

    Example:

    >>> history = model.fit(x, y, epochs=2, verbose=0)  # doctest: +SKIP
    >>> history.history["loss"]  # doctest: +SKIP
    [0.912..., 0.604...]
    """

    _chunk_tolerant = True

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(value)
        if self.model is not None:
            self.model.history = self


class ProgbarLogger(Callback):
    """Prints progress bars and epoch results to stdout.

    `fit()`, `evaluate()` and `predict()` add one when `verbose != 0`. During
    `fit()` it prints `Epoch i/E` before each epoch (when `epochs > 1`) and a
    bar per epoch (see `fastdense._progbar.Progbar` for the format); the
    validation run inside `fit()` prints nothing of its own, its `val_`
    results appear on the epoch's line.

    Example:

    ```python
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ProgbarLogger()])
    ```
    """

    _chunk_tolerant = True

    def __init__(self):
        super().__init__()
        self.verbose = 1
        self.epochs = 1
        self.target = None
        self.seen = 0
        self.progbar = None
        self._called_in_fit = False

    def set_params(self, params):
        super().set_params(params)
        params = params or {}
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def on_train_begin(self, logs=None):
        # Validation inside fit() is reported on the epoch line instead.
        self._called_in_fit = True

    def on_train_end(self, logs=None):
        self._called_in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        self._new_progbar()
        if self.verbose and self.epochs > 1:
            _print(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self._update(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._finalize(logs)

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._new_progbar()

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update(batch, logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize(logs)

    def on_predict_begin(self, logs=None):
        self._new_progbar()

    def on_predict_batch_end(self, batch, logs=None):
        self._update(batch, None)  # the outputs are not for display

    def on_predict_end(self, logs=None):
        self._finalize(None)

    def _new_progbar(self):
        self.seen = 0
        self.progbar = Progbar(target=self.target, verbose=self.verbose)

    def _update(self, batch, logs):
        if self.progbar is None:
            self._new_progbar()
        self.seen = batch + 1
        if self.verbose == 1:
            self.progbar.update(self.seen, logs, finalize=False)

    def _finalize(self, logs):
        if self.progbar is None:
            self._new_progbar()
        if self.target is None:
            self.target = self.seen
            self.progbar.target = self.seen
        self.progbar.update(self.target, logs, finalize=True)


class EarlyStopping(Callback):
    """Stops training when a monitored quantity has stopped improving.

    At the end of each epoch the value of `monitor` is compared with the best
    so far; after `patience` epochs without an improvement of more than
    `min_delta`, `model.stop_training` is set. With
    `restore_best_weights=True` the weights of the best epoch are put back at
    the end of training, whether or not training stopped early.

    Args:
        monitor: Name of the quantity to monitor. Defaults to `"val_loss"`.
        min_delta: Minimum change that counts as an improvement. Defaults
            to `0`.
        patience: Number of epochs without improvement after which training
            stops. Defaults to `0`.
        verbose: `0` (silent) or `1` (print a message when acting).
            Defaults to `0`.
        mode: `"auto"`, `"min"` or `"max"`. `"auto"` infers the direction
            from the name (`loss`, `mse`, ... minimized; `accuracy`, `auc`, ...
            maximized) and raises `ValueError` if it cannot. Defaults to
            `"auto"`.
        baseline: Value to beat. If not `None`, the wait counter is reset
            only by epochs that beat both the best value and the baseline.
            Defaults to `None`.
        restore_best_weights: Whether to restore the weights of the best
            epoch at the end of training. Defaults to `False`.
        start_from_epoch: Number of epochs to ignore before monitoring
            starts (warm-up). Defaults to `0`.

    Attributes:
        stopped_epoch: Index of the epoch at which training was stopped, or
            `0` if it was not.
        best: Best monitored value seen.
        best_epoch: Index of the best epoch.

    Example:

    ```python
    early = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[early])
    ```
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__()
        _check_real("min_delta", min_delta)
        _check_non_negative_int("patience", patience)
        _check_non_negative_int("start_from_epoch", start_from_epoch)
        if baseline is not None:
            _check_real("baseline", baseline)
        self.monitor = monitor
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.verbose = verbose
        self.mode = _check_mode("EarlyStopping", mode)
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._direction = None
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _resolve_direction(self):
        if self._direction is None:
            if self.mode == "auto":
                self._direction = _auto_direction("EarlyStopping", self.monitor)
            else:
                self._direction = self.mode

    def _is_improvement(self, value, reference):
        if reference is None:
            return True
        if self._direction == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self._resolve_direction()
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        self._resolve_direction()
        logs = logs or {}
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                f"Early stopping conditioned on metric `{self.monitor}` which "
                f"is not available. Available metrics are: {','.join(logs)}",
                stacklevel=2,
            )
            return
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                # Copies: get_weights() may return views of live buffers.
                self.best_weights = [
                    np.array(w, copy=True) for w in self.model.get_weights()
                ]
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves the model or its weights during training.

    `filepath` may hold format fields filled with the 1-based epoch number
    and the epoch logs, e.g. `"ckpt-{epoch:02d}-{val_loss:.2f}.keras"`.

    Args:
        filepath: Path to save to (str or `os.PathLike`). Must end in
            `.keras` (full model, `model.save`) or, with
            `save_weights_only=True`, in `.weights.h5` (`model.save_weights`).
        monitor: Quantity compared when `save_best_only=True`. Defaults to
            `"val_loss"`.
        verbose: `0` (silent) or `1` (print a message on each decision).
            Defaults to `0`.
        save_best_only: Save only when `monitor` improves on the best value
            so far. Defaults to `False`.
        save_weights_only: Save only the weights. Defaults to `False`.
        mode: `"auto"`, `"min"` or `"max"`: direction of improvement for
            `save_best_only` (`"auto"` infers it from the name). Defaults to
            `"auto"`.
        save_freq: `"epoch"` to save at the end of each epoch, or a positive
            integer `n` to save every `n` training batches (this makes the
            training loop return to Python after every batch). Defaults to
            `"epoch"`.
        initial_value_threshold: Initial best value for `save_best_only`.
            Defaults to `None`.

    Example:

    ```python
    checkpoint = ModelCheckpoint(
        "best.keras", monitor="val_accuracy", save_best_only=True
    )
    model.fit(x, y, validation_split=0.2, epochs=10, callbacks=[checkpoint])
    ```
    """

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
        initial_value_threshold=None,
    ):
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(
                f"`filepath` must be a string or an os.PathLike. "
                f"Received: filepath={filepath!r}"
            )
        filepath = os.fspath(filepath)
        if not isinstance(filepath, str):
            filepath = os.fsdecode(filepath)
        if save_weights_only:
            if not filepath.endswith(".weights.h5"):
                raise ValueError(
                    "With save_weights_only=True, `filepath` must end in "
                    f"`.weights.h5` (Keras weights format). Received: filepath={filepath!r}"
                )
        elif not filepath.endswith(".keras"):
            raise ValueError(
                "`filepath` must end in `.keras` (Keras model format), or in "
                "`.weights.h5` with save_weights_only=True. "
                f"Received: filepath={filepath!r}"
            )
        if save_freq != "epoch" and not (_is_int(save_freq) and save_freq > 0):
            raise ValueError(
                "`save_freq` must be 'epoch' or a positive integer (a number of "
                f"batches). Received: save_freq={save_freq!r}"
            )
        if initial_value_threshold is not None:
            _check_real("initial_value_threshold", initial_value_threshold)
        self.filepath = filepath
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = _check_mode("ModelCheckpoint", mode)
        self.save_freq = save_freq
        self.best = initial_value_threshold
        self._direction = None
        self._current_epoch = 0
        self._batches_since_save = 0
        self._last_batch_seen = 0
        if save_freq != "epoch":
            # Bound on the instance, so that only checkpoints counting
            # batches make the engine stop after every batch.
            self.on_train_batch_end = self._save_on_batch

    def _resolve_direction(self):
        if self._direction is None and self.save_best_only:
            if self.mode == "auto":
                self._direction = _auto_direction("ModelCheckpoint", self.monitor)
            else:
                self._direction = self.mode
            if self.best is None:
                self.best = math.inf if self._direction == "min" else -math.inf

    def on_train_begin(self, logs=None):
        self._resolve_direction()

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._resolve_direction()
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _save_on_batch(self, batch, logs=None):
        if batch <= self._last_batch_seen:  # a new epoch started
            self._batches_since_save += batch + 1
        else:
            self._batches_since_save += batch - self._last_batch_seen
        self._last_batch_seen = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._current_epoch, batch, logs)
        self.on_batch_end(batch, logs=logs)  # keep the base class's alias call

    def _file_path(self, epoch, batch, logs):
        fields = dict(logs)
        fields["epoch"] = epoch + 1
        if batch is not None and "batch" not in logs:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as e:
            raise KeyError(
                f"`filepath` has the field {{{e.args[0]}}}, which is neither "
                "`epoch` nor a log name; available: "
                f"{', '.join(sorted(fields))}. Received: filepath={self.filepath!r}"
            ) from None

    def _should_save(self, epoch, logs, path):
        if not self.save_best_only:
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: saving model to {path}")
            return True
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                f"Can save best model only with {self.monitor} available.",
                stacklevel=3,
            )
            return True
        best = f"{self.best:.5f}"
        if self._direction == "min":
            improved = current < self.best
        else:
            improved = current > self.best
        if improved:
            if self.verbose > 0:
                _print(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} "
                    f"to {current:.5f}, saving model to {path}"
                )
            self.best = current
            return True
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
        return False

    def _save(self, epoch, batch, logs):
        logs = logs or {}
        path = self._file_path(epoch, batch, logs)
        if not self._should_save(epoch, logs, path):
            return
        if os.path.isdir(path):
            raise IsADirectoryError(
                "`filepath` must name a file, but it names an existing "
                f"directory. Received: filepath={path!r}"
            )
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class ReduceLROnPlateau(Callback):
    """Reduces the learning rate when a monitored quantity stops improving.

    After `patience` epochs without improvement the optimizer's
    `learning_rate` is multiplied by `factor` (not below `min_lr`), then
    `cooldown` epochs pass before counting resumes. The learning rate used
    during each epoch is added to the epoch logs as `learning_rate`.

    Args:
        monitor: Name of the quantity to monitor. Defaults to `"val_loss"`.
        factor: Factor applied to the learning rate, `new_lr = lr * factor`;
            must be in `[0, 1)`. Defaults to `0.1`.
        patience: Number of epochs without improvement before reducing.
            Defaults to `10`.
        verbose: `0` (silent) or `1` (print a message on each reduction).
            Defaults to `0`.
        mode: `"auto"`, `"min"` or `"max"`; `"auto"` maximizes names
            containing `"acc"` and minimizes everything else, as in Keras.
            Defaults to `"auto"`.
        min_delta: Minimum change that counts as an improvement. Defaults
            to `1e-4`.
        cooldown: Number of epochs to wait after a reduction. Defaults to `0`.
        min_lr: Lower bound of the learning rate. Defaults to `0.0`.

    Example:

    ```python
    reduce_lr = ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=5,
                                  min_lr=0.001)
    model.fit(x, y, validation_split=0.2, callbacks=[reduce_lr])
    ```
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
        **kwargs,
    ):
        super().__init__()
        if "epsilon" in kwargs:
            warnings.warn(
                "`epsilon` is deprecated; use `min_delta` instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            min_delta = kwargs.pop("epsilon")
        if kwargs:
            raise TypeError(
                "ReduceLROnPlateau got an unexpected keyword argument. "
                f"Received: {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}"
            )
        if not _is_real(factor) or not 0 <= factor < 1:
            raise ValueError(
                "`factor` must be a number in [0, 1): ReduceLROnPlateau only "
                f"reduces the learning rate. Received: factor={factor!r}"
            )
        _check_real("min_delta", min_delta)
        _check_non_negative_int("patience", patience)
        _check_non_negative_int("cooldown", cooldown)
        if not _is_real(min_lr) or not min_lr >= 0:
            raise ValueError(
                f"`min_lr` must be a non-negative number. Received: min_lr={min_lr!r}"
            )
        self.monitor = monitor
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.mode = _check_mode("ReduceLROnPlateau", mode)
        self.min_delta = min_delta
        self.cooldown = cooldown
        self.min_lr = min_lr
        self._reset()

    def _reset(self):
        self._maximize = self.mode == "max" or (
            self.mode == "auto" and "acc" in self.monitor
        )
        self.best = -math.inf if self._maximize else math.inf
        self.cooldown_counter = 0
        self.wait = 0

    def _improved(self, current):
        if self._maximize:
            return current > self.best + self.min_delta
        return current < self.best - self.min_delta

    def in_cooldown(self):
        """Whether the callback is waiting after a reduction."""
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            logs = {}
        logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                "Learning rate reduction is conditioned on metric "
                f"`{self.monitor}` which is not available. Available metrics "
                f"are: {','.join(logs)}.",
                stacklevel=2,
            )
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best = current
            self.wait = 0
            return
        if self.in_cooldown():
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        old_lr = float(self.model.optimizer.learning_rate)
        # Keras compares with min_lr rounded to float32, the optimizer's dtype.
        if old_lr > np.float32(self.min_lr):
            new_lr = max(old_lr * self.factor, self.min_lr)
            self.model.optimizer.learning_rate = new_lr
            if self.verbose > 0:
                _print(
                    f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning "
                    f"rate to {new_lr}."
                )
            self.cooldown_counter = self.cooldown
            self.wait = 0


def _schedule_arity(schedule):
    """2 if `schedule` accepts (epoch, lr), 1 if only (epoch), None if unknown."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return None
    for args in ((0, 0.1), (0,)):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return len(args)
    return None


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch from a schedule.

    `schedule(epoch, lr)` receives the 0-based epoch index and the current
    learning rate and returns the new one (a float); `schedule(epoch)` is
    accepted too. The learning rate is added to the epoch logs as
    `learning_rate`.

    Args:
        schedule: Function `(epoch, lr) -> float`.
        verbose: `0` (silent) or `1` (print the learning rate each epoch).
            Defaults to `0`.

    Example:

    ```python
    def schedule(epoch, lr):
        return lr if epoch < 10 else lr * 0.9

    model.fit(x, y, epochs=15, callbacks=[LearningRateScheduler(schedule)])
    ```
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                "`schedule` must be a function (epoch, lr) -> learning rate. "
                f"Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self.verbose = verbose
        self._arity = _schedule_arity(schedule)

    def _call_schedule(self, epoch, lr):
        if self._arity == 2:
            return self.schedule(epoch, lr)
        if self._arity == 1:
            return self.schedule(epoch)
        try:  # signature unknown: try the current API, then the old one
            return self.schedule(epoch, lr)
        except TypeError:
            return self.schedule(epoch)

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = self._call_schedule(epoch, float(optimizer.learning_rate))
        if not isinstance(lr, (float, np.floating)) or not (
            math.isfinite(lr) and lr >= 0
        ):
            raise ValueError(
                "`schedule` must return a finite, non-negative float learning "
                f"rate. Received: schedule({epoch}, ...)={lr!r}"
            )
        optimizer.learning_rate = float(lr)
        if self.verbose > 0:
            _print(
                f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning "
                f"rate to {lr}."
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class TerminateOnNaN(Callback):
    """Stops training when the loss becomes NaN or infinite.

    Checks the loss passed to each training batch hook (the epoch's running
    mean, which stays non-finite once one batch was). With chunked
    execution the check, and the batch index in the message, happen once
    per chunk.

    Args:
        raise_error: If `True`, raise `RuntimeError` at once instead of
            setting `model.stop_training`. Defaults to `False`.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[TerminateOnNaN()])
    ```
    """

    _chunk_tolerant = True

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = raise_error

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss):
            return
        if self.raise_error:
            raise RuntimeError(
                f"NaN or Inf loss encountered at batch {batch}. "
                f"Loss value: {loss}. Terminating training immediately."
            )
        _print(f"Batch {batch}: Invalid loss, terminating training")
        self.model.stop_training = True


class CSVLogger(Callback):
    """Writes the results of each epoch to a CSV file.

    The first column is the 0-based `epoch`, then the names of the first
    epoch's logs in sorted order; a missing value is written as `NA`.

    Args:
        filename: Path of the CSV file (str or `os.PathLike`).
        separator: Single character separating the fields. Defaults to `","`.
        append: Append to an existing file (the header is written only if
            the file is empty) instead of overwriting it. Defaults to `False`.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[CSVLogger("training.log")])
    ```
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(
                "`filename` must be a string or an os.PathLike. "
                f"Received: filename={filename!r}"
            )
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(
                "`separator` must be a single character. "
                f"Received: separator={separator!r}"
            )
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys = None
        self.writer = None
        self.csv_file = None
        self.append_header = True

    def on_train_begin(self, logs=None):
        mode = "w"
        self.append_header = True
        if self.append:
            mode = "a"
            if os.path.exists(self.filename):
                with open(self.filename, encoding="utf-8") as f:
                    self.append_header = not f.readline()
        self._close()
        # newline="": the csv module writes its own "\r\n" line ends.
        self.csv_file = open(self.filename, mode, newline="", encoding="utf-8")
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.csv_file is None:
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs)
        if self.writer is None:
            self.writer = csv.writer(self.csv_file, delimiter=self.sep)
            if self.append_header:
                self.writer.writerow(["epoch"] + self.keys)
        self.writer.writerow([epoch] + [logs.get(k, "NA") for k in self.keys])
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        self._close()
        self.writer = None

    def _close(self):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()


class LambdaCallback(Callback):
    """Builds a callback from plain functions.

    Each function is called like the hook it replaces:
    `on_epoch_begin(epoch, logs)`, `on_epoch_end(epoch, logs)`,
    `on_train_begin(logs)`, `on_train_end(logs)`, and
    `on_train_batch_begin(batch, logs=...)`, `on_train_batch_end(batch, logs=...)`.
    Any other hook of `Callback` (e.g. `on_test_end`, `on_batch_end`) can be
    given as a keyword argument. Batch functions make the training loop
    return to Python after every batch.

    Args:
        on_epoch_begin: Called at the start of each epoch.
        on_epoch_end: Called at the end of each epoch.
        on_train_begin: Called at the start of training.
        on_train_end: Called at the end of training.
        on_train_batch_begin: Called before each training batch.
        on_train_batch_end: Called after each training batch.
        **kwargs: Other hooks of `Callback`, by name.

    Example:

    ```python
    print_loss = LambdaCallback(
        on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))
    model.fit(x, y, epochs=3, callbacks=[print_loss])
    ```
    """

    def __init__(
        self,
        on_epoch_begin=None,
        on_epoch_end=None,
        on_train_begin=None,
        on_train_end=None,
        on_train_batch_begin=None,
        on_train_batch_end=None,
        **kwargs,
    ):
        super().__init__()
        unknown = [name for name in kwargs if name not in _HOOKS]
        if unknown:
            raise TypeError(
                "LambdaCallback only accepts Callback hook names as keyword "
                f"arguments ({', '.join(_HOOKS)}). Received: {unknown[0]}="
                f"{kwargs[unknown[0]]!r}"
            )
        hooks = dict(
            on_epoch_begin=on_epoch_begin,
            on_epoch_end=on_epoch_end,
            on_train_begin=on_train_begin,
            on_train_end=on_train_end,
            on_train_batch_begin=on_train_batch_begin,
            on_train_batch_end=on_train_batch_end,
            **kwargs,
        )
        for name, function in hooks.items():
            if function is None:
                continue
            if not callable(function):
                raise TypeError(
                    f"`{name}` must be a function. Received: {name}={function!r}"
                )
            setattr(self, name, function)


def _flatten(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    flat = []
    for i, item in enumerate(callbacks):
        if isinstance(item, (list, tuple)):
            flat.extend(_flatten(item))
        elif isinstance(item, Callback):
            flat.append(item)
        else:
            raise TypeError(
                "Each element of `callbacks` must be a "
                "fastdense.callbacks.Callback instance. "
                f"Received: callbacks[{i}]={item!r}"
            )
    return flat


class CallbackList(Callback):
    """Calls every hook on a list of callbacks, in order.

    Args:
        callbacks: List of `Callback` instances (nested lists are flattened).
        add_history: Append a `History` after the given callbacks unless one
            is present. Defaults to `False`.
        add_progbar: Append a `ProgbarLogger` last unless one is present.
            Defaults to `False`.
        model: The model the callbacks act on; `model.history` is set to
            the `History` callback.
        **params: Training parameters passed to every callback's
            `set_params` (`verbose`, `epochs`, `steps`).

    Example:

    ```python
    cbs = CallbackList([EarlyStopping(monitor="loss")], add_history=True,
                       model=model, verbose=0, epochs=10, steps=100)
    cbs.on_train_begin()
    ```
    """

    def __init__(
        self,
        callbacks=None,
        add_history=False,
        add_progbar=False,
        model=None,
        **params,
    ):
        super().__init__()
        self.callbacks = _flatten(callbacks)
        self._history = next(
            (cb for cb in self.callbacks if isinstance(cb, History)), None
        )
        self._progbar = next(
            (cb for cb in self.callbacks if isinstance(cb, ProgbarLogger)), None
        )
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        self.set_model(model)
        self.set_params(params)

    @property
    def history(self):
        """The `History` callback in the list, or `None`."""
        return self._history

    @property
    def needs_every_batch(self):
        """Whether a callback needs the train batch hooks after every batch."""
        return any(_overrides_every_batch(cb, _TRAIN_BATCH_HOOKS) for cb in self.callbacks)

    @property
    def needs_every_test_batch(self):
        """Whether a callback needs the test batch hooks after every batch."""
        return any(_overrides_every_batch(cb, _TEST_BATCH_HOOKS) for cb in self.callbacks)

    @property
    def needs_every_predict_batch(self):
        """Whether a callback needs the predict batch hooks after every batch."""
        return any(
            _overrides_every_batch(cb, _PREDICT_BATCH_HOOKS) for cb in self.callbacks
        )

    def set_model(self, model):
        if model is None:
            return
        self.model = model
        if self._history is not None:
            model.history = self._history
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        self.params = params
        if params:
            for callback in self.callbacks:
                callback.set_params(params)

    @staticmethod
    def _batch_logs(logs):
        # A fresh dict of floats, sorted by name, as Keras passes batch logs.
        if not logs:
            return {}
        return {name: _to_float(logs[name]) for name in sorted(logs)}

    @staticmethod
    def _result_logs(logs):
        # Normalise in place (callers may rely on seeing keys added by
        # callbacks): floats; training names sorted, then `val_` names sorted.
        if logs is None:
            return {}
        if logs:
            items = sorted(logs.items(), key=lambda kv: (kv[0].startswith("val_"), kv[0]))
            logs.clear()
            logs.update((name, _to_float(value)) for name, value in items)
        return logs

    def on_train_begin(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_train_end(self, logs=None):
        logs = self._result_logs(logs)
        for callback in self.callbacks:
            callback.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = self._result_logs(logs)
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_batch_begin(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_batch_begin(batch, logs=logs)

    def on_batch_end(self, batch, logs=None):
        logs = self._batch_logs(logs)
        for callback in self.callbacks:
            callback.on_batch_end(batch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_train_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        logs = self._batch_logs(logs)
        for callback in self.callbacks:
            callback.on_train_batch_end(batch, logs=logs)

    def on_test_begin(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_test_begin(logs)

    def on_test_end(self, logs=None):
        logs = self._result_logs(logs)
        for callback in self.callbacks:
            callback.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_test_batch_begin(batch, logs=logs)

    def on_test_batch_end(self, batch, logs=None):
        logs = self._batch_logs(logs)
        for callback in self.callbacks:
            callback.on_test_batch_end(batch, logs=logs)

    def on_predict_begin(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_predict_begin(logs)

    def on_predict_end(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_predict_end(logs)

    def on_predict_batch_begin(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_predict_batch_begin(batch, logs=logs)

    def on_predict_batch_end(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_predict_batch_end(batch, logs=logs)
