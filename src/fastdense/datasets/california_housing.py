"""California Housing: 20,640 census block groups of 1990 California, 8 features each, and the
median house value (dollars) to predict.

`load_data()` returns the dataset exactly as `keras.datasets.california_housing.load_data()`
does: the same file (`california_housing.npz`, published by the Keras team, checked against the
same SHA-256), the same shuffle (NumPy's `RandomState(seed)`) and the same split.
"""
import numpy as np

from ._fetch import DatasetNotFoundError, NpzDataset

__all__ = ["load_data", "DatasetNotFoundError"]

URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/california_housing.npz"
# SHA-256 of the whole file, as keras.datasets.california_housing checks it.
_SHA256 = "1a2e3a52e0398de6463aebe6f4a8da34fb21fbb6b934cf88c3425e766f2a1a6f"
_MAX_DOWNLOAD_BYTES = 16 * 1024 * 1024  # the real file is well under 2 MB
_SMALL = 600  # rows of version="small"


def _file():
    return NpzDataset("California Housing", "california_housing", "california_housing.npz", URL,
                      _SHA256, _MAX_DOWNLOAD_BYTES)


def load_data(version="large", path="california_housing.npz", test_split=0.2, seed=113):
    """Loads the California Housing dataset (from the StatLib repository, via Keras).

    The 8 features, in order: MedInc (median income in the block group), HouseAge (median house
    age), AveRooms and AveBedrms (average rooms and bedrooms per household), Population,
    AveOccup (average household members), Latitude, Longitude. The target is the median house
    value in dollars (typically 25,000 to 500,000).

    The rows are shuffled with `numpy.random.RandomState(seed)`; the first
    `int(n * (1 - test_split))` become the training set, the rest the test set.

    `path` is found or downloaded as in `fastdense.datasets.mnist.load_data`: a bare file name is
    looked for in `$FASTDENSE_DATA` (or its `california_housing` sub-folder) and the user cache
    `~/.fastdense/datasets/california_housing`, a path with folders names the file itself.

    Args:
        version: `"large"` (all 20,640 rows) or `"small"` (the first 600, a stand-in for the
            retired Boston Housing dataset).
        path: the file name or path of `california_housing.npz`.
        test_split: fraction of the rows kept for the test set, in [0, 1).
        seed: the seed of the shuffle before the split.

    Returns:
        Tuple of NumPy arrays: `(x_train, y_train), (x_test, y_test)`; x of shape
        `(num_samples, 8)`, y of shape `(num_samples,)`.

    Raises:
        ValueError: a bad `version` or `test_split`, a file with another hash, or one that does
            not hold the arrays `x` and `y`.
        DatasetNotFoundError: (a `FileNotFoundError`) the file is not there and could not be
            downloaded; the message lists the places searched and how to get the data.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = fastdense.datasets.california_housing.load_data()
    assert x_train.shape == (16512, 8)
    ```
    """
    ok = isinstance(test_split, (int, float)) and not isinstance(test_split, bool)
    if not ok or not 0 <= test_split < 1:
        raise ValueError(f"`test_split` must be a number in [0, 1). Received: test_split={test_split!r}")
    if version not in ("small", "large"):
        raise ValueError(f"`version` must be one of 'small', 'large'. Received: version={version!r}")
    dataset = _file()
    x, y = dataset.load(path, ("x", "y"))
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{dataset.filename}: x and y must have shapes (n, 8) and (n,); they have "
                         f"shapes {x.shape} and {y.shape}.")
    if version == "small":
        x, y = x[:_SMALL], y[:_SMALL]
    indices = np.arange(len(x))
    np.random.RandomState(seed).shuffle(indices)
    x, y = x[indices], y[indices]
    cut = int(len(x) * (1 - test_split))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
