"""Fashion-MNIST: 28x28 grayscale pictures of clothing in 10 classes.

`load_data()` returns the dataset exactly as `keras.datasets.fashion_mnist.load_data()`
does. The four IDX files are read from a local folder when one holds them (an explicit
`path=`, `$FASTDENSE_DATA`, the user cache, or the folder of Debian's
`dataset-fashion-mnist` package) and are otherwise downloaded once, from the files
published by Zalando Research, into the user cache. Every file is checked against the
SHA-256 of its decompressed content, so any copy holding the original data is accepted,
whatever gzip settings compressed it.
"""

import gzip
import hashlib
import math
import os
import struct
import zlib

import numpy as np

from . import _fetch
from ._fetch import DatasetNotFoundError, ENV_VAR

__all__ = ["load_data", "DatasetNotFoundError"]

# Where Zalando Research publishes the files (linked from the "Get the Data" section of
# github.com/zalandoresearch/fashion-mnist). This S3 website endpoint only serves plain
# HTTP; the SHA-256 check below is what makes the download trustworthy.
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
_FILES = (_TRAIN_IMAGES, _TRAIN_LABELS, _TEST_IMAGES, _TEST_LABELS)

# SHA-256 of the *decompressed* IDX bytes. Debian re-compresses the files, so the .gz
# bytes differ from Zalando's while the data inside is identical.
_SHA256 = {
    _TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    _TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    _TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    _TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# Folders installed by system packages (Debian/Ubuntu: `apt-get install dataset-fashion-mnist`).
_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_SYSTEM_DIRS = (_DEBIAN_DIR,)

_NUM_CLASSES = 10

# IDX magic numbers this loader accepts (unsigned bytes), mapped to their rank.
_IDX_MAGIC = {0x00000801: 1, 0x00000803: 3}
_GZIP_MAGIC = b"\x1f\x8b"

# Upper bounds checked before anything is allocated. The largest real file holds
# 47,040,000 bytes of pixels; the largest real download is about 26 MB.
_MAX_IDX_BYTES = 128 * 1024 * 1024
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_CHUNK = _fetch.CHUNK


def _how_to_get_data():
    return (
        "To get the data, do one of: run `apt-get install dataset-fashion-mnist` "
        f"(Debian/Ubuntu; installs the files in {_DEBIAN_DIR}); or download "
        f"{', '.join(_FILES)} from {BASE_URL} into a folder and set the {ENV_VAR} "
        "environment variable to that folder or pass load_data(path=that_folder); "
        "or call load_data() again when this machine can reach the internet."
    )


def _cache_dir():
    """Return the per-user cache folder that downloads go to."""
    return os.path.join(_fetch.cache_root(), "fashion-mnist")


def _missing(folder):
    """Return the names of the dataset files absent from `folder`."""
    return [name for name in _FILES if not os.path.isfile(os.path.join(folder, name))]


def _describe(folder):
    """Return why `folder` does not hold the dataset, or None when it does."""
    if not os.path.isdir(folder):
        return "folder does not exist"
    missing = _missing(folder)
    if missing:
        return "missing " + ", ".join(missing)
    return None


def _candidates():
    """Yield (label, folder) for every implicit place, in search order."""
    yield from _fetch.env_folders("fashion-mnist")
    yield "user cache", _cache_dir()
    for folder in _SYSTEM_DIRS:
        yield "Debian package dataset-fashion-mnist", folder


def _locate(path=None):
    """Find a folder holding all four files.

    Args:
        path: explicit folder given to `load_data`, or None to search the usual places.

    Returns:
        `(folder, searched)`: the folder found (None when no place has all four files)
        and one line per place searched, saying why it was not used.

    Raises:
        TypeError: `path` is not a path.
        DatasetNotFoundError: an explicit `path` is not a folder holding the four files.
    """
    if path is not None:
        folder = _fetch.as_path(path, "a folder path or None")
        if not os.path.isdir(folder):
            problem = f"{folder!r} is not an existing folder"
        else:
            missing = _missing(folder)
            problem = f"the folder {folder!r} lacks {', '.join(missing)}" if missing else None
        if problem is not None:
            raise DatasetNotFoundError(
                "load_data(path=...) must name a folder holding the four Fashion-MNIST "
                f"files, but {problem}. {_how_to_get_data()} Received: path={path!r}"
            )
        return folder, []

    if not os.environ.get(ENV_VAR, ""):
        searched = [f"${ENV_VAR}: not set"]
    else:
        searched = []
    for label, folder in _candidates():
        problem = _describe(folder)
        if problem is None:
            return folder, searched
        searched.append(f"{folder} ({label}): {problem}")
    return None, searched


def _read_exact(stream, size):
    """Read up to `size` bytes, stopping early only at end of stream."""
    parts = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(remaining, 16 * _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _parse_idx(stream, name, expected_sha256, max_bytes, file_size):
    head = _read_exact(stream, 4)
    if len(head) < 4:
        raise ValueError(
            f"{name}: too short to be an IDX file ({len(head)} bytes; "
            "the magic number alone takes 4)."
        )
    magic = struct.unpack(">I", head)[0]
    ndim = _IDX_MAGIC.get(magic)
    if ndim is None:
        raise ValueError(
            f"{name}: bad magic number 0x{magic:08X}; expected 0x00000803 (images) or "
            "0x00000801 (labels). This is not an uncompressed or gzipped IDX file of "
            "unsigned bytes."
        )
    dims_bytes = _read_exact(stream, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise ValueError(
            f"{name}: truncated header: magic 0x{magic:08X} announces {ndim} dimension(s) "
            f"({4 * ndim} bytes) but only {len(dims_bytes)} bytes follow."
        )
    shape = struct.unpack(f">{ndim}I", dims_bytes)
    header_size = 4 + 4 * ndim
    count = math.prod(shape)
    if count > max_bytes:
        raise ValueError(
            f"{name}: size mismatch: the header declares shape {shape}, that is {count:,} "
            f"bytes of data, more than the {max_bytes:,}-byte limit of this loader."
        )
    if file_size is not None and file_size != header_size + count:
        raise ValueError(
            f"{name}: size mismatch: the header declares shape {shape}, so the file should "
            f"be {header_size + count:,} bytes, but it is {file_size:,} bytes."
        )
    data = _read_exact(stream, count)
    if len(data) < count:
        raise ValueError(
            f"{name}: size mismatch (truncated): the header declares shape {shape}, that "
            f"is {count:,} bytes of data, but only {len(data):,} bytes follow."
        )
    if stream.read(1):
        raise ValueError(
            f"{name}: size mismatch: the header declares shape {shape}, that is "
            f"{count:,} bytes of data, but more data follows."
        )
    if expected_sha256 is not None:
        digest = hashlib.sha256(head)
        digest.update(dims_bytes)
        digest.update(data)
        actual = digest.hexdigest()
        if actual != expected_sha256.lower():
            raise ValueError(
                f"{name}: SHA-256 hash mismatch: the decompressed data hashes to {actual}, "
                f"expected {expected_sha256.lower()}. The file is corrupt or is not the "
                "original Fashion-MNIST file; delete it and get it again."
            )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()


def _read_idx(filename, expected_sha256=None, *, max_bytes=_MAX_IDX_BYTES):
    """Read one IDX file of unsigned bytes (gzipped or not) into a new uint8 array.

    Args:
        filename: path of the file. Gzip compression is detected from the content.
        expected_sha256: hex SHA-256 the decompressed bytes must have, or None to skip
            the check.
        max_bytes: largest data size accepted, checked against the header before
            anything is read or allocated.

    Returns:
        A writable, C-contiguous `uint8` array of the shape stored in the header.

    Raises:
        ValueError: the file is not valid IDX (bad magic number, header and data sizes
            that disagree, truncated or corrupt gzip) or its hash differs from
            `expected_sha256`. The message names the file.
        OSError: the file cannot be opened or read.
    """
    name = os.fsdecode(os.fspath(filename))
    with open(name, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            size = os.fstat(raw.fileno()).st_size
            return _parse_idx(raw, name, expected_sha256, max_bytes, size)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse_idx(stream, name, expected_sha256, max_bytes, None)
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise ValueError(
                f"{name}: corrupt or truncated gzip data ({type(err).__name__}: {err})."
            ) from err


def _download_file(url, destination, expected_sha256=None):
    """Download `url` to `destination` atomically, checked with `_read_idx` before it
    appears under that name (see `_fetch.download`)."""
    _fetch.download(url, destination, check=lambda tmp: _read_idx(tmp, expected_sha256),
                    max_bytes=_MAX_DOWNLOAD_BYTES)


def _download_to_cache(searched):
    """Download the files missing from the user cache; return the cache folder."""
    cache = _cache_dir()

    def fetch_all():
        for name in _missing(cache):
            url = BASE_URL + name
            _fetch.announce(url, cache)
            _download_file(url, os.path.join(cache, name), _SHA256.get(name))

    _fetch.download_or_explain("Fashion-MNIST", fetch_all, searched, BASE_URL, cache,
                               _how_to_get_data())
    return cache


def _check_split(images, labels, images_file, labels_file):
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(
            f"{images_file} must hold images (3-D) and {labels_file} labels (1-D); "
            f"they hold shapes {images.shape} and {labels.shape}."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_file} holds {len(images)} images but {labels_file} holds "
            f"{len(labels)} labels; they must match."
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise ValueError(
            f"{labels_file}: labels must be in 0..{_NUM_CLASSES - 1}; found {int(labels.max())}."
        )


def load_data(path=None):
    """Loads the Fashion-MNIST dataset.

    60,000 training and 10,000 test images of clothing, 28x28 pixels in grayscale,
    each labelled with one of 10 classes:

    | Label | Class       |
    |-------|-------------|
    | 0     | T-shirt/top |
    | 1     | Trouser     |
    | 2     | Pullover    |
    | 3     | Dress       |
    | 4     | Coat        |
    | 5     | Sandal      |
    | 6     | Shirt       |
    | 7     | Sneaker     |
    | 8     | Bag         |
    | 9     | Ankle boot  |

    The four files (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
    `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`) are looked for, in order,
    in: `path` when given (and nowhere else); the folder named by the `FASTDENSE_DATA`
    environment variable (or its `fashion-mnist` sub-folder); the user cache
    `~/.fastdense/datasets/fashion-mnist`; and `/usr/share/datasets/fashion-mnist`, where
    Debian's `dataset-fashion-mnist` package installs them. When no folder holds all
    four, they are downloaded once from Zalando Research into the user cache. Every file
    is verified against the SHA-256 of its decompressed content.

    Each call reads the files afresh and returns new arrays, so changing them in place
    affects nothing else.

    Fashion-MNIST is copyright Zalando SE and distributed under the MIT license.

    Args:
        path: optional folder holding the four files. When given, no other place is
            searched and nothing is downloaded.

    Returns:
        Tuple of NumPy arrays: `(x_train, y_train), (x_test, y_test)`.

        **`x_train`**: `uint8` array of grayscale image data with shape
        `(60000, 28, 28)`, values 0 to 255 (not scaled).

        **`y_train`**: `uint8` array of labels (integers in range 0-9) with shape
        `(60000,)`.

        **`x_test`**: `uint8` array of grayscale image data with shape
        `(10000, 28, 28)`.

        **`y_test`**: `uint8` array of labels (integers in range 0-9) with shape
        `(10000,)`.

    Raises:
        DatasetNotFoundError: (a `FileNotFoundError`) `path` does not hold the files, or
            no searched place does and the download failed. The message lists the places
            searched and how to get the data.
        ValueError: a file is malformed, truncated or does not have the expected hash;
            the message names the file.
        TypeError: `path` is not a path.

    Example:

    ```python
    from fastdense.datasets import fashion_mnist

    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28)
    assert y_test.shape == (10000,)
    x_train = x_train.reshape(-1, 784) / 255.0
    ```
    """
    folder, searched = _locate(path)
    if folder is None:
        folder = _download_to_cache(searched)
    arrays = {name: _read_idx(os.path.join(folder, name), _SHA256.get(name)) for name in _FILES}
    x_train, y_train = arrays[_TRAIN_IMAGES], arrays[_TRAIN_LABELS]
    x_test, y_test = arrays[_TEST_IMAGES], arrays[_TEST_LABELS]
    _check_split(x_train, y_train, _TRAIN_IMAGES, _TRAIN_LABELS)
    _check_split(x_test, y_test, _TEST_IMAGES, _TEST_LABELS)
    return (x_train, y_train), (x_test, y_test)
