"""Tests of fastdense.callbacks against Keras 3's callback semantics.

A small fake model stands in for Sequential: it has exactly the interface
the callbacks may use (stop_training, get/set_weights, save, save_weights,
optimizer.learning_rate).
"""

import math
import os

import numpy as np
import pytest

from fastdense import _progbar, callbacks
from fastdense.callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
    TerminateOnNaN,
)


class FakeOptimizer:
    def __init__(self, learning_rate=0.01):
        self.learning_rate = learning_rate


class FakeModel:
    """Weights live in one flat buffer, and get_weights returns views of it."""

    def __init__(self, learning_rate=0.01):
        self.stop_training = False
        self.optimizer = FakeOptimizer(learning_rate)
        self._flat = np.zeros(3)
        self.saved = []
        self.set_weights_calls = 0

    def get_weights(self):
        return [self._flat[:2], self._flat[2:]]

    def set_weights(self, weights):
        self.set_weights_calls += 1
        self._flat[:2] = weights[0]
        self._flat[2:] = weights[1]

    def train_one_epoch(self, value):
        self._flat[:] = value  # in place, like a kernel updating the buffer

    def save(self, path):
        self.saved.append(("save", path))

    def save_weights(self, path):
        self.saved.append(("save_weights", path))


def fit(callback, epoch_logs, model=None, initial_epoch=0):
    """Drives `callback` like fit() does; returns the epochs that ran."""
    model = model or FakeModel()
    cbs = CallbackList([callback], model=model, verbose=0, epochs=len(epoch_logs), steps=1)
    model.stop_training = False
    ran = []
    cbs.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, len(epoch_logs)):
        cbs.on_epoch_begin(epoch)
        model.train_one_epoch(epoch)
        logs = dict(epoch_logs[epoch])
        cbs.on_epoch_end(epoch, logs)
        ran.append(epoch)
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return ran


def losses(*values, name="loss"):
    return [{name: float(v)} for v in values]


# --------------------------------------------------------------------------
# Callback base class and CallbackList


def test_base_train_batch_hooks_call_the_aliases():
    seen = []

    class Legacy(Callback):
        def on_batch_begin(self, batch, logs=None):
            seen.append(("begin", batch))

        def on_batch_end(self, batch, logs=None):
            seen.append(("end", batch, logs))

    cb = Legacy()
    cb.on_train_batch_begin(3)
    cb.on_train_batch_end(3, {"loss": 1.0})
    assert seen == [("begin", 3), ("end", 3, {"loss": 1.0})]


def test_callback_without_super_init_still_works():
    class NoInit(Callback):
        def __init__(self):
            pass

    cb = NoInit()
    cbs = CallbackList([cb], model=FakeModel(), verbose=0, epochs=1, steps=1)
    assert cb.model is cbs.model
    assert cb.params == {"verbose": 0, "epochs": 1, "steps": 1}


def test_callback_list_order_model_and_params():
    model = FakeModel()
    early = EarlyStopping(monitor="loss")
    cbs = CallbackList(
        [early], add_history=True, add_progbar=True, model=model, verbose=1, epochs=3, steps=10
    )
    # Keras appends History after the user's callbacks and ProgbarLogger last.
    assert [type(cb) for cb in cbs.callbacks] == [EarlyStopping, History, ProgbarLogger]
    assert model.history is cbs.history is cbs.callbacks[1]
    for cb in cbs.callbacks:
        assert cb.model is model
        assert cb.params == {"verbose": 1, "epochs": 3, "steps": 10}


def test_callback_list_reuses_given_history_and_progbar():
    history, progbar = History(), ProgbarLogger()
    cbs = CallbackList([progbar, history], add_history=True, add_progbar=True)
    assert cbs.callbacks == [progbar, history]
    assert cbs.history is history


def test_callback_list_flattens_nested_lists_and_single_callback():
    a, b, c = Callback(), Callback(), Callback()
    assert CallbackList([a, [b, (c,)]]).callbacks == [a, b, c]
    assert CallbackList(a).callbacks == [a]
    assert CallbackList(None).callbacks == []


def test_dispatch_order_and_arguments():
    calls = []

    class Recorder(Callback):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_epoch_end(self, epoch, logs=None):
            calls.append((self.name, epoch, dict(logs)))

    cbs = CallbackList([Recorder("a"), Recorder("b")])
    cbs.on_epoch_end(4, {"loss": 1.0})
    assert calls == [("a", 4, {"loss": 1.0}), ("b", 4, {"loss": 1.0})]


def test_batch_logs_are_sorted_python_floats():
    received = []

    class Recorder(Callback):
        def on_train_batch_end(self, batch, logs=None):
            received.append(logs)

        def on_test_batch_end(self, batch, logs=None):
            received.append(logs)

    cbs = CallbackList([Recorder()])
    cbs.on_train_batch_end(0, {"loss": np.float32(0.5), "accuracy": np.float64(0.25)})
    cbs.on_test_batch_end(0, {"loss": np.float32(0.5), "accuracy": 1})
    for logs in received:
        assert list(logs) == ["accuracy", "loss"]
        assert all(type(v) is float for v in logs.values())


def test_epoch_logs_normalised_in_place_and_shared():
    class AddsKey(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["learning_rate"] = 0.5

    history = History()
    cbs = CallbackList([AddsKey(), history], model=FakeModel())
    logs = {"val_loss": np.float32(0.5), "loss": np.float64(0.25), "accuracy": 0.75,
            "val_accuracy": np.float32(0.5)}
    cbs.on_train_begin()
    cbs.on_epoch_end(0, logs)
    # Keras order: training names sorted, then `val_` names sorted; keys added by
    # a callback are seen by the callbacks after it (and by the caller).
    assert list(logs) == ["accuracy", "loss", "val_accuracy", "val_loss", "learning_rate"]
    assert list(history.history) == list(logs)
    assert all(type(v[0]) is float for v in history.history.values())


def test_lambda_hooks_are_called_like_keras():
    calls = []
    cb = LambdaCallback(
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, logs["loss"])),
        on_train_begin=lambda logs: calls.append("train_begin"),
        on_train_end=lambda logs: calls.append("train_end"),
        on_train_batch_begin=lambda batch, logs: calls.append(("batch_begin", batch)),
        on_train_batch_end=lambda batch, logs: calls.append(("batch_end", batch, logs["loss"])),
        on_test_end=lambda logs: calls.append(("test_end", logs["loss"])),
    )
    cbs = CallbackList([cb], model=FakeModel())
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    cbs.on_train_batch_begin(0)
    cbs.on_train_batch_end(0, {"loss": 2.0})
    cbs.on_test_begin()
    cbs.on_test_end({"loss": 3.0})
    cbs.on_epoch_end(0, {"loss": 1.0})
    cbs.on_train_end({"loss": 1.0})
    assert calls == [
        "train_begin",
        ("epoch_begin", 0),
        ("batch_begin", 0),
        ("batch_end", 0, 2.0),
        ("test_end", 3.0),
        ("epoch_end", 0, 1.0),
        "train_end",
    ]


def test_lambda_keras2_on_batch_end_runs_through_train_batch_end():
    seen = []
    cbs = CallbackList([LambdaCallback(on_batch_end=lambda batch, logs: seen.append(batch))])
    cbs.on_train_batch_end(7, {"loss": 1.0})
    assert seen == [7]


# --------------------------------------------------------------------------
# needs_every_batch: which callbacks force one Python return per batch


class OnTrainBatchEnd(Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


class OnTrainBatchBegin(Callback):
    def on_train_batch_begin(self, batch, logs=None):
        pass


class OnBatchBegin(Callback):
    def on_batch_begin(self, batch, logs=None):
        pass


class OnBatchEnd(Callback):
    def on_batch_end(self, batch, logs=None):
        pass


class EpochOnly(Callback):
    def on_epoch_end(self, epoch, logs=None):
        pass


class NaNSubclassOwnBatchHook(TerminateOnNaN):
    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)


class NaNSubclassTrainBatchHook(TerminateOnNaN):
    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)


class NaNSubclassEpochHook(TerminateOnNaN):
    def on_epoch_end(self, epoch, logs=None):
        pass


class ProgbarSubclassBatchHook(ProgbarLogger):
    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)


class DeclaredTolerant(Callback):
    _chunk_tolerant = True

    def on_train_batch_end(self, batch, logs=None):
        pass


class OnTestBatchEnd(Callback):
    def on_test_batch_end(self, batch, logs=None):
        pass


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: [], False),
        (lambda: [History(), ProgbarLogger(), TerminateOnNaN()], False),
        (lambda: [EarlyStopping(), ReduceLROnPlateau(), CSVLogger("x.csv")], False),
        (lambda: [LearningRateScheduler(lambda e, lr: lr)], False),
        (lambda: [ModelCheckpoint("m.keras")], False),
        (lambda: [ModelCheckpoint("m.keras", save_freq=5)], True),
        (lambda: [EpochOnly()], False),
        (lambda: [OnTrainBatchEnd()], True),
        (lambda: [OnTrainBatchBegin()], True),
        (lambda: [OnBatchBegin()], True),
        (lambda: [OnBatchEnd()], True),
        (lambda: [History(), OnBatchEnd()], True),
        (lambda: [NaNSubclassOwnBatchHook()], True),
        (lambda: [NaNSubclassTrainBatchHook()], True),
        (lambda: [NaNSubclassEpochHook()], False),
        (lambda: [ProgbarSubclassBatchHook()], True),
        (lambda: [DeclaredTolerant()], False),
        (lambda: [OnTestBatchEnd()], False),
        (lambda: [LambdaCallback(on_epoch_end=lambda e, logs: None)], False),
        (lambda: [LambdaCallback(on_train_batch_end=lambda b, logs: None)], True),
        (lambda: [LambdaCallback(on_batch_begin=lambda b, logs: None)], True),
        (lambda: [CallbackList([OnBatchEnd()])], True),
        (lambda: [CallbackList([TerminateOnNaN()])], False),
    ],
)
def test_needs_every_batch(make, expected):
    cbs = CallbackList(make(), add_history=True, add_progbar=True)
    assert cbs.needs_every_batch is expected


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: [TerminateOnNaN(), EarlyStopping()], False),
        (lambda: [OnTrainBatchEnd()], False),
        (lambda: [OnTestBatchEnd()], True),
        (lambda: [LambdaCallback(on_test_batch_begin=lambda b, logs: None)], True),
    ],
)
def test_needs_every_test_batch(make, expected):
    cbs = CallbackList(make(), add_history=True, add_progbar=True)
    assert cbs.needs_every_test_batch is expected


def test_needs_every_predict_batch():
    class OnPredictBatchEnd(Callback):
        def on_predict_batch_end(self, batch, logs=None):
            pass

    assert not CallbackList([], add_progbar=True).needs_every_predict_batch
    assert CallbackList([OnPredictBatchEnd()]).needs_every_predict_batch


# --------------------------------------------------------------------------
# History


def test_history_records_epochs_and_sets_model_history():
    model = FakeModel()
    history = History()
    fit(history, [{"loss": 1.0, "val_loss": 2.0}, {"loss": 0.5, "val_loss": 1.5}], model)
    assert history.history == {"loss": [1.0, 0.5], "val_loss": [2.0, 1.5]}
    assert history.epoch == [0, 1]
    assert model.history is history
    assert history.params == {"verbose": 0, "epochs": 2, "steps": 1}


def test_history_reused_across_fits_keeps_history_and_resets_epoch():
    history = History()
    fit(history, losses(1.0, 0.5))
    fit(history, losses(0.25))
    assert history.history == {"loss": [1.0, 0.5, 0.25]}
    assert history.epoch == [0]


# --------------------------------------------------------------------------
# ProgbarLogger


@pytest.fixture
def clock(monkeypatch):
    class Clock:
        t = 100.0

        def monotonic(self):
            return self.t

    fake = Clock()
    monkeypatch.setattr(_progbar, "time", fake)
    return fake


def simulate_fit(cbs, clock, epochs, steps, validation=True):
    cbs.on_train_begin()
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        for batch in range(steps):
            clock.t += 0.5
            cbs.on_train_batch_begin(batch)
            cbs.on_train_batch_end(batch, {"loss": 1.0 / (batch + 1), "accuracy": 0.5})
        logs = {"loss": 0.75, "accuracy": 0.5}
        if validation:
            cbs.on_test_begin()
            cbs.on_test_batch_end(0, {"loss": 0.5, "accuracy": 0.25})
            cbs.on_test_end({"loss": 0.5, "accuracy": 0.25})
            logs.update(val_loss=0.5, val_accuracy=0.25)
        cbs.on_epoch_end(epoch, logs)
    cbs.on_train_end(logs)


def test_progbar_logger_fit_output_not_a_tty(capsys, clock):
    cbs = CallbackList([], add_history=True, add_progbar=True, model=FakeModel(),
                       verbose=1, epochs=2, steps=4)
    simulate_fit(cbs, clock, epochs=2, steps=4)
    line = f"4/4 {'━' * 20} 2s 500ms/step - accuracy: 0.5000 - loss: 0.7500 - val_accuracy: 0.2500 - val_loss: 0.5000"
    assert capsys.readouterr().out == f"Epoch 1/2\n{line}\nEpoch 2/2\n{line}\n"


def test_progbar_logger_verbose_2(capsys, clock):
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose=2, epochs=2, steps=4)
    simulate_fit(cbs, clock, epochs=2, steps=4, validation=False)
    line = "4/4 - 2s - 500ms/step - accuracy: 0.5000 - loss: 0.7500"
    assert capsys.readouterr().out == f"Epoch 1/2\n{line}\nEpoch 2/2\n{line}\n"


def test_progbar_logger_single_epoch_has_no_epoch_line(capsys, clock):
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose="auto", epochs=1, steps=4)
    simulate_fit(cbs, clock, epochs=1, steps=4, validation=False)
    assert capsys.readouterr().out == f"4/4 {'━' * 20} 2s 500ms/step - accuracy: 0.5000 - loss: 0.7500\n"


def test_progbar_logger_shows_keys_added_by_earlier_callbacks(capsys, clock):
    lr = ReduceLROnPlateau(monitor="loss")
    cbs = CallbackList([lr], add_progbar=True, model=FakeModel(0.01), verbose=2, epochs=1, steps=4)
    simulate_fit(cbs, clock, epochs=1, steps=4, validation=False)
    assert capsys.readouterr().out.endswith("- loss: 0.7500 - learning_rate: 0.0100\n")


def test_progbar_logger_evaluate_prints_its_own_bar(capsys, clock):
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose=1, epochs=1, steps=2)
    cbs.on_test_begin()
    clock.t += 1.0
    cbs.on_test_batch_end(0, {"loss": 0.5})
    clock.t += 1.0
    cbs.on_test_batch_end(1, {"loss": 0.25})
    cbs.on_test_end({"loss": 0.25})
    assert capsys.readouterr().out == f"2/2 {'━' * 20} 2s 1s/step - loss: 0.2500\n"


def test_progbar_logger_chunked_updates(capsys, clock):
    # One on_train_batch_end per chunk with the chunk's last batch index.
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose=1, epochs=1, steps=10)
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    clock.t += 1.0
    cbs.on_train_batch_end(4, {"loss": 1.0})
    clock.t += 1.0
    cbs.on_train_batch_end(9, {"loss": 0.5})
    cbs.on_epoch_end(0, {"loss": 0.5})
    assert capsys.readouterr().out == f"10/10 {'━' * 20} 2s 200ms/step - loss: 0.5000\n"


# --------------------------------------------------------------------------
# EarlyStopping


def test_early_stopping_patience_0_stops_at_first_non_improvement():
    early = EarlyStopping(monitor="loss")
    assert fit(early, losses(1.0, 0.9, 0.95, 0.5)) == [0, 1, 2]
    assert early.stopped_epoch == 2


def test_early_stopping_patience_counts_epochs_without_improvement():
    early = EarlyStopping(monitor="loss", patience=2)
    assert fit(early, losses(1.0, 0.9, 0.95, 0.91, 0.5)) == [0, 1, 2, 3]
    assert early.stopped_epoch == 3
    early = EarlyStopping(monitor="loss", patience=2)
    assert fit(early, losses(1.0, 0.9, 0.95, 0.8, 0.85, 0.7)) == [0, 1, 2, 3, 4, 5]
    assert early.stopped_epoch == 0


def test_early_stopping_min_delta():
    # 0.95 improves on 1.0 by less than min_delta=0.1: not an improvement.
    assert fit(EarlyStopping(monitor="loss", min_delta=0.1), losses(1.0, 0.95, 0.5)) == [0, 1]
    assert fit(EarlyStopping(monitor="loss"), losses(1.0, 0.95, 0.5)) == [0, 1, 2]
    # min_delta is taken as an absolute value.
    assert fit(EarlyStopping(monitor="loss", min_delta=-0.1), losses(1.0, 0.95, 0.5)) == [0, 1]


def test_early_stopping_auto_mode_maximises_accuracy():
    logs = losses(0.5, 0.6, 0.55, name="val_accuracy")
    assert fit(EarlyStopping(monitor="val_accuracy"), logs) == [0, 1, 2]
    assert fit(EarlyStopping(monitor="val_acc"), losses(0.5, 0.6, 0.55, name="val_acc")) == [0, 1, 2]
    # Minimising accuracy would stop at epoch 1.
    assert fit(EarlyStopping(monitor="val_accuracy", mode="min"), logs) == [0, 1]


def test_early_stopping_explicit_max_mode():
    logs = losses(1.0, 2.0, 1.5, name="custom")
    assert fit(EarlyStopping(monitor="custom", mode="max"), logs) == [0, 1, 2]


def test_early_stopping_baseline():
    # Improving epochs that do not beat the baseline do not reset `wait`.
    early = EarlyStopping(monitor="loss", patience=2, baseline=0.5)
    assert fit(early, losses(0.9, 0.8, 0.85, 0.7)) == [0, 1, 2]
    assert early.stopped_epoch == 2
    early = EarlyStopping(monitor="loss", patience=2)
    assert fit(early, losses(0.9, 0.8, 0.85, 0.7)) == [0, 1, 2, 3]
    early = EarlyStopping(monitor="loss", patience=2, baseline=0.85)
    assert fit(early, losses(0.9, 0.8, 0.85, 0.82, 0.81)) == [0, 1, 2, 3]


def test_early_stopping_start_from_epoch():
    logs = losses(1.0, 2.0, 3.0, 2.5, 2.6, 1.0)
    early = EarlyStopping(monitor="loss", start_from_epoch=2)
    assert fit(early, logs) == [0, 1, 2, 3, 4]
    assert early.best == 2.5
    assert fit(EarlyStopping(monitor="loss"), logs) == [0, 1]


def test_early_stopping_restores_best_weights_after_early_stop():
    model = FakeModel()
    early = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    assert fit(early, losses(1.0, 0.5, 0.7, 0.8), model) == [0, 1, 2]
    # The weights from the end of epoch 1 (all 1.0), not those of epoch 2.
    np.testing.assert_array_equal(model._flat, [1.0, 1.0, 1.0])
    assert early.best_epoch == 1


def test_early_stopping_restores_best_weights_without_early_stop():
    model = FakeModel()
    early = EarlyStopping(monitor="loss", patience=5, restore_best_weights=True)
    assert fit(early, losses(1.0, 0.5, 0.7, 0.8), model) == [0, 1, 2, 3]
    assert early.stopped_epoch == 0
    np.testing.assert_array_equal(model._flat, [1.0, 1.0, 1.0])
    assert model.set_weights_calls == 1


def test_early_stopping_without_restore_keeps_last_weights():
    model = FakeModel()
    fit(EarlyStopping(monitor="loss", patience=1), losses(1.0, 0.5, 0.7, 0.8), model)
    np.testing.assert_array_equal(model._flat, [2.0, 2.0, 2.0])
    assert model.set_weights_calls == 0


def test_early_stopping_instance_is_reset_by_each_fit():
    early = EarlyStopping(monitor="loss")
    assert fit(early, losses(0.1, 0.2)) == [0, 1]
    # A new fit starts from scratch: 1.0 is not compared with 0.1.
    assert fit(early, losses(1.0, 0.9, 0.8)) == [0, 1, 2]
    assert early.stopped_epoch == 0


def test_early_stopping_warns_when_monitor_missing():
    early = EarlyStopping(monitor="val_loss")
    with pytest.warns(UserWarning, match="`val_loss` which is not available. Available metrics are: loss"):
        assert fit(early, losses(1.0, 2.0, 3.0)) == [0, 1, 2]


def test_early_stopping_verbose_messages(capsys):
    early = EarlyStopping(monitor="loss", verbose=1, restore_best_weights=True)
    fit(early, losses(1.0, 0.5, 0.7))
    assert capsys.readouterr().out == (
        "Epoch 3: early stopping\nRestoring model weights from the end of the best epoch: 2.\n"
    )


def test_unknown_mode_warns_and_falls_back_to_auto():
    with pytest.warns(UserWarning, match="mode 'maximum' is unknown, fallback to auto mode"):
        early = EarlyStopping(monitor="val_accuracy", mode="maximum")
    assert early.mode == "auto"
    assert fit(early, losses(0.5, 0.6, 0.55, name="val_accuracy")) == [0, 1, 2]


# --------------------------------------------------------------------------
# ReduceLROnPlateau


def run_lr(callback, values, lr=1.0, name="loss"):
    model = FakeModel(lr)
    rates, logged = [], []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates.append(model.optimizer.learning_rate)
            logged.append(logs.get("learning_rate"))

    cbs = CallbackList([callback, Spy()], model=model)
    cbs.on_train_begin()
    for epoch, v in enumerate(values):
        cbs.on_epoch_end(epoch, {name: float(v)})
    return rates, logged


def test_reduce_lr_after_patience_epochs():
    rates, logged = run_lr(ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2), [1, 1, 1, 1, 1])
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]
    # `learning_rate` in the logs is the rate used during that epoch.
    assert logged == [1.0, 1.0, 1.0, 0.5, 0.5]


def test_reduce_lr_improvement_resets_wait():
    rates, _ = run_lr(ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2), [1, 1, 0.5, 0.5, 0.5])
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5]


def test_reduce_lr_min_delta():
    # 0.99995 is less than min_delta=1e-4 below 1.0: not an improvement.
    rates, _ = run_lr(ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1), [1, 0.99995])
    assert rates == [1.0, 0.5]
    rates, _ = run_lr(ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=0), [1, 0.99995])
    assert rates == [1.0, 1.0]


def test_reduce_lr_cooldown():
    rates, _ = run_lr(
        ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, cooldown=2), [1, 1, 1, 1, 1, 1]
    )
    assert rates == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    # As in Keras, cooldown=1 has no visible effect with patience=1.
    rates, _ = run_lr(ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, cooldown=1), [1, 1, 1])
    assert rates == [1.0, 0.5, 0.25]


def test_reduce_lr_min_lr():
    rates, _ = run_lr(ReduceLROnPlateau(monitor="loss", factor=0.1, patience=1, min_lr=0.05), [1] * 5)
    assert rates == [1.0, 0.1, 0.05, 0.05, 0.05]


def test_reduce_lr_compares_with_min_lr_in_float32():
    # float32(0.1) = 0.10000000149..., so a rate just above 0.1 counts as at
    # the floor and is left alone, as in Keras.
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.1)
    rates, _ = run_lr(cb, [1, 1], lr=0.1000000001)
    assert rates == [0.1000000001, 0.1000000001]


def test_reduce_lr_auto_mode_uses_acc_in_name():
    values = [0.5, 0.6, 0.7]
    rates, _ = run_lr(ReduceLROnPlateau(monitor="val_acc", factor=0.5, patience=1), values, name="val_acc")
    assert rates == [1.0, 1.0, 1.0]
    rates, _ = run_lr(ReduceLROnPlateau(monitor="val_auc", factor=0.5, patience=1), values, name="val_auc")
    assert rates == [1.0, 0.5, 0.25]  # Keras: only "acc" selects max


def test_reduce_lr_missing_monitor_warns_and_logs_rate():
    with pytest.warns(UserWarning, match="conditioned on metric `val_loss` which is not available"):
        rates, logged = run_lr(ReduceLROnPlateau(), [1, 1])
    assert logged == [1.0, 1.0]


def test_reduce_lr_verbose_message(capsys):
    run_lr(ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, verbose=1), [1, 1])
    assert capsys.readouterr().out == "\nEpoch 2: ReduceLROnPlateau reducing learning rate to 0.5.\n"


def test_reduce_lr_epsilon_alias():
    with pytest.warns(DeprecationWarning, match="use `min_delta`"):
        cb = ReduceLROnPlateau(epsilon=0.5)
    assert cb.min_delta == 0.5


# --------------------------------------------------------------------------
# LearningRateScheduler


def test_scheduler_sets_rate_each_epoch_and_logs_it():
    model = FakeModel(1.0)
    seen = []
    cb = LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch >= 1 else lr)
    cbs = CallbackList([cb, History()], model=model)
    cbs.on_train_begin()
    for epoch in range(3):
        cbs.on_epoch_begin(epoch)
        seen.append(model.optimizer.learning_rate)
        cbs.on_epoch_end(epoch, {"loss": 1.0})
    assert seen == [1.0, 0.5, 0.25]
    assert cbs.history.history["learning_rate"] == [1.0, 0.5, 0.25]
    assert type(model.optimizer.learning_rate) is float


def test_scheduler_one_argument_schedule_and_numpy_float():
    model = FakeModel(1.0)
    cb = LearningRateScheduler(lambda epoch: np.float32(0.1 * (epoch + 1)))
    cb.set_model(model)
    cb.on_epoch_begin(2)
    assert model.optimizer.learning_rate == pytest.approx(0.3)
    assert type(model.optimizer.learning_rate) is float


def test_scheduler_type_error_inside_schedule_is_not_hidden():
    def schedule(epoch, lr):
        return lr + "oops"

    cb = LearningRateScheduler(schedule)
    cb.set_model(FakeModel())
    with pytest.raises(TypeError, match="unsupported operand"):
        cb.on_epoch_begin(0)


def test_scheduler_verbose(capsys):
    cb = LearningRateScheduler(lambda epoch, lr: 0.25, verbose=1)
    cb.set_model(FakeModel())
    cb.on_epoch_begin(0)
    assert capsys.readouterr().out == "\nEpoch 1: LearningRateScheduler setting learning rate to 0.25.\n"


# --------------------------------------------------------------------------
# TerminateOnNaN


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_terminate_on_nan_stops_training(capsys, bad):
    model = FakeModel()
    cbs = CallbackList([TerminateOnNaN()], model=model)
    cbs.on_train_batch_end(2, {"loss": 0.5})
    assert not model.stop_training
    cbs.on_train_batch_end(3, {"loss": bad})
    assert model.stop_training
    assert capsys.readouterr().out == "Batch 3: Invalid loss, terminating training\n"


def test_terminate_on_nan_raise_error():
    cb = TerminateOnNaN(raise_error=True)
    cb.set_model(FakeModel())
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 4"):
        cb.on_train_batch_end(4, {"loss": math.nan})


# --------------------------------------------------------------------------
# ModelCheckpoint


def test_checkpoint_formats_path_with_epoch_and_logs(tmp_path):
    model = FakeModel()
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.2f}.keras")
    fit(ModelCheckpoint(pattern), losses(0.5, 0.25, name="val_loss"), model)
    assert model.saved == [
        ("save", str(tmp_path / "ckpt-01-0.50.keras")),
        ("save", str(tmp_path / "ckpt-02-0.25.keras")),
    ]


def test_checkpoint_save_best_only(tmp_path):
    model = FakeModel()
    path = str(tmp_path / "e{epoch}.keras")
    fit(ModelCheckpoint(path, save_best_only=True), losses(0.5, 0.6, 0.4, 0.4, name="val_loss"), model)
    assert [p for _, p in model.saved] == [path.format(epoch=1), path.format(epoch=3)]


def test_checkpoint_save_best_only_max_and_threshold(tmp_path):
    model = FakeModel()
    path = str(tmp_path / "e{epoch}.weights.h5")
    cb = ModelCheckpoint(path, monitor="val_accuracy", save_best_only=True,
                         save_weights_only=True, initial_value_threshold=0.55)
    fit(cb, losses(0.5, 0.6, 0.58, 0.7, name="val_accuracy"), model)
    assert model.saved == [("save_weights", path.format(epoch=2)), ("save_weights", path.format(epoch=4))]


def test_checkpoint_best_value_persists_across_fits(tmp_path):
    model = FakeModel()
    cb = ModelCheckpoint(str(tmp_path / "m.keras"), monitor="loss", save_best_only=True)
    fit(cb, losses(0.5), model)
    fit(cb, losses(0.6, 0.4), model)
    assert len(model.saved) == 2


def test_checkpoint_save_best_only_warns_and_saves_when_monitor_missing(tmp_path):
    model = FakeModel()
    with pytest.warns(UserWarning, match="Can save best model only with val_loss available"):
        fit(ModelCheckpoint(str(tmp_path / "m.keras"), save_best_only=True), losses(1.0), model)
    assert len(model.saved) == 1


def test_checkpoint_creates_directory(tmp_path):
    model = FakeModel()
    fit(ModelCheckpoint(str(tmp_path / "a" / "b" / "m.keras")), losses(1.0), model)
    assert os.path.isdir(tmp_path / "a" / "b")


def test_checkpoint_accepts_pathlike(tmp_path):
    model = FakeModel()
    fit(ModelCheckpoint(tmp_path / "m.keras"), losses(1.0), model)
    assert model.saved == [("save", str(tmp_path / "m.keras"))]


def test_checkpoint_verbose_messages(capsys, tmp_path):
    path = str(tmp_path / "m.keras")
    fit(ModelCheckpoint(path, monitor="loss", save_best_only=True, verbose=1), losses(0.5, 0.6))
    assert capsys.readouterr().out == (
        f"\nEpoch 1: loss improved from inf to 0.50000, saving model to {path}\n"
        "\nEpoch 2: loss did not improve from 0.50000\n"
    )
    fit(ModelCheckpoint(path, verbose=1), losses(0.5))
    assert capsys.readouterr().out == f"\nEpoch 1: saving model to {path}\n"


def test_checkpoint_integer_save_freq_counts_batches(tmp_path):
    model = FakeModel()
    path = str(tmp_path / "e{epoch}-b{batch}.keras")
    cbs = CallbackList([ModelCheckpoint(path, save_freq=3)], model=model)
    assert cbs.needs_every_batch
    cbs.on_train_begin()
    for epoch in range(2):
        cbs.on_epoch_begin(epoch)
        for batch in range(5):
            cbs.on_train_batch_end(batch, {"loss": 1.0})
        cbs.on_epoch_end(epoch, {"loss": 1.0})
    # Every 3 batches across epoch boundaries; nothing at epoch ends.
    assert [p for _, p in model.saved] == [
        path.format(epoch=1, batch=3),
        path.format(epoch=2, batch=1),
        path.format(epoch=2, batch=4),
    ]


def test_checkpoint_into_existing_directory_fails(tmp_path):
    target = tmp_path / "dir.keras"
    target.mkdir()
    cb = ModelCheckpoint(str(target))
    cb.set_model(FakeModel())
    with pytest.raises(IsADirectoryError, match="names an existing directory"):
        cb.on_epoch_end(0, {"loss": 1.0})


# --------------------------------------------------------------------------
# CSVLogger


def test_csv_logger_writes_epoch_then_sorted_keys(tmp_path):
    path = tmp_path / "log.csv"
    fit(CSVLogger(str(path)), [{"val_loss": 0.75, "loss": 0.5, "accuracy": 0.25},
                               {"val_loss": 0.5, "loss": 0.125, "accuracy": 1.0}])
    assert path.read_bytes() == (
        b"epoch,accuracy,loss,val_loss\r\n0,0.25,0.5,0.75\r\n1,1.0,0.125,0.5\r\n"
    )


def test_csv_logger_separator_missing_values_and_overwrite(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("old content\n")
    fit(CSVLogger(path, separator=";"), [{"loss": 0.5, "mae": 2.0}, {"loss": 0.25}])
    assert path.read_text() == "epoch;loss;mae\n0;0.5;2.0\n1;0.25;NA\n"


def test_csv_logger_append(tmp_path):
    path = tmp_path / "log.csv"
    fit(CSVLogger(str(path), append=True), losses(0.5))
    fit(CSVLogger(str(path), append=True), losses(0.25, 0.125))
    assert path.read_text() == "epoch,loss\n0,0.5\n0,0.25\n1,0.125\n"


# --------------------------------------------------------------------------
# Error messages: one case per message


def _epoch_end(callback, logs):
    callback.set_model(FakeModel())
    callback.on_epoch_end(0, logs)


def _epoch_begin(callback):
    callback.set_model(FakeModel())
    callback.on_epoch_begin(0)


@pytest.mark.parametrize(
    "make_error, exception, match",
    [
        (lambda: ReduceLROnPlateau(factor=1.0), ValueError,
         r"`factor` must be a number in \[0, 1\).*Received: factor=1\.0"),
        (lambda: ReduceLROnPlateau(min_lr=-1), ValueError,
         r"`min_lr` must be a non-negative number\. Received: min_lr=-1"),
        (lambda: ReduceLROnPlateau(foo=1), TypeError,
         r"unexpected keyword argument\. Received: foo=1"),
        (lambda: ReduceLROnPlateau(cooldown=-1), ValueError,
         r"`cooldown` must be a non-negative integer\. Received: cooldown=-1"),
        (lambda: EarlyStopping(patience=1.5), ValueError,
         r"`patience` must be a non-negative integer\. Received: patience=1\.5"),
        (lambda: EarlyStopping(min_delta="0"), ValueError,
         r"`min_delta` must be a number\. Received: min_delta='0'"),
        (lambda: _epoch_end(EarlyStopping(monitor="val_foo"), {"val_foo": 1.0}), ValueError,
         r"EarlyStopping cannot tell whether `monitor` should be maximized or minimized\. "
         r"Pass mode='max'.*Received: monitor='val_foo'"),
        (lambda: ModelCheckpoint("model.h5"), ValueError,
         r"`filepath` must end in `\.keras`.*Received: filepath='model\.h5'"),
        (lambda: ModelCheckpoint("w.h5", save_weights_only=True), ValueError,
         r"save_weights_only=True, `filepath` must end in `\.weights\.h5`.*Received: filepath='w\.h5'"),
        (lambda: ModelCheckpoint("m.keras", save_freq="batch"), ValueError,
         r"`save_freq` must be 'epoch' or a positive integer.*Received: save_freq='batch'"),
        (lambda: ModelCheckpoint("m.keras", save_freq=0), ValueError,
         r"`save_freq` must be 'epoch' or a positive integer.*Received: save_freq=0"),
        (lambda: ModelCheckpoint(42), TypeError,
         r"`filepath` must be a string or an os\.PathLike\. Received: filepath=42"),
        (lambda: _epoch_end(ModelCheckpoint("{val_acc}.keras"), {"loss": 1.0}), KeyError,
         r"`filepath` has the field \{val_acc\}.*available: epoch, loss"),
        (lambda: LearningRateScheduler(0.1), TypeError,
         r"`schedule` must be a function.*Received: schedule=0\.1"),
        (lambda: _epoch_begin(LearningRateScheduler(lambda epoch, lr: 1)), ValueError,
         r"`schedule` must return a finite, non-negative float learning rate\. "
         r"Received: schedule\(0, \.\.\.\)=1"),
        (lambda: _epoch_begin(LearningRateScheduler(lambda epoch, lr: math.nan)), ValueError,
         r"finite, non-negative float.*=nan"),
        (lambda: CSVLogger("log.csv", separator=", "), ValueError,
         r"`separator` must be a single character\. Received: separator=', '"),
        (lambda: CSVLogger(None), TypeError,
         r"`filename` must be a string or an os\.PathLike\. Received: filename=None"),
        (lambda: LambdaCallback(on_epoch_ended=print), TypeError,
         r"only accepts Callback hook names.*Received: on_epoch_ended="),
        (lambda: LambdaCallback(on_epoch_end=3), TypeError,
         r"`on_epoch_end` must be a function\. Received: on_epoch_end=3"),
        (lambda: CallbackList([EarlyStopping(), "early"]), TypeError,
         r"Each element of `callbacks` must be a fastdense\.callbacks\.Callback instance\. "
         r"Received: callbacks\[1\]='early'"),
    ],
)
def test_error_messages(make_error, exception, match):
    with pytest.raises(exception, match=match):
        make_error()


def test_public_names():
    for name in callbacks.__all__:
        assert getattr(callbacks, name).__doc__
