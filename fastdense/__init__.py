"""fastdense: Keras's Sequential API for dense neural networks, on compiled CPU kernels.

    from fastdense import Sequential
    from fastdense.layers import Dense
"""
from ._version import __version__

try:
    from . import _kernels  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "fastdense's compiled kernels (fastdense._kernels) could not be imported: "
        f"{exc}. Install fastdense with `pip install .` (or a wheel), which compiles them; "
        "running from a source checkout without building does not work."
    ) from exc

from . import (activations, callbacks, config, datasets, initializers, layers, losses, metrics,
               models, optimizers, regularizers, saving, utils)
from .layers import Input
from .models import Sequential, load_model

__all__ = [
    "__version__", "Sequential", "Input", "load_model", "activations", "callbacks", "config",
    "datasets", "initializers", "layers", "losses", "metrics", "models", "optimizers",
    "regularizers", "saving", "utils",
]
