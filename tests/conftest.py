"""Shared fixtures. Tests import the installed fastdense (pytest runs with --import-mode=importlib)."""
import os
from pathlib import Path

import numpy as np
import pytest

import fastdense

# ../shared beside the repository (CI lays a copy there); FASTDENSE_SHARED overrides.
SHARED = Path(os.environ.get("FASTDENSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
KERAS_FIXTURES = SHARED / "keras_fixtures"


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


def make_blobs(n=200, d=6, classes=3, seed=0):
    """Separable-ish synthetic classification data (float64 x, int y)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, d))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1, (n, d))
    return x, y
