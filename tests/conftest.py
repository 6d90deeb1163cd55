"""Shared fixtures. Tests import the installed fastdense (pytest runs with --import-mode=importlib)."""
from pathlib import Path

import numpy as np
import pytest

import fastdense

# The repository's own copy of the TF-Keras 3.15.1 reference fixtures (see its README.md).
DATA = Path(__file__).resolve().parent / "data"
KERAS_FIXTURES = DATA / "keras_fixtures"


@pytest.fixture(autouse=True)
def _isolate_global_state():
    """Every test starts from float32 and a fixed seed, and leaves them so."""
    fastdense.config.set_floatx("float32")
    fastdense.utils.set_random_seed(1234)
    yield
    fastdense.config.set_floatx("float32")


@pytest.fixture
def float64():
    fastdense.config.set_floatx("float64")
    yield
    fastdense.config.set_floatx("float32")


def _assert_same_bits(a, b):
    if isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_bits(x, y)
    else:
        assert a == b


def _same_bits_for_all(results):
    for other in results[1:]:
        _assert_same_bits(results[0], other)
    return results[-1]


@pytest.fixture
def same_bits_with_option():
    """check(name, run): calls run(options) with the engine option `name` (a keyword of
    _kernels.Trainer, or of dense_backward) off and on, each with one and two threads
    (options["threads"]); run builds its model and sets `model._engine_options = options`.
    Asserts that the four results (arrays, or lists, tuples and dicts of them) have the same
    bits; returns the last."""
    def check(name, run):
        return _same_bits_for_all([run({name: on, "threads": threads})
                                   for on in (False, True) for threads in (1, 2)])

    return check


SIMD_LEVELS = [(False, False), (True, False), (True, True)]  # portable, AVX2, AVX-512


@pytest.fixture
def same_bits_with_simd():
    """check(run): calls run(options) on the portable kernels, on AVX2 and on AVX-512 (as far as
    the CPU has them; the one process-wide switch, `_kernels._set_simd`), each with one and two
    threads, and asserts the same bits; returns the last. Leaves the best kernels on."""
    from fastdense import _kernels

    def check(run):
        results = []
        try:
            for on, avx512 in SIMD_LEVELS:
                _kernels._set_simd(on, avx512)
                results += [run({"threads": threads}) for threads in (1, 2)]
        finally:
            _kernels._set_simd(True)
        return _same_bits_for_all(results)

    return check


def make_blobs(n=200, d=6, classes=3, seed=0):
    """Separable-ish synthetic classification data (float64 x, int y)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, d))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1, (n, d))
    return x, y


def assert_history_matches_keras(history, spec):
    """A fit's per-epoch history against a Keras fixture's (float32 rtol 1e-4); Python floats."""
    assert sorted(history.history) == sorted(spec["history"])
    for key, expected in spec["history"].items():
        np.testing.assert_allclose(history.history[key], expected, rtol=1e-4, err_msg=key)
        assert all(type(v) is float for v in history.history[key])


def assert_weights_match_keras(got, spec, arrays, rtol=1e-4):
    """get_weights() after training against a Keras fixture's trained_0.. arrays."""
    assert len(got) == spec["n_weights"]
    for i, w in enumerate(got):
        expected = arrays[f"trained_{i}"]
        assert w.shape == expected.shape and w.dtype == expected.dtype, f"weight {i}"
        np.testing.assert_allclose(w, expected, rtol=rtol, atol=1e-6, err_msg=f"weight {i}")
