"""scikit-learn estimators around fastdense models: Keras 3's `keras.wrappers`.

`SKLearnClassifier`, `SKLearnRegressor` and `SKLearnTransformer` take Keras 3's arguments
(`model`, `warm_start`, `model_kwargs`, `fit_kwargs`) and behave as Keras's do, so they work in
`Pipeline`, `cross_val_score` and `GridSearchCV` (also with `n_jobs`: models pickle through their
`.keras` bytes). scikit-learn is an optional dependency: `pip install "fastdense[sklearn]"`.

Differences from Keras 3, all of them fixes of what Keras leaves undefined:
- `warm_start` is honoured (Keras ignores it): `False` starts every `fit` from a fresh copy of
  the given model with new initial weights (Keras's `clone_model`) and the same compile settings;
  `True` continues the previous fit's model (the first fit starts from the given model's weights).
  The model passed in is never modified.
- `predict`, `predict_proba` and `transform` are silent (`verbose=0`); `fit` prints what
  `model.fit` prints unless `fit_kwargs` say otherwise (e.g. `{"verbose": 0}`).
"""
import copy

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
except ImportError:  # the classes still import; creating one says what to install
    _SKLEARN = False

    class BaseEstimator:
        pass

    class ClassifierMixin:
        pass

    class RegressorMixin:
        pass

    class TransformerMixin:
        pass
else:
    _SKLEARN = True

__all__ = ["SKLearnClassifier", "SKLearnRegressor", "SKLearnTransformer"]


def _require_sklearn(owner):
    if not _SKLEARN:
        raise ImportError(f"fastdense.wrappers.{owner} needs scikit-learn: install it with "
                          '`pip install "fastdense[sklearn]"` (or `pip install scikit-learn`).')


def _fresh_copy(model):
    """Keras's `clone_model` plus the compile settings: the same architecture with new initial
    weights (each layer's initializer draws again), an optimizer with no state, the same loss
    and metrics."""
    from .models import Sequential

    clone = Sequential.from_config(model.get_config())
    if model.compiled:
        opt = type(model.optimizer).from_config(model.optimizer.get_config())
        clone.compile(optimizer=opt, loss=copy.deepcopy(model.loss),
                      metrics=copy.deepcopy(list(model._metric_ids)))
    return clone


def _check_model(model, source):
    from .models import Sequential

    if not isinstance(model, Sequential):
        raise TypeError("`model` must be a fastdense model or a callable returning one. "
                        f"Received: {source} of type {type(model).__name__}")
    if not model.compiled or model.loss is None or model.optimizer is None:
        raise RuntimeError("Given model needs to be compiled, and have a loss and an optimizer. "
                           f"Received: an uncompiled model ({model.name!r})")


class _SKLBase(BaseEstimator):
    """What the three wrappers share: building the model, `fit`, `predict`.

    Args:
        model: a compiled fastdense model, or a callable `model(X=X, y=y, **model_kwargs)`
            returning one (`y` as the model will see it: one-hot for the classifier, 2-D for the
            others).
        warm_start: with `False`, every `fit` trains a fresh copy of `model` (new initial
            weights); with `True`, `fit` continues the previous fit's model.
        model_kwargs: keyword arguments for `model` when it is a callable.
        fit_kwargs: keyword arguments for `model.fit` (`epochs`, `batch_size`, `verbose`, ...);
            those given to `fit` itself take precedence.

    Attributes:
        model_: the fitted fastdense model.
        history_: the `history.history` dict of the last fit.
    """

    def __init__(self, model, warm_start=False, model_kwargs=None, fit_kwargs=None):
        _require_sklearn(type(self).__name__)
        self.model = model
        self.warm_start = warm_start
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = True  # initial weights and shuffling are random
        return tags

    @property
    def epoch_(self):
        """How many epochs the last fit ran."""
        history = getattr(self, "history_", None) or {}
        return len(next(iter(history.values()), []))

    def _get_model(self, X, y):
        from .models import Sequential

        if self.warm_start and getattr(self, "model_", None) is not None:
            return self.model_
        if isinstance(self.model, Sequential):
            model = copy.deepcopy(self.model) if self.warm_start else _fresh_copy(self.model)
            _check_model(model, "model")
            return model
        if not callable(self.model):
            raise TypeError("`model` must be a fastdense model or a callable returning one. "
                            f"Received: model of type {type(self.model).__name__}")
        if self.model_kwargs is not None and not isinstance(self.model_kwargs, dict):
            raise TypeError("`model_kwargs` must be a dict or None. "
                            f"Received: model_kwargs={self.model_kwargs!r}")
        model = self.model(X=X, y=y, **(self.model_kwargs or {}))
        _check_model(model, "the value returned by `model(X, y, ...)`")
        return model

    def _fit_kwargs(self, kwargs):
        if self.fit_kwargs is not None and not isinstance(self.fit_kwargs, dict):
            raise TypeError(f"`fit_kwargs` must be a dict or None. Received: fit_kwargs={self.fit_kwargs!r}")
        merged = dict(self.fit_kwargs or {})  # never modified: it is a parameter
        merged.update(kwargs)
        return merged

    def fit(self, X, y, **kwargs):
        """Trains a model on `X`, `y`; keyword arguments go to `model.fit`. Returns `self`."""
        from sklearn.utils.validation import validate_data

        X, y = validate_data(self, X, y, **self._check_y_args)
        y = self._process_target(y, reset=True)
        fit_kwargs = self._fit_kwargs(kwargs)
        model = self._get_model(X, y)
        self.history_ = model.fit(X, y, **fit_kwargs).history
        self.model_ = model
        return self

    def _predict_raw(self, X):
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.model_.predict(X, verbose=0)

    def predict(self, X):
        """The model's predictions for `X` (classes for the classifier)."""
        return self._reverse_process_target(self._predict_raw(X))

    # Regressor and transformer: targets as the model sees them are 2-D; 1-D ones come back 1-D.
    _check_y_args = {"multi_output": True, "y_numeric": True}

    def _process_target(self, y, reset=False):
        from sklearn.utils.multiclass import type_of_target

        type_of_target(y, input_name="y", raise_unknown=True)
        if reset:
            self._y_ndim = y.ndim
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _reverse_process_target(self, y):
        return y[:, 0] if self._y_ndim == 1 and y.ndim == 2 and y.shape[1] == 1 else y


class SKLearnClassifier(ClassifierMixin, _SKLBase):
    """scikit-learn classifier around a fastdense model (Keras 3's `SKLearnClassifier`).

    Targets are one-hot encoded before `model.fit` (binary ones too: two columns), so the model
    ends in a softmax layer of one unit per class, trained with categorical crossentropy;
    `predict` returns the class of the largest output, `predict_proba` the outputs.

    Args:
        model, warm_start, model_kwargs, fit_kwargs: see `SKLearnRegressor`.

    Attributes:
        model_: the fitted fastdense model.
        history_: the `history.history` dict of the last fit.
        classes_: the class labels, sorted (column `k` of `predict_proba` is `classes_[k]`).

    Example:
    >>> def build(X, y, hidden=16):
    ...     model = Sequential([Input((X.shape[1],)), Dense(hidden, activation="relu"),
    ...                         Dense(y.shape[1], activation="softmax")])
    ...     model.compile(optimizer="adam", loss="categorical_crossentropy")
    ...     return model
    >>> clf = SKLearnClassifier(build, model_kwargs={"hidden": 32}, fit_kwargs={"epochs": 20, "verbose": 0})
    >>> clf.fit(X, y).predict(X[:3])
    """

    _check_y_args = {"multi_output": False, "y_numeric": False}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # a few epochs on the checks' tiny data sets
        return tags

    def _process_target(self, y, reset=False):
        from sklearn.utils.multiclass import type_of_target

        target_type = type_of_target(y, input_name="y", raise_unknown=True)
        if target_type not in ("binary", "multiclass"):
            raise ValueError("Only binary and multiclass target types are supported. "
                             f"Received: a target of type {target_type!r}")
        if reset:
            self.classes_ = np.unique(y)
            if len(self.classes_) == 1:
                raise ValueError("Classifier can't train when only one class is present. "
                                 f"Received: y with the single class {self.classes_[0]!r}")
        columns = np.searchsorted(self.classes_, y)
        columns = np.minimum(columns, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[columns], y):
            raise ValueError(f"`y` holds labels the classifier was not fitted on. Received: "
                             f"{np.setdiff1d(y, self.classes_)[:5].tolist()}")
        onehot = np.zeros((len(y), len(self.classes_)))
        onehot[np.arange(len(y)), columns] = 1.0
        return onehot

    def _reverse_process_target(self, y):
        return self.classes_[np.argmax(y, axis=1)]

    def predict_proba(self, X):
        """The model's outputs for `X`: one column per class of `classes_`."""
        return self._predict_raw(X)


class SKLearnRegressor(RegressorMixin, _SKLBase):
    """scikit-learn regressor around a fastdense model (Keras 3's `SKLearnRegressor`).

    Args:
        model: a compiled fastdense model, or a callable `model(X=X, y=y, **model_kwargs)`
            returning one; `y` is 2-D, `(n, 1)` for a 1-D target. A model given as an instance
            is copied before fitting (new initial weights, see `warm_start`), never modified.
        warm_start: with `False` (default), every `fit` trains a fresh copy of `model`; with
            `True`, `fit` continues the previous fit's model (the first fit starts from the
            given model's current weights and optimizer state).
        model_kwargs: keyword arguments for `model` when it is a callable.
        fit_kwargs: keyword arguments for `model.fit` (`epochs`, `batch_size`, `verbose`, ...);
            those given to `fit` itself take precedence.

    Attributes:
        model_: the fitted fastdense model.
        history_: the `history.history` dict of the last fit.

    A 1-D target gives 1-D predictions.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True
        return tags


class SKLearnTransformer(TransformerMixin, _SKLBase):
    """scikit-learn transformer around a fastdense model (Keras 3's `SKLearnTransformer`):
    `transform(X)` returns the model's output, e.g. the last hidden layer's activations of a
    model trained to produce an embedding. `fit(X, y)` trains it as `SKLearnRegressor` does.

    Args:
        model, warm_start, model_kwargs, fit_kwargs: see `SKLearnRegressor`.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # outputs have the model's float type
        return tags

    def transform(self, X):
        """The model's outputs for `X`, `(n_samples, units)`."""
        return self._predict_raw(X)
