"""The portable C kernels (what ARM, MSVC and -DFASTDENSE_NO_SIMD builds run, and x86 CPUs without
AVX2/FMA) give the AVX2 kernels' bits: whole trainings and predictions, with one and two threads.
On a build without the AVX2 kernels both settings run the portable ones (the same check then
covers thread counts only)."""
import numpy as np
import pytest

import fastdense
from fastdense import _kernels
from fastdense.layers import Dense, Dropout


@pytest.mark.parametrize("arch, loss, optimizer, batch_size", [
    ([(100, "sigmoid"), (10, "softmax")], "categorical_crossentropy", "sgd", 32),
    ([(40, "relu"), "dropout", (24, "tanh"), (3, "softmax")], "sparse_categorical_crossentropy",
     "adam", 50),
    ([(30, "tanh"), (2, None)], "mse", "rmsprop", 1),
])
def test_portable_kernels_give_the_avx2_bits(arch, loss, optimizer, batch_size,
                                             same_bits_with_simd):
    rng = np.random.default_rng(5)
    n = 120 if batch_size == 1 else 600
    x = rng.random((n, 70)).astype(np.float32)
    x[x < 0.4] = 0
    out = arch[-1][0]
    y = {"categorical_crossentropy": lambda: np.eye(out)[rng.integers(0, out, n)],
         "sparse_categorical_crossentropy": lambda: rng.integers(0, out, n),
         "mse": lambda: rng.normal(size=(n, out))}[loss]()

    def run(options):
        fastdense.utils.set_random_seed(3)
        layers = [Dropout(0.25) if a == "dropout" else Dense(a[0], activation=a[1]) for a in arch]
        model = fastdense.Sequential([fastdense.Input((70,))] + layers)
        model._engine_options = options
        model.compile(optimizer=optimizer, loss=loss)
        history = model.fit(x, y, epochs=2, batch_size=batch_size, verbose=0)
        return model.get_weights() + [model.predict(x, verbose=0), model(x[:1]),
                                      np.array(history.history["loss"])]

    result = same_bits_with_simd(run)
    assert all(np.isfinite(r).all() for r in result)
