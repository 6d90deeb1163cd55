"""Streamed data beside in-memory arrays: one epoch of the reference network (784-100-10,
SGD) with batches of 256, from an in-memory array (the compiled fast path), a generator, a
PyDataset and a uint8 memmap (cast a chunk at a time). The target: streamed epochs within 1.3x
of the array epoch per row. Every variant trains on the same rows in the same order
(shuffle=False), so they do the same arithmetic; the difference is the data path. The pixels
are binarised (0 or 1), so the uint8 memmap holds exactly the values of the float32 array (raw
0..255 pixels would saturate the sigmoids and time a slower kernel, not the data path)."""
import numpy as np
import pytest

import fastdense
from fastdense import Sequential
from fastdense.layers import Dense

BATCH = 256
GROUP = "epoch from streamed data (784-100-10, batch 256, 48k rows)"


def model_256():
    fastdense.utils.set_random_seed(0)
    model = Sequential([Dense(100, activation="sigmoid", input_shape=(784,)),
                        Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def generator(x, y):
    while True:
        for i in range(0, len(x), BATCH):
            yield x[i:i + BATCH], y[i:i + BATCH]


class Batches(fastdense.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.x) // BATCH)

    def __getitem__(self, i):
        return self.x[i * BATCH:(i + 1) * BATCH], self.y[i * BATCH:(i + 1) * BATCH]


@pytest.fixture(scope="module")
def data(fashion):
    """(x, y): binarised pixels as float32, one-hot labels."""
    return (fashion[0] > 0.5).astype(np.float32), fashion[1]


@pytest.fixture(scope="module")
def uint8_memmap(data, tmp_path_factory):
    x = data[0]
    path = tmp_path_factory.mktemp("data") / "x.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=x.shape)
    mm[:] = x.astype(np.uint8)
    mm.flush()
    return np.memmap(path, dtype=np.uint8, mode="r", shape=x.shape)


def run(benchmark, fit):
    hist = benchmark.pedantic(fit, rounds=5, iterations=1, warmup_rounds=1)
    assert np.isfinite(hist.history["loss"][0])


@pytest.mark.benchmark(group=GROUP)
def test_fastdense_array_epoch(benchmark, data):
    x, y = data
    model = model_256()
    run(benchmark, lambda: model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0))


@pytest.mark.benchmark(group=GROUP)
def test_generator_epoch(benchmark, data):
    x, y = data
    model = model_256()
    gen = generator(x, y)
    steps = -(-len(x) // BATCH)
    run(benchmark, lambda: model.fit(gen, steps_per_epoch=steps, shuffle=False, verbose=0))


@pytest.mark.benchmark(group=GROUP)
def test_pydataset_epoch(benchmark, data):
    x, y = data
    model = model_256()
    data = Batches(x, y)
    run(benchmark, lambda: model.fit(data, shuffle=False, verbose=0))


@pytest.mark.benchmark(group=GROUP)
def test_uint8_memmap_epoch(benchmark, data, uint8_memmap):
    y = data[1]
    model = model_256()
    run(benchmark, lambda: model.fit(uint8_memmap, y, batch_size=BATCH, shuffle=False,
                                     verbose=0))


@pytest.mark.benchmark(group=GROUP)
def test_uint8_memmap_shuffled_epoch(benchmark, data, uint8_memmap):
    y = data[1]
    model = model_256()
    run(benchmark, lambda: model.fit(uint8_memmap, y, batch_size=BATCH, verbose=0))
