"""Data that is not one in-memory array: generators, iterators, PyDatasets, memmaps and large
arrays read a chunk at a time (fastdense/_data.py and the streamed path of Sequential).

The reference for every streamed run is the in-memory array run with the same seed: the same
batches must give the same bits (weights, history, evaluate, predict).
"""
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastdense
from fastdense import Sequential, _data, layers
from fastdense.utils import PyDataset, set_random_seed

N, D, C = 300, 12, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.integers(0, C, N)
    sw = rng.uniform(0.2, 2.0, N)
    xv = rng.normal(size=(70, D)).astype(np.float32)
    yv = rng.integers(0, C, 70)
    return x, y, sw, xv, yv


def make_model(seed=3, optimizer="adam", units=8):
    set_random_seed(seed)
    model = Sequential([layers.Dense(units, activation="relu", input_shape=(D,)),
                        layers.Dense(C, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def batches(*arrays, batch_size, repeat=True):
    """A generator of the batches the array path makes with shuffle=False."""
    n = len(arrays[0])
    while True:
        for i in range(0, n, batch_size):
            yield tuple(a[i:i + batch_size] for a in arrays)
        if not repeat:
            return


class Batches(PyDataset):
    """Batches of arrays by index; records the indices asked for."""

    def __init__(self, *arrays, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.arrays, self.batch_size = arrays, batch_size
        self.asked, self.epoch_ends, self.lock = [], 0, threading.Lock()

    def __len__(self):
        return -(-len(self.arrays[0]) // self.batch_size)

    def __getitem__(self, i):
        with self.lock:
            self.asked.append(i)
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return tuple(a[s] for a in self.arrays)

    def on_epoch_end(self):
        self.epoch_ends += 1


def assert_same_training(m1, h1, m2, h2):
    assert h1.history == h2.history
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- generators and iterators ---------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [32, 50, 256])
def test_generator_with_steps_gives_the_array_result(data, batch_size):
    x, y, _, xv, yv = data
    m1 = make_model()
    h1 = m1.fit(x, y, batch_size=batch_size, epochs=3, shuffle=False, verbose=0,
                validation_data=(xv, yv))
    m2 = make_model()
    steps = -(-N // batch_size)
    h2 = m2.fit(batches(x, y, batch_size=batch_size), steps_per_epoch=steps, epochs=3,
                shuffle=False, verbose=0, validation_data=(xv, yv))
    assert_same_training(m1, h1, m2, h2)
    assert h2.params["steps"] == steps


def test_generator_with_sample_weights_and_validation_generator(data):
    x, y, sw, xv, yv = data
    m1 = make_model(optimizer="sgd")
    h1 = m1.fit(x, y, sample_weight=sw, batch_size=40, epochs=2, shuffle=False, verbose=0,
                validation_data=(xv, yv))
    m2 = make_model(optimizer="sgd")
    h2 = m2.fit(batches(x, y, sw, batch_size=40), steps_per_epoch=8, epochs=2, verbose=0,
                validation_data=batches(xv, yv, batch_size=40), validation_steps=2)
    assert_same_training(m1, h1, m2, h2)


def test_generator_with_class_weight(data):
    x, y, _, _, _ = data
    cw = {0: 0.5, 1: 2.0, 2: 1.0}
    m1 = make_model()
    h1 = m1.fit(x, y, class_weight=cw, batch_size=64, epochs=2, shuffle=False, verbose=0)
    m2 = make_model()
    h2 = m2.fit(batches(x, y, batch_size=64), steps_per_epoch=5, class_weight=cw, epochs=2,
                verbose=0)
    assert_same_training(m1, h1, m2, h2)


def test_iterator_without_steps_is_read_to_its_end(data):
    x, y, _, _, _ = data
    m1 = make_model()
    h1 = m1.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    m2 = make_model()
    h2 = m2.fit(iter(list(batches(x, y, batch_size=64, repeat=False))), epochs=1, verbose=0)
    assert_same_training(m1, h1, m2, h2)
    assert h2.params["steps"] is None  # unknown when training starts, as in Keras


def test_iterator_is_not_restarted_between_epochs(data):
    x, y, _, _, _ = data
    model = make_model()
    with pytest.raises(ValueError, match=r"ran out of data: pass 2 got no batch.*steps_per_epoch"):
        model.fit(batches(x, y, batch_size=64, repeat=False), epochs=2, verbose=0)


def test_generator_running_dry_before_steps_per_epoch(data):
    x, y, _, _, _ = data
    model = make_model()
    with pytest.raises(ValueError, match=r"ran out of data after 2 of the 3 batches asked for "
                                         r"pass 2.*Received: steps=3"):
        model.fit(batches(x, y, batch_size=64, repeat=False), steps_per_epoch=3, epochs=2,
                  verbose=0)


def test_batches_of_several_sizes_train_like_train_on_batch(data):
    x, y, _, _, _ = data
    sizes = [50, 50, 20, 64, 64, 7, 45]
    cuts = np.cumsum([0] + sizes)
    parts = [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    m1 = make_model()
    losses = [m1.train_on_batch(bx, by)[0] for bx, by in parts]
    m2 = make_model()
    h2 = m2.fit(iter(parts), epochs=1, verbose=0)
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    expected = np.dot(losses, sizes) / sum(sizes)  # the batch-size-weighted mean
    assert h2.history["loss"][0] == pytest.approx(expected, rel=1e-6)


def test_evaluate_and_predict_take_generators(data):
    x, y, sw, _, _ = data
    model = make_model()
    model.fit(x, y, epochs=1, verbose=0)
    expected = model.evaluate(x, y, sample_weight=sw, batch_size=32, verbose=0)
    got = model.evaluate(batches(x, y, sw, batch_size=32), steps=10, verbose=0)
    assert got == expected
    assert model.evaluate(batches(x, y, sw, batch_size=32, repeat=False), verbose=0) == expected
    out = model.predict(x, verbose=0)
    np.testing.assert_array_equal(
        model.predict(batches(x, batch_size=32), steps=10, verbose=0), out)
    bare = (x[i:i + 100] for i in range(0, N, 100))  # bare arrays are accepted for predict
    np.testing.assert_array_equal(model.predict(bare, verbose=0), out)
    logs = model.evaluate(batches(x, y, batch_size=64), steps=5, verbose=1, return_dict=True)
    assert logs == model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)


def test_generator_builds_an_unbuilt_model(data):
    x, y, _, _, _ = data
    model = Sequential([layers.Dense(4, activation="relu"), layers.Dense(C, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(batches(x, y, batch_size=32), steps_per_epoch=3, verbose=0)
    assert model.input_shape == (None, D)


# -- PyDataset ------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 3])
def test_pydataset_gives_the_array_result(data, workers):
    x, y, _, xv, yv = data
    m1 = make_model()
    h1 = m1.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0, validation_data=(xv, yv))
    m2 = make_model()
    train = Batches(x, y, batch_size=64, workers=workers, use_multiprocessing=True)
    val = Batches(xv, yv, batch_size=64)
    h2 = m2.fit(train, epochs=3, shuffle=False, verbose=0, validation_data=val)
    assert_same_training(m1, h1, m2, h2)
    assert train.epoch_ends == 3 and val.epoch_ends == 3
    assert train.asked[-5:] == [0, 1, 2, 3, 4]


def test_pydataset_shuffle_visits_every_batch_once_per_epoch_in_new_orders(data):
    x, y, _, _, _ = data
    ds = Batches(x, y, batch_size=20)  # 15 batches
    model = make_model()
    model.fit(ds, epochs=3, verbose=0)
    assert len(ds.asked) == 45  # the batch that built the model is the first one trained on
    epochs = [ds.asked[i * 15:(i + 1) * 15] for i in range(3)]
    assert all(sorted(e) == list(range(15)) for e in epochs)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    again = Batches(x, y, batch_size=20)
    make_model().fit(again, epochs=3, verbose=0)
    assert again.asked == ds.asked  # the seed fixes the order


def test_pydataset_steps_per_epoch_continues_where_the_last_epoch_stopped(data):
    x, y, _, _, _ = data
    ds = Batches(x, y, batch_size=100)  # 3 batches
    make_model().fit(ds, steps_per_epoch=2, epochs=3, shuffle=False, verbose=0)
    assert ds.asked == [0, 1, 2, 0, 1, 2]


def test_pydataset_evaluate_and_predict(data):
    x, y, _, _, _ = data
    model = make_model()
    model.fit(x, y, epochs=1, verbose=0)
    assert model.evaluate(Batches(x, y, batch_size=32), verbose=0) == \
        model.evaluate(x, y, batch_size=32, verbose=0)
    np.testing.assert_array_equal(model.predict(Batches(x, batch_size=32), verbose=0),
                                  model.predict(x, verbose=0))


def test_pydataset_protocol():
    class NoSuper(PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return np.zeros((2, D)), np.zeros(2)

    ds = NoSuper()
    assert (ds.workers, ds.use_multiprocessing, ds.max_queue_size) == (1, False, 10)
    assert ds.num_batches == 1
    assert fastdense.utils.Sequence is PyDataset
    with pytest.raises(ValueError, match=r"`workers` must be a positive integer.*workers=0"):
        PyDataset(workers=0)


# -- arrays read a chunk at a time ------------------------------------------------------------------
@pytest.fixture
def uint8_data(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(700, D), dtype=np.uint8)
    y = rng.integers(0, C, 700)
    path = tmp_path / "x.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    del mm
    return x, y, np.memmap(path, dtype=np.uint8, mode="r", shape=x.shape)


@pytest.mark.parametrize("shuffle", [True, False])
def test_memmap_gives_the_in_memory_result(uint8_data, shuffle):
    x, y, mm = uint8_data
    assert _data.streams_array(mm, "float32") and not _data.streams_array(x, "float32")
    m1 = make_model(optimizer="sgd")
    h1 = m1.fit(x, y, batch_size=32, epochs=3, shuffle=shuffle, verbose=0, validation_split=0.2)
    m2 = make_model(optimizer="sgd")
    h2 = m2.fit(mm, y, batch_size=32, epochs=3, shuffle=shuffle, verbose=0, validation_split=0.2)
    assert_same_training(m1, h1, m2, h2)
    assert m2.evaluate(mm, y, verbose=0) == m1.evaluate(x, y, verbose=0)
    np.testing.assert_array_equal(m2.predict(mm, verbose=0), m1.predict(x, verbose=0))


def test_large_arrays_are_cast_a_chunk_at_a_time(monkeypatch, data):
    x, y, sw, xv, yv = data
    x64 = x.astype(np.float64)
    m1 = make_model()
    h1 = m1.fit(x64, y, sample_weight=sw, batch_size=16, epochs=2, verbose=0,
                validation_data=(xv.astype(np.float64), yv))
    monkeypatch.setattr(_data, "STREAM_BYTES", 1000)
    monkeypatch.setattr(_data, "PIECE_ROWS", 50)
    assert _data.streams_array(x64, "float32")
    m2 = make_model()
    h2 = m2.fit(x64, y, sample_weight=sw, batch_size=16, epochs=2, verbose=0,
                validation_data=(xv.astype(np.float64), yv))
    assert_same_training(m1, h1, m2, h2)
    assert m2.evaluate(x64, y, verbose=0) == m1.evaluate(x, y, verbose=0)


def test_nan_in_a_chunk_is_reported(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, D))
    x[77, 3] = np.nan
    mm = np.memmap(tmp_path / "x.f8", dtype=np.float64, mode="w+", shape=x.shape)
    mm[:] = x
    with pytest.raises(ValueError, match=r"Input x \(rows .*\) contains NaN"):
        make_model().fit(mm, np.zeros(100, int), shuffle=False, verbose=0)


def test_memory_does_not_grow_with_a_uint8_memmap(tmp_path):
    """One epoch on a 300 MB uint8 memmap: the in-memory path would make a 1.2 GB float32 copy;
    the process's own (anonymous) memory must stay far below even the uint8 size."""
    rows, width = 400_000, 784
    path = tmp_path / "big.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=(rows, width))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 50_000):
        mm[start:start + 50_000] = rng.integers(0, 256, size=(50_000, width), dtype=np.uint8)
    mm.flush()
    del mm
    script = textwrap.dedent(f"""
        import json, threading, time
        import numpy as np
        import fastdense
        from fastdense import layers

        def anon_kb():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1])

        x = np.memmap({str(path)!r}, dtype=np.uint8, mode="r", shape=({rows}, {width}))
        y = (np.arange({rows}) % 10).astype(np.uint8)
        model = fastdense.Sequential([layers.Dense(4, activation="relu", input_shape=({width},)),
                                      layers.Dense(10, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(x[:1000], y[:1000], batch_size=256, verbose=0)  # warm up (imports, plans)
        base = peak = anon_kb()
        done = False

        def sample():
            global peak
            while not done:
                peak = max(peak, anon_kb())
                time.sleep(0.005)

        t = threading.Thread(target=sample)
        t.start()
        model.fit(x, y, batch_size=256, epochs=1, verbose=0)
        done = True
        t.join()
        print(json.dumps({{"growth_mb": (max(peak, anon_kb()) - base) / 1024}}))
    """)
    env = dict(os.environ, FASTDENSE_NUM_THREADS="1")
    if "libasan" in env.get("LD_PRELOAD", ""):  # tools/sanitize.sh: freed chunks sit in ASan's
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"  # quarantine
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    growth = json.loads(out.stdout.strip().splitlines()[-1])["growth_mb"]
    data_mb = rows * width / 2**20  # 299 MB of uint8; its float32 copy would be 1196 MB
    assert growth < 100, f"anonymous memory grew by {growth:.0f} MB on {data_mb:.0f} MB of data"


# -- errors ---------------------------------------------------------------------------------------
def _gen(*items):
    yield from items


GOOD = (np.zeros((4, D), np.float32), np.zeros(4, int))


@pytest.mark.parametrize("make, error, pattern", [
    pytest.param(lambda: _gen(GOOD, (np.full((4, D), "a"), np.zeros(4, int))), TypeError,
                 r"`x in batch 1 of the generator` must hold real numbers.*dtype=<U1",
                 id="string column"),
    pytest.param(lambda: _gen(GOOD, (np.zeros((4, D + 1)), np.zeros(4, int))), ValueError,
                 r"Input x in batch 1 of the generator is incompatible.*shape=\(4, 13\)",
                 id="ragged batch"),
    pytest.param(lambda: _gen(GOOD, (np.zeros((4, D)), np.zeros(3, int))), ValueError,
                 r"`x in batch 1 of the generator` and `y in batch 1 of the generator` must have "
                 r"the same number of samples", id="x and y lengths differ"),
    pytest.param(lambda: _gen(GOOD, {"x": 1}), TypeError,
                 r"must be a tuple \(x, y\).*batch 1 of type dict", id="not a tuple"),
    pytest.param(lambda: _gen(GOOD, GOOD + (np.ones(4), 1)), ValueError,
                 r"batch 1, a tuple of 4 elements", id="tuple of 4"),
    pytest.param(lambda: _gen((GOOD[0],)), ValueError,
                 r"must hold targets.*batch 0, a tuple of 1 element", id="no targets"),
    pytest.param(lambda: _gen(), ValueError, r"yielded no batch", id="empty generator"),
    pytest.param(lambda: _gen(GOOD, (np.full((4, D), np.nan), np.zeros(4, int))), ValueError,
                 r"Input x in batch 1 of the generator contains NaN", id="NaN"),
    pytest.param(lambda: _gen(GOOD, (GOOD[0], np.full(4, 7))), ValueError,
                 r"`y in batch 1 of the generator` holds a class label outside \[0, 3\)",
                 id="label out of range"),
])
def test_bad_batches_are_named(make, error, pattern):
    model = make_model()
    with pytest.raises(error, match=pattern):
        model.fit(make(), epochs=1, verbose=0)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"y": np.zeros(4)}, r"`y` must not be given.*Received: y of type ndarray"),
    ({"sample_weight": np.ones(4)}, r"`sample_weight` must not be given"),
    ({"validation_split": 0.2}, r"pass `validation_data` instead.*validation_split=0.2"),
    ({"steps_per_epoch": 0}, r"`steps_per_epoch` must be a positive integer.*steps_per_epoch=0"),
    ({"validation_steps": 1.5}, r"`validation_steps` must be a positive integer"),
])
def test_arguments_that_do_not_go_with_a_generator(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_model().fit(_gen(GOOD), verbose=0, **kwargs)


def test_class_weight_with_weighted_batches_is_refused():
    with pytest.raises(ValueError, match=r"cannot use `class_weight` and `sample_weight`"):
        make_model().fit(_gen(GOOD + (np.ones(4),)), class_weight={0: 1.0}, verbose=0)


def test_steps_with_arrays_are_refused(data):
    x, y, _, _, _ = data
    model = make_model()
    with pytest.raises(ValueError, match=r"`steps_per_epoch` bounds a generator.*"
                                         r"steps_per_epoch=3 with x of type ndarray"):
        model.fit(x, y, steps_per_epoch=3, verbose=0)
    with pytest.raises(ValueError, match=r"`steps` bounds a generator.*steps=3"):
        model.evaluate(x, y, steps=3, verbose=0)
    with pytest.raises(ValueError, match=r"`steps` bounds a generator.*steps=3"):
        model.predict(x, steps=3, verbose=0)
    with pytest.raises(ValueError, match=r"`validation_steps` bounds a generator.*"
                                         r"validation_steps=2 with x_val of type ndarray"):
        model.fit(x, y, validation_data=(x, y), validation_steps=2, verbose=0)


def test_bad_pydatasets_are_named(data):
    x, y, _, _, _ = data

    class Empty(PyDataset):
        def __len__(self):
            return 0

    with pytest.raises(ValueError, match=r"PyDataset Empty passed as `x` is empty.*len\(x\)=0"):
        make_model().fit(Empty(), verbose=0)
    with pytest.raises(ValueError, match=r"holds 3 batches, fewer than the 4 steps.*steps=4"):
        make_model().fit(Batches(x, y, batch_size=100), steps_per_epoch=4, verbose=0)
    with pytest.raises(ValueError, match=r"`validation_data` must be a tuple.*a generator or a "
                                         r"PyDataset"):
        make_model().fit(x, y, validation_data=x, verbose=0)


def test_a_rejected_first_batch_leaves_the_model_unbuilt():
    model = Sequential([layers.Dense(4), layers.Dense(C, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="batch 0"):
        model.fit(_gen((np.zeros((4, D)), np.full(4, 9))), verbose=0)
    assert not model.built


def test_endless_pydataset_needs_steps(data):
    x, y, _, _, _ = data

    class Endless(PyDataset):
        num_batches = None

        def __getitem__(self, i):
            return x[:10], y[:10]

    with pytest.raises(ValueError, match=r"is endless.*`steps_per_epoch`"):
        make_model().fit(Endless(), verbose=0)
    history = make_model().fit(Endless(), steps_per_epoch=3, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2


def test_streamed_evaluate_and_predict_run_callbacks_per_batch(data):
    x, y, _, _, _ = data
    model = make_model()
    seen = {"test": [], "predict": []}
    cb = fastdense.callbacks.LambdaCallback(
        on_test_batch_end=lambda b, logs: seen["test"].append(b),
        on_predict_batch_end=lambda b, logs: seen["predict"].append(b))
    # per-batch hooks make the array path evaluate in the user's batches too: the same sums
    expected = model.evaluate(x, y, batch_size=100, callbacks=[cb], verbose=0)
    assert seen["test"] == [0, 1, 2]
    assert model.evaluate(Batches(x, y, batch_size=100), callbacks=[cb], verbose=0) == expected
    assert seen["test"] == [0, 1, 2] * 2
    out = model.predict(Batches(x, batch_size=100), callbacks=[cb], verbose=0)
    np.testing.assert_array_equal(out, model.predict(x, verbose=0))
    assert seen["predict"] == [0, 1, 2]


def test_streamed_fit_runs_callbacks_per_batch(data):
    x, y, _, _, _ = data
    m1 = make_model()
    h1 = m1.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
    batches_seen = []
    cb = fastdense.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches_seen.append(b))
    m2 = make_model()
    h2 = m2.fit(Batches(x, y, batch_size=64), epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    assert_same_training(m1, h1, m2, h2)
    assert batches_seen == [0, 1, 2, 3, 4] * 2
