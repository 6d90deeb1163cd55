"""The one random generator behind everything fastdense draws: initial weights, shuffling, dropout.

`fastdense.utils.set_random_seed(seed)` resets it, so the same seed and data give bit-identical
training. Unseeded, it starts from fresh OS entropy like NumPy's default generator.
"""
import numpy as np

_state = {"rng": np.random.default_rng()}


def generator():
    """The current process-wide `np.random.Generator`."""
    return _state["rng"]


def seed(value):
    _state["rng"] = np.random.default_rng(value)
