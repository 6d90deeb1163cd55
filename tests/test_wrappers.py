"""fastdense.wrappers: Keras 3's scikit-learn wrappers, checked with scikit-learn's own
`check_estimator`, and in Pipeline, cross_val_score and GridSearchCV(n_jobs=2)."""
import sys

import cloudpickle
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs, make_regression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import fastdense
from fastdense import Input, Sequential
from fastdense.layers import Dense
from fastdense.wrappers import SKLearnClassifier, SKLearnRegressor, SKLearnTransformer

# joblib's worker processes get this module's functions by value: pytest may import the file as
# "tests.test_wrappers", which they cannot import.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

QUIET = {"verbose": 0}


def build(X, y, loss="categorical_crossentropy", layers=(10,), learning_rate=0.01):
    """Keras's test model: relu hidden layers, then one unit per target column."""
    model = Sequential([Input((X.shape[1],))] + [Dense(u, activation="relu") for u in layers]
                       + [Dense(y.shape[1], activation="softmax" if loss == "categorical_crossentropy"
                                else None)])
    model.compile(optimizer=fastdense.optimizers.Adam(learning_rate), loss=loss)
    return model


# Checks that cannot pass, with the reason (Keras 3 lists the same kind in its own tests).
_REPRODUCIBLE_FIT = ("compares two fits on the same data: fastdense, like Keras, draws initial "
                     "weights and shuffles from its global generator, so two fits differ")
EXPECTED_FAILED_CHECKS = {
    "SKLearnClassifier": {
        "check_classifier_data_not_an_array": _REPRODUCIBLE_FIT,
        "check_supervised_y_2d": _REPRODUCIBLE_FIT,
        "check_fit_idempotent": _REPRODUCIBLE_FIT,
        "check_classifiers_classes": "a few epochs on a tiny data set sometimes miss a class",
        "check_classifiers_one_label_sample_weights": "zero sample weights still count in the mean "
                                                      "loss's batch size, as in Keras",
    },
    "SKLearnRegressor": {
        "check_regressor_data_not_an_array": _REPRODUCIBLE_FIT,
        "check_supervised_y_2d": _REPRODUCIBLE_FIT,
        "check_regressors_int": _REPRODUCIBLE_FIT,
        "check_fit_idempotent": _REPRODUCIBLE_FIT,
    },
    "SKLearnTransformer": {
        "check_fit_idempotent": _REPRODUCIBLE_FIT,
    },
}
# Checks scikit-learn itself skips here, and why.
ALLOWED_SKIPS = ("non deterministic",  # tag non_deterministic (the reason above)
                 "SCIPY_ARRAY_API is not set",  # array-API inputs are out of scope
                 "pandas is not installed")


@pytest.mark.parametrize("estimator", [
    SKLearnClassifier(build, model_kwargs={"loss": "categorical_crossentropy", "layers": (20, 20)},
                      fit_kwargs={"epochs": 5, "verbose": 0}),
    SKLearnRegressor(build, model_kwargs={"loss": "mse"}, fit_kwargs=QUIET),
    SKLearnTransformer(build, model_kwargs={"loss": "mse"}, fit_kwargs=QUIET),
], ids=lambda e: type(e).__name__)
def test_check_estimator(estimator):
    fastdense.utils.set_random_seed(0)
    expected = EXPECTED_FAILED_CHECKS[type(estimator).__name__]
    results = check_estimator(estimator, expected_failed_checks=expected, on_skip=None,
                              on_fail=None)
    assert len(results) > 30
    unexpected = []
    for r in results:
        name, status = r["check_name"], r["status"]
        if status == "passed" or (status == "xfail" and name in expected):
            continue
        if status == "skipped" and any(s in str(r["exception"]) for s in ALLOWED_SKIPS):
            continue
        unexpected.append((name, status, str(r["exception"])[:300]))
    assert not unexpected
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_estimators_pickle", "check_n_features_in", "check_fit2d_1sample",
            "check_estimators_dtypes", "check_dont_overwrite_parameters"} <= passed


def _blobs(n=120, classes=3, seed=0):
    X, y = make_blobs(n_samples=n, centers=classes, n_features=4, cluster_std=0.6, random_state=seed)
    return X, y


def test_classifier_encodes_targets_as_keras_does():
    seen = {}

    def spy(X, y, **kwargs):
        seen["y"] = y
        return build(X, y, **kwargs)

    X, y = _blobs()
    labels = np.array(["ant", "bee", "cat"])[y]
    clf = SKLearnClassifier(spy, model_kwargs={"learning_rate": 0.05},
                            fit_kwargs={"epochs": 40, "verbose": 0}).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, ["ant", "bee", "cat"])
    # one-hot columns in the order of classes_
    np.testing.assert_array_equal(seen["y"], np.eye(3)[y])
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[np.argmax(proba, axis=1)])
    assert clf.score(X, labels) > 0.9
    assert list(clf.history_) == ["loss"] and len(clf.history_["loss"]) == 40 and clf.epoch_ == 40
    assert clf.n_features_in_ == 4


def test_binary_classifier_has_two_softmax_columns():
    X, y = _blobs(classes=2)
    clf = SKLearnClassifier(build, fit_kwargs={"epochs": 5, "verbose": 0}).fit(X, y * 3 + 1)
    np.testing.assert_array_equal(clf.classes_, [1, 4])
    assert clf.model_.output_shape == (None, 2)
    assert set(clf.predict(X)) <= {1, 4}


def test_regressor_keeps_target_dimensions():
    X, y = make_regression(n_samples=80, n_features=3, noise=0.1, random_state=0)
    y = y / y.std()
    reg = SKLearnRegressor(build, model_kwargs={"loss": "mse", "learning_rate": 0.05},
                           fit_kwargs={"epochs": 60, "verbose": 0}).fit(X, y)
    assert reg.predict(X).shape == (80,)
    assert reg.score(X, y) > 0.9
    Y = np.stack([y, -y], axis=1)
    reg2 = SKLearnRegressor(build, model_kwargs={"loss": "mse"}, fit_kwargs=QUIET).fit(X, Y)
    assert reg2.predict(X).shape == (80, 2) and reg2.model_.output_shape == (None, 2)


def test_transformer_returns_the_models_output():
    X, y = _blobs()
    trs = SKLearnTransformer(build, model_kwargs={"loss": "mse", "layers": (8,)}, fit_kwargs=QUIET)
    out = trs.fit_transform(X, y)
    assert out.shape == (len(X), 1)
    np.testing.assert_array_equal(out, trs.model_.predict(X, verbose=0))


def test_model_instance_is_copied_and_warm_start_continues():
    X, y = _blobs()
    given = build(X, np.eye(3)[y])
    before = given.get_weights()
    clf = SKLearnClassifier(given, fit_kwargs={"epochs": 2, "verbose": 0}).fit(X, y)
    for a, b in zip(before, given.get_weights()):  # the parameter is never trained
        np.testing.assert_array_equal(a, b)
    assert given.optimizer.iterations == 0 and clf.model_ is not given
    # warm_start=False: a fresh copy with new initial weights, the same compile settings
    assert any(np.any(a != b) for a, b in zip(before, clf.model_.get_weights()))
    assert type(clf.model_.optimizer) is type(given.optimizer)
    first = clf.model_
    clf.fit(X, y)
    assert clf.model_ is not first

    warm = SKLearnClassifier(given, warm_start=True, fit_kwargs={"epochs": 1, "verbose": 0})
    warm.fit(X, y)
    steps = warm.model_.optimizer.iterations
    kept = warm.model_
    warm.fit(X, y)
    assert warm.model_ is kept and warm.model_.optimizer.iterations == 2 * steps
    assert given.optimizer.iterations == 0


def test_fit_kwargs_are_not_modified_and_fit_arguments_win():
    X, y = _blobs()
    fit_kwargs = {"epochs": 3, "verbose": 0}
    clf = SKLearnClassifier(build, fit_kwargs=fit_kwargs)
    clf.fit(X, y, epochs=2)
    assert len(clf.history_["loss"]) == 2 and fit_kwargs == {"epochs": 3, "verbose": 0}
    clone(clf).fit(X, y)
    assert clf.get_params()["fit_kwargs"] is fit_kwargs


def test_clear_errors():
    X, y = _blobs()

    def uncompiled(X, y):
        return Sequential([Dense(3, activation="softmax")])

    with pytest.raises(RuntimeError, match="needs to be compiled"):
        SKLearnClassifier(uncompiled).fit(X, y)
    with pytest.raises(TypeError, match="Received: model of type int"):
        SKLearnRegressor(42).fit(X, y)
    with pytest.raises(TypeError, match="Received: the value returned"):
        SKLearnRegressor(lambda X, y: "model").fit(X, y)
    with pytest.raises(ValueError, match="binary and multiclass"):
        SKLearnClassifier(build).fit(X, y + 0.5)
    with pytest.raises(ValueError, match="only one class"):
        SKLearnClassifier(build).fit(X, np.zeros(len(X)))
    with pytest.raises(TypeError, match="fit_kwargs"):
        SKLearnClassifier(build, fit_kwargs=[("epochs", 1)]).fit(X, y)


def test_wrappers_in_a_pipeline_and_cross_val_score():
    X, y = _blobs(n=90)
    X = X * 100 + 50  # needs the scaler
    clf = make_pipeline(StandardScaler(), SKLearnClassifier(
        build, model_kwargs={"learning_rate": 0.05}, fit_kwargs={"epochs": 30, "verbose": 0}))
    scores = cross_val_score(clf, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    # a transformer feeding a scikit-learn model
    pipe = make_pipeline(StandardScaler(), SKLearnTransformer(
        build, model_kwargs={"loss": "mse", "layers": (8,)}, fit_kwargs=QUIET),
        LogisticRegression())
    pipe.fit(X, y)
    assert pipe.predict(X).shape == (90,)
    reg = make_pipeline(StandardScaler(), SKLearnRegressor(
        build, model_kwargs={"loss": "mse"}, fit_kwargs=QUIET))
    assert cross_val_score(reg, X, y.astype(float), cv=3).shape == (3,)


def test_grid_search_with_two_processes():
    X, y = _blobs(n=90)
    given = build(X, np.eye(3)[y], learning_rate=0.05)
    # model instances and fit_kwargs travel to loky's worker processes pickled (.keras bytes)
    search = GridSearchCV(SKLearnClassifier(given, fit_kwargs=QUIET),
                          {"fit_kwargs": [{"epochs": 0, "verbose": 0}, {"epochs": 40, "verbose": 0}]},
                          cv=3, n_jobs=2)
    search.fit(X, y)
    assert search.best_params_["fit_kwargs"]["epochs"] == 40
    assert search.best_score_ > 0.85
    assert isinstance(search.best_estimator_.model_, Sequential)
    np.testing.assert_array_equal(search.predict(X[:5]), search.best_estimator_.predict(X[:5]))


def test_grid_search_over_model_kwargs_with_two_processes():
    X, y = _blobs(n=90)
    search = GridSearchCV(SKLearnClassifier(build, fit_kwargs={"epochs": 30, "verbose": 0}),
                          {"model_kwargs": [{"learning_rate": 1e-5}, {"learning_rate": 0.05}]},
                          cv=3, n_jobs=2)
    search.fit(X, y)
    assert search.best_params_["model_kwargs"] == {"learning_rate": 0.05}


def test_optional_dependencies_load_on_first_use(monkeypatch):
    import subprocess
    import sys

    code = ("import sys, fastdense; assert 'sklearn' not in sys.modules and 'onnx' not in sys.modules; "
            "fastdense.wrappers.SKLearnRegressor; assert 'sklearn' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    import fastdense.wrappers as wrappers

    monkeypatch.setattr(wrappers, "_SKLEARN", False)  # as if scikit-learn were not installed
    with pytest.raises(ImportError, match=r'pip install "fastdense\[sklearn\]"'):
        SKLearnClassifier(build)
