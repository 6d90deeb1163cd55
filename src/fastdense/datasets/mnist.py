"""MNIST: 28x28 grayscale pictures of handwritten digits, 0 to 9.

`load_data()` returns the dataset exactly as `keras.datasets.mnist.load_data()` does, from the
same file (`mnist.npz`, published by the Keras team), checked against the same SHA-256.
"""
import numpy as np

from ._fetch import DatasetNotFoundError, NpzDataset

__all__ = ["load_data", "DatasetNotFoundError"]

URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
# SHA-256 of the whole file, as keras.datasets.mnist checks it.
_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_MAX_DOWNLOAD_BYTES = 32 * 1024 * 1024  # the real file is about 11 MB
_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _file():
    return NpzDataset("MNIST", "mnist", "mnist.npz", URL, _SHA256, _MAX_DOWNLOAD_BYTES)


def load_data(path="mnist.npz"):
    """Loads the MNIST dataset.

    60,000 training and 10,000 test images of handwritten digits, 28x28 pixels in grayscale.

    `path` is where the file is kept. A bare file name (the default) is looked for in the
    folder named by the `FASTDENSE_DATA` environment variable (or its `mnist` sub-folder) and
    in the user cache `~/.fastdense/datasets/mnist`; a path with folders names the file itself.
    When the file is not there it is downloaded from the Keras team's storage to that place
    (the user cache for a bare name). The file must have the SHA-256 Keras checks.

    Args:
        path: the file name or path of `mnist.npz`.

    Returns:
        Tuple of NumPy arrays: `(x_train, y_train), (x_test, y_test)`.

        **`x_train`**: `uint8` array of shape `(60000, 28, 28)`, values 0 to 255.
        **`y_train`**: `uint8` array of digit labels (0-9), shape `(60000,)`.
        **`x_test`**: `uint8` array of shape `(10000, 28, 28)`.
        **`y_test`**: `uint8` array of digit labels, shape `(10000,)`.

    Raises:
        DatasetNotFoundError: (a `FileNotFoundError`) the file is not there and could not
            be downloaded; the message lists the places searched and how to get the data.
        ValueError: the file's hash differs or it does not hold the MNIST arrays.

    MNIST is by Yann LeCun and Corinna Cortes (a derivative of NIST's data), under the
    Creative Commons Attribution-Share Alike 3.0 license.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = fastdense.datasets.mnist.load_data()
    assert x_train.shape == (60000, 28, 28)
    ```
    """
    dataset = _file()
    x_train, y_train, x_test, y_test = dataset.load(path, _KEYS)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{dataset.filename}: x_{split} and y_{split} must hold images "
                             f"(n, 28, 28) and n labels; they have shapes {x.shape} and {y.shape}.")
    return (x_train, y_train), (x_test, y_test)
