"""A model as the bytes of its `.keras` file, and back: what pickling moves.

Keras 3 pickles a model as its `.keras` zip, so joblib, Dask, `multiprocessing` and
`copy.deepcopy` move exactly what `model.save` writes (architecture, weights, compile config,
optimizer state) and nothing else from the object graph (no locks, caches or thread state).
The bytes go through a private temporary file so the one tested writer and the one hardened
reader of `fastdense.saving` are used unchanged.
"""
import os
import tempfile


def to_bytes(model):
    """The `.keras` file `model.save` would write, as bytes."""
    from . import saving

    with tempfile.TemporaryDirectory(prefix="fastdense-") as folder:
        path = os.path.join(folder, "model.keras")
        saving.save_model(model, path)
        with open(path, "rb") as fh:
            return fh.read()


def from_bytes(data):
    """A new model from the bytes of a `.keras` file (compiled if the file holds a compile config).

    Raises:
        TypeError: if `data` is not bytes.
        ValueError: if the bytes are not a `.keras` file fastdense can load.
    """
    from . import saving

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("A pickled fastdense model holds the bytes of a `.keras` file. "
                        f"Received: data of type {type(data).__name__}")
    with tempfile.TemporaryDirectory(prefix="fastdense-") as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as fh:
            fh.write(data)
        return saving.load_model(path, compile=True)
