"""fastdense: Keras's Sequential API for dense neural networks, on compiled CPU kernels.

    from fastdense import Sequential
    from fastdense.layers import Dense
"""
from ._version import __version__

try:
    from . import _kernels  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without a build (e.g. PYTHONPATH=src)
    raise ImportError(
        "fastdense's compiled kernels (fastdense._kernels) could not be imported: "
        f"{exc}. Build and install them with `pip install .` from the repository's root (it needs "
        "a C compiler, e.g. `apt-get install build-essential python3-dev`), or "
        "`pip install -e .` while developing."
    ) from exc

from . import (activations, callbacks, config, datasets, initializers, layers, losses, metrics,
               models, ops, optimizers, regularizers, saving, utils)
from .layers import Input
from .models import Sequential, load_model

__all__ = [
    "__version__", "Sequential", "Input", "load_model", "activations", "callbacks", "config",
    "datasets", "initializers", "layers", "losses", "metrics", "models", "ops", "optimizers",
    "regularizers", "saving", "utils",
]


def __getattr__(name):
    # `fastdense.wrappers` (scikit-learn) and `fastdense.export` (ONNX) load on first use, so
    # `import fastdense` stays as light as before and their optional dependencies stay optional.
    if name in ("wrappers", "export"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastdense' has no attribute {name!r}")
