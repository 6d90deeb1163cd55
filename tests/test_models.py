"""The Sequential API: structure, compile, fit/evaluate/predict semantics, History, summary."""
import io
import contextlib

import numpy as np
import pytest

import fastdense
from fastdense import Input, Sequential, layers, optimizers

from conftest import make_blobs


def small_model(units=3, d=6, act="softmax", hidden="relu"):
    return Sequential([layers.Dense(8, activation=hidden, input_shape=(d,)),
                       layers.Dense(units, activation=act)])


# -- structure -----------------------------------------------------------------------------------
def test_summary_matches_keras_layout_and_counts():
    model = Sequential([layers.Dense(100, activation="sigmoid", input_shape=(784,)),
                        layers.Dense(10, activation="softmax")])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 79,510 (310.59 KB)" in text
    assert "(None, 100)" in text and "(None, 10)" in text
    assert "78,500" in text and "1,010" in text
    assert model.count_params() == 79510


def test_auto_names_count_per_process():
    a, b = layers.Dense(2), layers.Dense(2)
    assert a.name.startswith("dense") and b.name.startswith("dense") and a.name != b.name
    m1, m2 = Sequential(), Sequential()
    assert m1.name != m2.name and m1.name.startswith("sequential")


@pytest.mark.parametrize("first", [
    lambda: [Input((6,)), layers.Dense(4)],
    lambda: [layers.Dense(4, input_shape=(6,))],
    lambda: [layers.Dense(4, input_dim=6)],
])
def test_ways_to_declare_the_input(first):
    model = Sequential(first())
    assert model.built and model.input_shape == (None, 6)
    assert [w.shape for w in model.get_weights()] == [(6, 4), (4,)]


def test_deferred_build_on_first_fit_and_explicit_build():
    x, y = make_blobs()
    model = Sequential([layers.Dense(8, activation="relu"), layers.Dense(3, activation="softmax")])
    assert not model.built
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.built and model.input_shape == (None, 6)
    other = Sequential([layers.Dense(4)])
    other.build((None, 5))
    assert other.get_weights()[0].shape == (5, 4)


def test_add_rejects_non_layers_and_pop_removes():
    model = small_model()
    with pytest.raises(ValueError, match="Only instances of fastdense.layers.Layer"):
        model.add("dense")
    popped = model.pop()
    assert isinstance(popped, layers.Dense) and len(model.layers) == 1
    assert model.output_shape == (None, 8)


def test_glorot_uniform_limits_and_zero_bias():
    model = Sequential([layers.Dense(100, input_shape=(784,))])
    kernel, bias = model.get_weights()
    limit = np.sqrt(6 / (784 + 100))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.01 * limit
    assert np.all(bias == 0)


def test_set_weights_checks_count_and_shapes_and_leaves_model_unchanged():
    model = small_model()
    before = model.get_weights()
    with pytest.raises(ValueError, match="expects 4 weight arrays"):
        model.set_weights(before[:3])
    bad = [w.copy() for w in before]
    bad[3] = np.zeros(5)
    bad[0] = bad[0] + 1
    with pytest.raises(ValueError, match=r"Received: weights\[3\].shape=\(5,\)"):
        model.set_weights(bad)
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)


def test_get_weights_returns_copies():
    model = small_model()
    w = model.get_weights()
    w[0][...] = 7
    assert not np.any(model.get_weights()[0] == 7)


# -- compile / fit / evaluate / predict ------------------------------------------------------------
def test_fit_before_compile_raises_keras_message():
    x, y = make_blobs()
    model = small_model()
    with pytest.raises(ValueError, match=r"You must call `compile\(\)` before using the model."):
        model.fit(x, y)
    with pytest.raises(ValueError, match=r"You must call `compile\(\)`"):
        model.evaluate(x, y)
    assert model.predict(x, verbose=0).shape == (200, 3)  # predict works without compile


def test_history_keys_lengths_types_and_model_history():
    x, y = make_blobs()
    yo = fastdense.utils.to_categorical(y)
    model = small_model()
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x[:150], yo[:150], epochs=3, validation_data=(x[150:], yo[150:]), verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 and all(type(f) is float for f in v) for v in hist.history.values())
    assert hist.epoch == [0, 1, 2]
    assert model.history is hist
    assert hist.params["epochs"] == 3 and hist.params["steps"] == 5


def test_acc_alias_keeps_the_users_key():
    x, y = make_blobs()
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["acc"])
    hist = model.fit(x, y, epochs=1, validation_split=0.25, verbose=0)
    assert set(hist.history) == {"loss", "acc", "val_loss", "val_acc"}


def test_evaluate_return_types():
    x, y = make_blobs()
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.evaluate(x, y, verbose=0)
    assert type(loss) is float
    y = fastdense.utils.to_categorical(y)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy", "mse"])
    res = model.evaluate(x, y, verbose=0)
    assert isinstance(res, list) and len(res) == 3 and all(type(v) is float for v in res)
    d = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(d) == ["loss", "accuracy", "mse"] and d["loss"] == res[0]


def test_evaluate_loss_is_the_mean_per_sample_loss():
    """Independent check of the reduction against a NumPy computation from predictions."""
    x, y = make_blobs()
    model = small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    p = model.predict(x, verbose=0).astype(np.float64)
    expected = -np.mean(np.log(p[np.arange(len(y)), y]))
    acc = np.mean(p.argmax(1) == y)
    loss, got_acc = model.evaluate(x, y, batch_size=7, verbose=0)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert got_acc == pytest.approx(acc)


def test_epoch_loss_is_pre_update_batch_weighted_mean():
    """With lr tiny the weights barely move: epoch loss == evaluate loss before training."""
    x, y = make_blobs(n=50)
    model = small_model()
    model.compile(optimizer=optimizers.SGD(learning_rate=1e-12), loss="sparse_categorical_crossentropy")
    before = model.evaluate(x, y, verbose=0)
    hist = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)  # batches 16,16,16,2
    assert hist.history["loss"][0] == pytest.approx(before, rel=1e-6)


def test_predict_equals_call_and_is_batch_size_invariant():
    x, _ = make_blobs(n=101)
    model = small_model()
    p = model.predict(x, verbose=0)
    assert p.dtype == np.float32 and p.shape == (101, 3)
    np.testing.assert_allclose(model(x), p, rtol=1e-6, atol=1e-7)
    for bs in (1, 7, 1000):
        np.testing.assert_allclose(model.predict(x, batch_size=bs, verbose=0), p, rtol=1e-6, atol=1e-7)
    rows = np.concatenate([model.predict(x[i:i + 1], verbose=0) for i in range(len(x))])
    np.testing.assert_allclose(rows, p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_last_partial_batch_is_trained():
    x, y = make_blobs(n=33)
    model = small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=1, verbose=0)
    assert hist.params["steps"] == 2
    assert model.optimizer.iterations == 2


def test_seeded_training_is_bit_identical():
    x, y = make_blobs()

    def run():
        fastdense.utils.set_random_seed(7)
        model = small_model()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        hist = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        return model.get_weights(), hist.history

    w1, h1 = run()
    w2, h2 = run()
    assert h1 == h2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_shuffle_changes_the_trajectory():
    x, y = make_blobs()
    results = []
    for shuffle in (False, True):
        fastdense.utils.set_random_seed(3)
        model = small_model()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        results.append(model.fit(x, y, epochs=1, shuffle=shuffle, verbose=0).history["loss"][0])
    assert results[0] != results[1]


def test_one_dimensional_x_is_samples_of_one_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    model = Sequential([layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, 3 * x + 2, epochs=1, verbose=0)
    w, b = model.get_weights()
    assert w.shape == (1, 1) and b.shape == (1,)
    assert model.predict(x[:5], verbose=0).shape == (5, 1)


def test_linear_model_recovers_the_line():
    """The book's one-weight model: 2,000 samples of x ~ N(0, 1), 10 epochs of SGD at 0.01."""
    rng = np.random.default_rng(42)
    x = rng.normal(size=2000)
    y = 3 * x + 2
    model = fastdense.models.Sequential()
    model.add(fastdense.layers.Dense(1))
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, y, epochs=10, verbose=0)
    w, b = model.get_weights()
    assert abs(w[0, 0] - 3) < 0.3 and abs(b[0] - 2) < 0.3
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_uint8_images_work_unscaled_and_equal_explicit_cast():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 4, 4), dtype=np.uint8)
    model = Sequential([layers.Flatten(input_shape=(4, 4)), layers.Dense(3, activation="softmax")])
    np.testing.assert_array_equal(model.predict(x, verbose=0),
                                  model.predict(x.astype(np.float32), verbose=0))


def test_flatten_model_trains_on_raw_images():
    rng = np.random.default_rng(0)
    x = rng.random((64, 5, 5))
    y = (x.sum(axis=(1, 2)) > 12.5).astype(int)
    model = Sequential([layers.Flatten(input_shape=(5, 5)), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=2, verbose=0)
    assert set(hist.history) == {"loss", "accuracy"}


def test_float64_model():
    fastdense.config.set_floatx("float64")
    x, y = make_blobs()
    model = small_model()
    assert all(w.dtype == np.float64 for w in model.get_weights())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.predict(x, verbose=0).dtype == np.float64


def test_stop_training_from_a_callback_ends_after_the_epoch():
    x, y = make_blobs()

    class StopAfterFirst(fastdense.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    model = small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=5, callbacks=[StopAfterFirst()], verbose=0)
    assert hist.epoch == [0]


def test_per_batch_callback_sees_every_batch_with_running_logs():
    x, y = make_blobs(n=100)
    seen = []

    class Recorder(fastdense.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, dict(logs)))

    model = small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=10, epochs=2, callbacks=[Recorder()], verbose=0)
    assert [b for b, _ in seen] == list(range(10)) * 2
    assert seen[9][1]["loss"] == pytest.approx(hist.history["loss"][0])
    assert set(seen[0][1]) == {"loss", "accuracy"}


def test_progress_output_one_line_per_epoch_when_not_a_tty():
    x, y = make_blobs(n=64)
    model = small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.fit(x, y, epochs=2, validation_data=(x, y), verbose=1)
    out = buf.getvalue()
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    bar_lines = [l for l in out.splitlines() if l.startswith("2/2 ")]
    assert len(bar_lines) == 2
    assert all(" - accuracy: " in l and " - loss: " in l and " - val_loss: " in l for l in bar_lines)
    assert "\r" not in out
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.fit(x, y, epochs=2, verbose=0)
    assert buf.getvalue() == ""


def test_concurrent_predict_from_threads_is_safe():
    """Several Python threads predicting and evaluating at once: over several batches each call
    shares them with fastdense's worker thread when it gets it (else runs them all itself);
    every result must equal the one-thread result."""
    import threading

    x, y = make_blobs(n=300)
    model = small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    configured = fastdense.config.num_threads()
    fastdense.config.set_num_threads(1)
    try:
        expected = model.predict(x, verbose=0)
        expected_eval = model.evaluate(x, y, verbose=0)
    finally:
        fastdense.config.set_num_threads(configured)
    errors = []

    def work():
        for _ in range(20):
            if not np.array_equal(model.predict(x, verbose=0), expected):
                errors.append("predict mismatch")
            if model.evaluate(x, y, verbose=0) != expected_eval:
                errors.append("evaluate mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_second_concurrent_fit_raises():
    import threading

    x, y = make_blobs(n=2000)
    model = small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    started, release = threading.Event(), threading.Event()

    class Hold(fastdense.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.set()
            release.wait(10)

    t = threading.Thread(target=lambda: model.fit(x, y, epochs=1, callbacks=[Hold()], verbose=0))
    t.start()
    assert started.wait(10)
    try:
        with pytest.raises(RuntimeError, match="already training"):
            model.fit(x, y, epochs=1, verbose=0)
    finally:
        release.set()
        t.join()


def test_any_thread_count_gives_bit_identical_training():
    """Large products are cut into units shared by the threads, and the middle of each step by
    rows; nothing may change with 1, 2, 3 or 4 threads (more threads than this machine's cores
    included). The thread count is fixed here through the engine options (fit's governor would
    pick by speed)."""
    rng = np.random.default_rng(0)
    x = rng.random((256, 300), dtype=np.float32)
    y = rng.integers(0, 4, 256)
    results = []
    for threads in (1, 2, 3, 4):
        fastdense.utils.set_random_seed(5)
        model = Sequential([layers.Dense(64, activation="sigmoid", input_shape=(300,)),
                            layers.Dense(48, activation="relu"),
                            layers.Dense(4, activation="softmax")])
        model._engine_options = {"threads": threads}
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        losses = [model.train_on_batch(x[i:i + 128], y[i:i + 128]) for i in (0, 128, 0, 128)]
        results.append((model.get_weights(), losses, model.predict(x, verbose=0)))
    w1, l1, p1 = results[0]
    for w2, l2, p2 in results[1:]:
        assert l1 == l2
        np.testing.assert_array_equal(p1, p2)
        for a, b in zip(w1, w2):
            np.testing.assert_array_equal(a, b)


def test_fit_respects_the_thread_setting_and_restores_single_threaded_inference():
    from fastdense import _kernels

    x, y = make_blobs()
    try:
        for n in (1, 2, 3):
            fastdense.config.set_num_threads(n)
            assert fastdense.config.num_threads() == n
            model = small_model()
            model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
            model.fit(x, y, epochs=1, verbose=0)
        fastdense.config.set_num_threads(64)
        assert fastdense.config.num_threads() == 64
        with pytest.raises(ValueError, match="Received: n=0"):
            fastdense.config.set_num_threads(0)
        with pytest.raises(ValueError, match="at most 64 threads. Received: n=65"):
            fastdense.config.set_num_threads(65)
    finally:
        fastdense.config.set_num_threads(fastdense.config._default_threads())


def test_frozen_layers_keep_their_weights_while_the_others_train():
    x, y = make_blobs()
    model = small_model()
    model.layers[0].trainable = False
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)
    after = model.get_weights()
    for a, b in zip(before[:2], after[:2]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(before[2:], after[2:]):
        assert not np.array_equal(a, b)


def test_thread_governor_measures_both_and_keeps_the_faster():
    from fastdense._engine import ThreadGovernor

    gov = ThreadGovernor(2)
    assert gov.choose() == (2, ThreadGovernor.WARM_BATCHES)
    gov.observe(2, 4, 4 * 1e-4)             # the warm-up chunk (worker start): not a measurement
    assert 2 not in gov.per_batch
    t, cap = gov.choose()
    assert (t, cap) == (2, ThreadGovernor.PROBE_BATCHES)  # 0.1 ms a batch: 32 fit in 20 ms
    gov.observe(2, 16, 16 * 5e-3)           # two threads: 5 ms a batch (a loaded machine)
    t, cap = gov.choose()
    assert (t, cap) == (1, 5)               # a probe of about 20 ms at that pace
    gov.observe(1, 16, 16 * 1e-4)           # one thread: 0.1 ms a batch
    assert gov.choose() == (1, None) and not gov.probing
    gov.observe(1, 10000, 1.0)              # a second of training: time to re-measure two
    assert gov.choose() == (2, ThreadGovernor.PROBE_BATCHES)
    gov.observe(2, 16, 16 * 1e-5)           # the load went away: the probe's figure counts
    assert gov.choose() == (2, None)
    assert ThreadGovernor(1).choose() == (1, None)


def test_thread_governor_probes_soon_after_a_change_then_less_often():
    """On one thread the governor re-measures the threads soon, then less often (a load that
    leaves does not show on one thread); on the threads it probes one thread once a second (a
    load that arrives shows as slower chunks)."""
    from fastdense._engine import ThreadGovernor

    def intervals_until_probe(gov, threads, per, probes):
        out = []
        for _ in range(probes):
            trained = 0.0
            while True:
                t, cap = gov.choose()
                if cap is not None:
                    break
                assert t == threads
                gov.observe(threads, 10, 10 * per)
                trained += 10 * per
            out.append(trained)
            gov.observe(t, 32, 32 * (1e-3 if threads == 1 else 1e-2))  # confirms `threads`
        return out

    gov = ThreadGovernor(2)
    gov.choose(); gov.observe(2, 4, 4e-3)               # warm-up
    gov.choose(); gov.observe(2, 32, 32e-3)             # two threads: 1 ms a batch (loaded)
    gov.choose(); gov.observe(1, 32, 32e-4)             # one thread: 0.1 ms a batch
    assert gov.choose() == (1, None)
    intervals = intervals_until_probe(gov, 1, 1e-4, 8)  # probes of two that confirm one
    assert intervals[0] < 0.05 and intervals[1] > intervals[0]    # soon, then doubling
    assert 0.9 < intervals[-1] < 1.2                              # capped near once a second
    while gov.choose()[1] is None:
        gov.observe(1, 10, 1e-3)
    gov.observe(2, 32, 32e-6)                           # the probe finds two threads faster now
    assert gov.best() == 2 and gov.interval == ThreadGovernor.PROBE_FIRST
    intervals = intervals_until_probe(gov, 2, 1e-6, 3)  # on two threads: once a second
    assert all(0.9 < i < 1.2 for i in intervals)


def test_elementwise_metric_with_narrower_labels_is_refused():
    """mse/mae/binary_accuracy compare column by column: (n,) labels against 3 outputs is an
    error (Keras 3 errors too), never a read past the labels."""
    x, y = make_blobs()
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["mse"])
    with pytest.raises(ValueError, match=r"'mse' .* needs 3 columns.*Received: y.shape=\(200,\)"):
        model.evaluate(x, y, verbose=0)


def test_thread_governor_needs_a_clear_margin_to_switch():
    """A noisy probe 10% faster does not flip the choice; one 25% faster does."""
    from fastdense._engine import ThreadGovernor

    gov = ThreadGovernor(2)
    gov.choose(); gov.observe(2, 16, 16e-3)             # warm-up
    gov.choose(); gov.observe(2, 32, 32 * 100e-6)       # two threads: 100 us a batch
    gov.choose(); gov.observe(1, 32, 32 * 200e-6)       # one thread: 200 us
    assert gov.best() == 2
    gov.per_batch[1] = 90e-6                            # a probe 10% faster than two threads
    assert gov.best() == 2
    gov.per_batch[1] = 75e-6                            # 25% faster: a real change
    assert gov.best() == 1


@pytest.mark.parametrize("out_units,out_act", [(1, "sigmoid"), (3, "sigmoid"), (10, "softmax"),
                                               (70, "sigmoid"), (100, "softmax"), (129, "tanh")])
def test_predict_rows_are_bit_identical_whatever_the_batch(out_units, out_act):
    """A row's prediction has the same bits alone or in any batch (up to the 256-row own-kernel
    batches predict uses): every kernel's arithmetic for a row depends on that row only. Sigmoid
    once broke this (its vector/scalar choice depended on the element's flat position). From 256
    rows on, predict reads a copy of the 50-unit first layer in 16-column panels; one row reads
    the weights in place: the bits must not differ."""
    fastdense.utils.set_random_seed(3)
    model = Sequential([layers.Dense(50, activation="sigmoid", input_shape=(70,)),
                        layers.Dense(out_units, activation=out_act)])
    x = np.random.default_rng(3).normal(scale=3.0, size=(300, 70)).astype(np.float32)
    x[5, :] *= 40                                          # saturating pre-activations (|z| > 80)
    alone = np.concatenate([model.predict(x[i:i + 1], verbose=0) for i in range(0, 300, 13)])
    for bs in (1, 2, 7, 13, 32, 64, 100, 256, 300):
        p = model.predict(x, batch_size=bs, verbose=0)
        np.testing.assert_array_equal(p[::13], alone, err_msg=f"batch_size={bs}")
    np.testing.assert_array_equal(model(x)[::13], alone)


@pytest.mark.parametrize("units", [4, 8, 20, 100, 104, 130])
def test_one_row_product_over_several_depth_chunks_gives_the_batch_bits(units):
    """One row goes through its own kernel (up to 104 columns a pass, the columns past the last
    multiple of 8 read as an overlapping vector), which sums a 600-wide input in three depth
    chunks, each added onto the previous ones' sums; its bits must be those of the same row
    inside a batch (the 6x16 tiles)."""
    fastdense.utils.set_random_seed(5)
    model = Sequential([layers.Dense(units, input_shape=(600,))])
    x = np.random.default_rng(5).normal(size=(40, 600)).astype(np.float32)
    batch = model.predict(x, verbose=0)
    for i in (0, 17, 39):
        np.testing.assert_array_equal(model.predict(x[i:i + 1], verbose=0), batch[i:i + 1])
        np.testing.assert_array_equal(model(x[i:i + 1]), batch[i:i + 1])


@pytest.mark.parametrize("batch", [1, 32, 128])
def test_padded_first_layer_copy_gives_the_same_bits(batch):
    """train_steps trains a 100-unit first layer (400-byte rows) in a copy laid out as 16-column
    panels (or, with the engine option panels=False, as rows padded to 64 bytes); every
    element's arithmetic is unchanged, so the weights must be bit-identical to training the
    weights in place (the copy is off with pad_first=False). One and two threads; a batch of 128 rows takes
    the forward product's row-block path."""
    from fastdense import _kernels

    x = np.random.default_rng(5).normal(size=(300, 97)).astype(np.float32)
    y = np.random.default_rng(6).integers(0, 10, 300)
    results = []
    for pad, panels in ((True, True), (True, False), (False, False)):
        for threads in (1, 2):
            fastdense.utils.set_random_seed(11)
            model = Sequential([layers.Dense(100, activation="sigmoid", input_shape=(97,)),
                                layers.Dense(10, activation="softmax")])
            model._engine_options = {"pad_first": pad, "panels": panels, "threads": threads}
            model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
            for i in range(0, min(300, 12 * batch), batch):
                model.train_on_batch(x[i:i + batch], y[i:i + batch])
            results.append(model.get_weights())
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


MIDDLE_SHAPES = {
    # narrowing, with an Activation op
    "narrow": lambda: [layers.Dense(70, activation="tanh", input_shape=(90,)),
                       layers.Dense(30), layers.Activation("gelu"),
                       layers.Dense(5, activation="softmax")],
    # later layers wider than the first and cut along their inputs (>= 64): their scratch must
    # not overlap the other block's rows or the first layer's unfinished sums
    "widening": lambda: [layers.Dense(64, activation="relu", input_shape=(90,)),
                         layers.Dense(128, activation="sigmoid"), layers.Dense(5, activation="softmax")],
    "wide_narrow_wide": lambda: [layers.Dense(96, activation="relu", input_shape=(90,)),
                                 layers.Dense(64, activation="tanh"),
                                 layers.Dense(128, activation="relu"),
                                 layers.Dense(5, activation="softmax")],
    # later layers too big for the row-cut middle (whole-batch path, cut along the inputs)
    "big_later": lambda: [layers.Dense(64, activation="relu", input_shape=(90,)),
                          layers.Dense(256, activation="relu"), layers.Dense(200, activation="relu"),
                          layers.Dense(5, activation="softmax")],
}


@pytest.mark.parametrize("shape", sorted(MIDDLE_SHAPES))
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch_size", [1, 33, 128])
def test_step_middle_cut_by_rows_is_thread_independent_and_matches_the_whole_batch(
        shape, optimizer, batch_size):
    """train_steps cuts the middle of each step (later layers, loss, metrics) into two blocks of
    rows, one per thread. With an Activation op, sample weights and a metric: one and two
    threads give the same bits, and the result equals the whole-batch computation (switched off
    with the engine option split_middle=False) up to the rounding of the per-block sums."""
    from fastdense import _kernels

    rng = np.random.default_rng(2)
    x = rng.normal(size=(160, 90)).astype(np.float32)
    y = rng.integers(0, 5, 160)
    sw = rng.random(160).astype(np.float32) + 0.5
    results = {}
    for split, threads in ((True, 1), (True, 2), (False, 1)):
        fastdense.utils.set_random_seed(9)
        model = Sequential(MIDDLE_SHAPES[shape]())
        model._engine_options = {"split_middle": split, "threads": threads}
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        logs = [model.train_on_batch(x[i:i + batch_size], y[i:i + batch_size],
                                     sample_weight=sw[i:i + batch_size], return_dict=True)
                for i in range(0, 160, max(batch_size, 40))]
        results[(split, threads)] = (model.get_weights(), logs)
    (w1, l1), (w2, l2) = results[(True, 1)], results[(True, 2)]
    assert l1 == l2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    w0, l0 = results[(False, 1)]
    for a, b in zip(w1, w0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(l1, l0):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1.0 / batch_size + 1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch_size", [1, 32, 128])
def test_skipping_zero_inputs_gives_the_same_bits(optimizer, batch_size, same_bits_with_option):
    """Weight gradients skip the zeros of their inputs (images' blank pixels, relu's zeros); the
    weights must be bit-identical to the dense products' (switched with sparse=False),
    with one and two threads, for the first layer trained in panels with SGD folded in and for
    later layers after relu."""
    rng = np.random.default_rng(8)
    x = rng.random((256, 90)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0.0
    x[:, :20] = 0.0
    y = rng.integers(0, 5, 256)

    def run(options):
        fastdense.utils.set_random_seed(4)
        model = Sequential([layers.Dense(100, activation="relu", input_shape=(90,)),
                            layers.Dense(45, activation="relu"),
                            layers.Dense(5, activation="softmax")])
        model._engine_options = options
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
        return model.get_weights()

    same_bits_with_option("sparse", run)


@pytest.mark.parametrize("units", [100, 128])
@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_next_forward_in_the_weight_gradient_job_gives_the_same_bits(batch_size, units,
                                                                   same_bits_with_option):
    """With plain SGD the next batch's first product runs in the same job as this batch's
    weight-gradient update (each half of the forward product waits for the same half of the
    update); the weights and the logged losses must be bit-identical to running them one after
    the other (switched with merge_next=False), with one and two threads, across the epoch's
    last, smaller batch and the chunks fit() hands to the kernels; for a first layer trained in
    a panel copy (100 units) and in place (128)."""
    rng = np.random.default_rng(12)
    x = rng.random((203, 120)).astype(np.float32)
    x[rng.random(x.shape) < 0.4] = 0.0
    y = rng.integers(0, 4, 203)

    def run(options):
        fastdense.utils.set_random_seed(6)
        model = Sequential([layers.Dense(units, activation="sigmoid", input_shape=(120,)),
                            layers.Dense(4, activation="softmax")])
        model._engine_options = options
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        hist = model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0)
        return model.get_weights(), [hist.history[k] for k in sorted(hist.history)]

    same_bits_with_option("merge_next", run)


@pytest.mark.parametrize("shape", ["narrow", "wide_narrow_wide", "big_later"])
@pytest.mark.parametrize("batch_size", [1, 7, 33])
def test_transposed_input_gradient_gives_the_same_bits(shape, batch_size, same_bits_with_option):
    """In training, hidden layers' input gradients are computed transposed (dX^T = W @ dS^T into
    a batch padded to 16 rows, stored back transposed) instead of packing W^T; each element's
    chain of FMAs is the same, so the weights must be bit-identical with the switch off, on the
    row-cut middle and on the whole-batch path, with one and two threads."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(99, 90)).astype(np.float32)
    y = rng.integers(0, 5, 99)

    def run(options):
        fastdense.utils.set_random_seed(3)
        model = Sequential(MIDDLE_SHAPES[shape]())
        model._engine_options = options
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        for i in range(0, 99, batch_size * 3):
            model.train_on_batch(x[i:i + batch_size], y[i:i + batch_size])
        return model.get_weights()

    same_bits_with_option("transposed_dx", run)


def test_sigmoid_keeps_nan_nan():
    """A NaN pre-activation must come out NaN (so a diverging fit is reported), in the vector
    lanes and in the masked tail alike."""
    from fastdense import _kernels

    for n in (1, 5, 8, 13, 24):
        z = np.linspace(-5, 5, n * 3, dtype=np.float32).reshape(n, 3)
        z[n // 2, 1] = np.nan
        z[-1, -1] = np.nan
        _kernels.activation_forward(_kernels.CODES["ACT_SIGMOID"], z)
        assert np.isnan(z[n // 2, 1]) and np.isnan(z[-1, -1])
        assert np.isfinite(z).sum() == z.size - 2


def test_thread_governor_probes_at_once_when_the_load_changes():
    """A regular chunk 30% slower (or faster) than its setting's figure means another process
    took (or left) a core: the other setting is re-measured with the next chunk, not up to a
    second later, and kept if it is now the faster."""
    from fastdense._engine import ThreadGovernor

    gov = ThreadGovernor(2)
    gov.choose(); gov.observe(2, 16, 16e-3)             # warm-up
    gov.choose(); gov.observe(2, 32, 32 * 100e-6)       # two threads: 100 us a batch
    gov.choose(); gov.observe(1, 32, 32 * 200e-6)       # one thread: 200 us
    gov.interval, gov.since_probe = ThreadGovernor.PROBE_EVERY, 0.0  # a long-confirmed choice
    assert gov.choose() == (2, None)
    gov.observe(2, 400, 400 * 120e-6)                   # within 30%: nothing to do
    assert gov.choose() == (2, None)
    gov.observe(2, 400, 400 * 300e-6)                   # the other core got busy
    assert gov.choose() == (1, ThreadGovernor.PROBE_BATCHES)
    gov.observe(1, 32, 32 * 210e-6)                     # one thread is now the faster
    assert gov.choose() == (1, None)
    gov.observe(1, 400, 400 * 100e-6)                   # the machine is quiet again
    assert gov.choose() == (2, ThreadGovernor.PROBE_BATCHES)
    gov.observe(2, 32, 32 * 60e-6)
    assert gov.choose() == (2, None)
    gov.start()                                         # a new fit() call: its first chunk is
    assert gov.choose() == (2, None)                    # slow (cold caches, the worker asleep)
    gov.observe(2, 8, 8 * 200e-6)                       # and not taken as a load change
    assert gov.choose() == (2, None) and gov.per_batch[2] == 60e-6
    gov.observe(2, 8, 8 * 100e-6)                       # nor is any chunk shorter than a probe
    assert gov.choose() == (2, None) and 1 in gov.per_batch
    gov.observe(2, 32, 32 * 150e-6)                     # a probe's length is
    assert gov.choose() == (1, ThreadGovernor.PROBE_BATCHES)
