"""Memory stays flat: many `predict` calls on one row and many `fit` calls keep neither Python
objects (tracemalloc, which also sees NumPy's data buffers) nor process memory (RSS from
/proc/self/statm) growing after warm-up."""
import gc
import os
import sys
import tracemalloc

import numpy as np
import pytest

from fastdense import Sequential, layers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the resident set size from /proc/self/statm")

KB, MB = 1024, 1024 * 1024
# Under AddressSanitizer (tools/sanitize.sh) freed memory sits in ASan's quarantine, so the RSS
# grows by design; the tracemalloc bound still applies there.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _growth(step, calls, warmup):
    """(Python bytes still allocated, RSS growth) over `calls` calls of `step` after warm-up."""
    for _ in range(warmup):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        rss0 = _rss()
        for _ in range(calls):
            step()
        gc.collect()
        rss1 = _rss()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current, rss1 - rss0


def _mnist_like_model():
    model = Sequential([layers.Dense(100, activation="sigmoid", input_shape=(784,)),
                        layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
def test_predict_on_one_row_does_not_grow_memory(dtype):
    model = _mnist_like_model()
    x = (np.random.default_rng(0).random((1, 784)) * 255).astype(dtype)
    calls = 10_000 if dtype == "float32" else 1_000  # other dtypes add the conversion path

    def step():
        model.predict(x, verbose=0)
        model(x)

    python_bytes, rss = _growth(step, calls, warmup=300)
    # One leaked (1, 10) output per call would be > 1 MB of Python objects.
    assert python_bytes < 64 * KB, f"{python_bytes} bytes still allocated after {calls} predicts"
    assert UNDER_ASAN or rss < 2 * MB, f"RSS grew by {rss / MB:.2f} MB over {calls} predicts"


def test_repeated_fit_does_not_grow_memory():
    rng = np.random.default_rng(0)
    x = rng.random((256, 784)).astype(np.float32)
    y = np.eye(10)[rng.integers(0, 10, 256)]
    model = _mnist_like_model()

    def step():
        model.fit(x, y, epochs=1, batch_size=32, validation_data=(x[:64], y[:64]), verbose=0)

    python_bytes, rss = _growth(step, calls=20, warmup=3)
    # One leaked copy of the data or of the gradients per fit would be >= 300 KB each time.
    assert python_bytes < 256 * KB, f"{python_bytes} bytes still allocated after 20 fits"
    assert UNDER_ASAN or rss < 4 * MB, f"RSS grew by {rss / MB:.2f} MB over 20 fits"
