"""Tests of fastdense.datasets.fashion_mnist.

Everything except the two real-data tests runs on small synthetic IDX files in tmp_path.
No test touches the network: downloads are either replaced by a stub or pointed at a
local file:// URL.
"""

import gzip
import hashlib
import os
import struct

import numpy as np
import pytest

from fastdense.datasets import fashion_mnist as fm

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# The module's real objects, captured before any test replaces them.
REAL_SHA256 = dict(fm._SHA256)
REAL_DOWNLOAD = fm._download_file


# --------------------------------------------------------------------------- helpers


def idx_bytes(array, magic=None):
    """Serialize a uint8 array as IDX (big-endian header, then the raw bytes)."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(path, payload, compress=True):
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_dataset(folder, marker, n_train=20, n_test=10):
    """Write a tiny complete dataset; pixel [0, 0, 0] of x_train equals `marker`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(marker)
    x_train = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    x_train[0, 0, 0] = marker
    x_test = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = (np.arange(n_test) % 10).astype(np.uint8)
    for name, array in zip(FILES, (x_train, y_train, x_test, y_test)):
        write(folder / name, idx_bytes(array))
    return (x_train, y_train), (x_test, y_test)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Isolate the search: fake HOME, no $FASTDENSE_DATA, fake system folder, no hashes,
    and a download stub that records calls and fails like an offline machine."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FASTDENSE_DATA", raising=False)
    system = tmp_path / "system"
    monkeypatch.setattr(fm, "_SYSTEM_DIRS", (str(system),))
    monkeypatch.setattr(fm, "_SHA256", {})
    calls = []

    def offline(url, destination, expected_sha256=None):
        calls.append((url, destination))
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(fm, "_download_file", offline)

    class Sandbox:
        pass

    box = Sandbox()
    box.root = tmp_path
    box.home = home
    box.cache = home / ".fastdense" / "datasets" / "fashion-mnist"
    box.system = system
    box.download_calls = calls
    return box


def marker_of(result):
    (x_train, _), _ = result
    return int(x_train[0, 0, 0])


# ------------------------------------------------------------------------ _read_idx


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_images(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    path = write(tmp_path / "images.idx", idx_bytes(images), compress)
    result = fm._read_idx(str(path))
    assert result.dtype == np.uint8
    assert result.shape == (7, 28, 28)
    np.testing.assert_array_equal(result, images)
    assert result.flags.writeable and result.flags.c_contiguous and result.flags.owndata


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_labels(tmp_path, compress):
    labels = np.array([9, 0, 0, 3, 0, 2, 7, 2, 5, 5], dtype=np.uint8)
    path = write(tmp_path / "labels.idx", idx_bytes(labels), compress)
    result = fm._read_idx(path)  # os.PathLike accepted
    np.testing.assert_array_equal(result, labels)
    result[0] = 1  # writable
    assert result.shape == (10,)


def test_read_idx_hash_ok(tmp_path):
    payload = idx_bytes(np.arange(30, dtype=np.uint8).reshape(3, 5, 2))
    path = write(tmp_path / "ok.gz", payload)
    digest = hashlib.sha256(payload).hexdigest()
    np.testing.assert_array_equal(
        fm._read_idx(path, expected_sha256=digest), np.arange(30).reshape(3, 5, 2)
    )
    # Hashes are of the decompressed bytes, so the raw form passes the same check.
    raw = write(tmp_path / "ok.idx", payload, compress=False)
    fm._read_idx(raw, expected_sha256=digest.upper())


def test_read_idx_zero_items(tmp_path):
    path = write(tmp_path / "empty.gz", idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    assert fm._read_idx(path).shape == (0, 28, 28)


def test_read_idx_hash_mismatch(tmp_path):
    path = write(tmp_path / "labels.gz", idx_bytes(np.arange(10, dtype=np.uint8)))
    with pytest.raises(ValueError, match="hash mismatch") as info:
        fm._read_idx(path, expected_sha256="0" * 64)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("magic", [0x00000802, 0x00000903, 0x08030000, 0x1F8B0803])
def test_read_idx_bad_magic(tmp_path, magic):
    path = write(tmp_path / "bad.gz", idx_bytes(np.zeros((2, 3, 4), np.uint8), magic=magic))
    with pytest.raises(ValueError, match="bad magic number") as info:
        fm._read_idx(path)
    assert "bad.gz" in str(info.value)


def test_read_idx_not_idx_at_all(tmp_path):
    path = write(tmp_path / "page.html", b"<html>captive portal</html>", compress=False)
    with pytest.raises(ValueError, match="bad magic number"):
        fm._read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_too_short(tmp_path, compress):
    path = write(tmp_path / "short", b"\x00\x00", compress)
    with pytest.raises(ValueError, match="too short"):
        fm._read_idx(path)


def test_read_idx_empty_file(tmp_path):
    path = write(tmp_path / "empty", b"", compress=False)
    with pytest.raises(ValueError, match="too short"):
        fm._read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = write(tmp_path / "hdr.gz", struct.pack(">II", 0x00000803, 60000))
    with pytest.raises(ValueError, match="truncated header"):
        fm._read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_data_shorter_than_header(tmp_path, compress):
    payload = idx_bytes(np.ones((10, 28, 28), np.uint8))[:-28 * 28]  # one image short
    path = write(tmp_path / "short.idx", payload, compress)
    with pytest.raises(ValueError, match="size mismatch") as info:
        fm._read_idx(path)
    assert "(10, 28, 28)" in str(info.value)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_data_longer_than_header(tmp_path, compress):
    payload = idx_bytes(np.ones((10,), np.uint8)) + b"\x01"
    path = write(tmp_path / "long.idx", payload, compress)
    with pytest.raises(ValueError, match="size mismatch"):
        fm._read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    compressed = gzip.compress(idx_bytes(images))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as info:
        fm._read_idx(path)
    assert "cut.gz" in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    compressed[-8] ^= 0xFF  # CRC of the member no longer matches
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        fm._read_idx(path)


def test_read_idx_huge_header_rejected_before_allocation(tmp_path):
    # 4e12 bytes announced, 10 present: must fail fast on the header, not try to read.
    path = write(tmp_path / "huge.gz", struct.pack(">IIII", 0x00000803, 40000, 10000, 10000))
    with pytest.raises(ValueError, match="size mismatch.*limit"):
        fm._read_idx(path)
    raw = write(tmp_path / "huge.idx", struct.pack(">II", 0x00000801, 5) + b"\x00" * 5, False)
    with pytest.raises(ValueError, match="limit"):
        fm._read_idx(raw, max_bytes=4)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        fm._read_idx(tmp_path / "nope.gz")


def test_hash_table_is_complete():
    assert set(fm._SHA256) == set(FILES)
    for digest in fm._SHA256.values():
        assert len(digest) == 64 and int(digest, 16) >= 0
    assert fm.BASE_URL.endswith("/")


# ------------------------------------------------------------------- search order


def test_explicit_path_wins(sandbox, monkeypatch):
    make_dataset(sandbox.root / "explicit", marker=1)
    make_dataset(sandbox.root / "env", marker=2)
    monkeypatch.setenv("FASTDENSE_DATA", str(sandbox.root / "env"))
    make_dataset(sandbox.cache, marker=3)
    make_dataset(sandbox.system, marker=4)
    assert marker_of(fm.load_data(path=str(sandbox.root / "explicit"))) == 1
    assert marker_of(fm.load_data(path=sandbox.root / "explicit")) == 1  # PathLike
    assert sandbox.download_calls == []


def test_explicit_path_tilde_is_expanded(sandbox):
    make_dataset(sandbox.home / "fm", marker=5)
    assert marker_of(fm.load_data(path="~/fm")) == 5


def test_explicit_path_without_files_is_an_error_without_fallback(sandbox, monkeypatch):
    incomplete = sandbox.root / "incomplete"
    make_dataset(incomplete, marker=1)
    (incomplete / "t10k-labels-idx1-ubyte.gz").unlink()
    make_dataset(sandbox.root / "env", marker=2)
    monkeypatch.setenv("FASTDENSE_DATA", str(sandbox.root / "env"))
    make_dataset(sandbox.system, marker=4)
    with pytest.raises(fm.DatasetNotFoundError) as info:
        fm.load_data(path=str(incomplete))
    message = str(info.value)
    assert str(incomplete) in message
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert message.endswith(f"Received: path={str(incomplete)!r}")
    assert isinstance(info.value, FileNotFoundError)
    assert sandbox.download_calls == []


def test_explicit_path_that_does_not_exist(sandbox):
    make_dataset(sandbox.system, marker=4)
    missing = sandbox.root / "does-not-exist"
    with pytest.raises(FileNotFoundError, match="is not an existing folder") as info:
        fm.load_data(path=missing)
    assert str(missing) in str(info.value)
    assert sandbox.download_calls == []


@pytest.mark.parametrize("bad", [123, 4.5, ["a"]])
def test_explicit_path_of_wrong_type(sandbox, bad):
    with pytest.raises(TypeError, match=r"Received: path="):
        fm.load_data(path=bad)


def test_env_var_beats_cache_and_system(sandbox, monkeypatch):
    make_dataset(sandbox.root / "env", marker=2)
    make_dataset(sandbox.cache, marker=3)
    make_dataset(sandbox.system, marker=4)
    monkeypatch.setenv("FASTDENSE_DATA", str(sandbox.root / "env"))
    assert marker_of(fm.load_data()) == 2


def test_env_var_may_name_a_parent_folder(sandbox, monkeypatch):
    make_dataset(sandbox.root / "data" / "fashion-mnist", marker=6)
    make_dataset(sandbox.system, marker=4)
    monkeypatch.setenv("FASTDENSE_DATA", str(sandbox.root / "data"))
    assert marker_of(fm.load_data()) == 6


def test_incomplete_env_folder_falls_through_to_cache(sandbox, monkeypatch):
    (sandbox.root / "env").mkdir()
    monkeypatch.setenv("FASTDENSE_DATA", str(sandbox.root / "env"))
    make_dataset(sandbox.cache, marker=3)
    make_dataset(sandbox.system, marker=4)
    assert marker_of(fm.load_data()) == 3


def test_cache_beats_system(sandbox):
    make_dataset(sandbox.cache, marker=3)
    make_dataset(sandbox.system, marker=4)
    assert marker_of(fm.load_data()) == 3


def test_system_folder_is_last(sandbox):
    make_dataset(sandbox.system, marker=4)
    assert marker_of(fm.load_data()) == 4
    assert sandbox.download_calls == []


def test_locate_reports_the_places_searched(sandbox, monkeypatch):
    monkeypatch.setenv("FASTDENSE_DATA", str(sandbox.root / "env"))
    folder, searched = fm._locate()
    assert folder is None
    text = "\n".join(searched)
    assert str(sandbox.root / "env") in text
    assert str(sandbox.cache) in text
    assert str(sandbox.system) in text


def test_results_are_fresh_arrays(sandbox):
    (x_train, y_train), _ = make_dataset(sandbox.system, marker=4)
    (a, b), (c, d) = fm.load_data()
    a[...] = 0
    b[...] = 0
    (a2, b2), _ = fm.load_data()
    np.testing.assert_array_equal(a2, x_train)
    np.testing.assert_array_equal(b2, y_train)


def test_inconsistent_files_are_rejected(sandbox):
    make_dataset(sandbox.system, marker=4)
    write(sandbox.system / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(ValueError, match="20 images but .* 19 labels"):
        fm.load_data()
    write(sandbox.system / "train-labels-idx1-ubyte.gz", idx_bytes(np.full(20, 10, np.uint8)))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
        fm.load_data()
    images_as_labels = idx_bytes(np.zeros((20, 28, 28), np.uint8))
    write(sandbox.system / "train-labels-idx1-ubyte.gz", images_as_labels)
    with pytest.raises(ValueError, match="must hold images"):
        fm.load_data()


def test_real_hashes_are_checked(sandbox, monkeypatch):
    """With the real hash table, a folder of look-alike files is rejected by name."""
    monkeypatch.setattr(fm, "_SHA256", REAL_SHA256)
    folder = sandbox.root / "fake"
    make_dataset(folder, marker=7)
    with pytest.raises(ValueError, match="hash mismatch") as info:
        fm.load_data(path=folder)
    assert str(folder / "train-images-idx3-ubyte.gz") in str(info.value)


# ------------------------------------------------------------------------ download


def test_offline_error_says_how_to_get_the_data(sandbox, monkeypatch):
    monkeypatch.setenv("FASTDENSE_DATA", str(sandbox.root / "nowhere"))
    with pytest.raises(fm.DatasetNotFoundError) as info:
        fm.load_data()
    error = info.value
    assert isinstance(error, FileNotFoundError)
    assert isinstance(error.__cause__, OSError)
    message = str(error)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FASTDENSE_DATA" in message
    assert "path=" in message
    assert "Network is unreachable" in message
    for place in (sandbox.root / "nowhere", sandbox.cache, sandbox.system):
        assert str(place) in message
    assert fm.BASE_URL in message
    assert len(sandbox.download_calls) == 1  # gave up at the first failure


def test_offline_error_when_env_unset(sandbox):
    with pytest.raises(FileNotFoundError, match="FASTDENSE_DATA: not set"):
        fm.load_data()


def test_missing_files_are_downloaded_into_the_cache(sandbox, monkeypatch):
    source = sandbox.root / "source"
    expected = make_dataset(source, marker=8)
    calls = []

    def fake_download(url, destination, expected_sha256=None):
        name = url.rsplit("/", 1)[1]
        calls.append(name)
        assert url == fm.BASE_URL + name
        assert os.path.dirname(destination) == str(sandbox.cache)
        with open(destination, "wb") as out:
            out.write((source / name).read_bytes())

    monkeypatch.setattr(fm, "_download_file", fake_download)
    # A previous interrupted run left one file in the cache: only the rest is fetched.
    sandbox.cache.mkdir(parents=True)
    (sandbox.cache / FILES[1]).write_bytes((source / FILES[1]).read_bytes())
    result = fm.load_data()
    assert sorted(calls) == sorted(set(FILES) - {FILES[1]})
    np.testing.assert_array_equal(result[0][0], expected[0][0])
    np.testing.assert_array_equal(result[1][1], expected[1][1])
    calls.clear()
    assert marker_of(fm.load_data()) == 8
    assert calls == []  # second call served from the cache


def test_download_from_local_url_is_verified_and_atomic(sandbox, monkeypatch):
    """Exercise the real _download_file through a file:// URL (no network)."""
    monkeypatch.setattr(fm, "_download_file", REAL_DOWNLOAD)
    source = sandbox.root / "mirror"
    make_dataset(source, marker=9)
    hashes = {}
    for name in FILES:
        hashes[name] = hashlib.sha256(gzip.decompress((source / name).read_bytes())).hexdigest()
    monkeypatch.setattr(fm, "_SHA256", hashes)
    monkeypatch.setattr(fm, "BASE_URL", source.as_uri() + "/")
    assert marker_of(fm.load_data()) == 9
    assert sorted(os.listdir(sandbox.cache)) == sorted(FILES)  # no leftover temp files

    # A mirror serving wrong content: nothing lands in the cache under the final name.
    for name in FILES:
        (sandbox.cache / name).unlink()
    hashes[FILES[0]] = "f" * 64
    with pytest.raises(fm.DatasetNotFoundError, match="hash mismatch"):
        fm.load_data()
    assert FILES[0] not in os.listdir(sandbox.cache)
    assert not [n for n in os.listdir(sandbox.cache) if n.endswith(".part")]


def test_download_failure_leaves_no_partial_file(tmp_path):
    destination = tmp_path / "train-labels-idx1-ubyte.gz"
    with pytest.raises(OSError):
        fm._download_file((tmp_path / "absent.gz").as_uri(), str(destination))
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------- real data


def check_real(result):
    (x_train, y_train), (x_test, y_test) = result
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert y_test.shape == (10000,) and y_test.dtype == np.uint8
    assert y_train.min() == 0 and y_train.max() == 9
    assert y_test.min() == 0 and y_test.max() == 9
    assert np.bincount(y_train, minlength=10).tolist() == [6000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10
    assert x_train.max() == 255 and x_train.min() == 0  # not scaled
    assert y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert x_train.flags.writeable and y_test.flags.writeable


def test_real_debian_data():
    """The Debian package dataset-fashion-mnist is installed here and in CI."""
    assert os.path.isdir(DEBIAN_DIR), (
        f"{DEBIAN_DIR} is missing: run `apt-get install dataset-fashion-mnist`"
    )
    check_real(fm.load_data(path=DEBIAN_DIR))


def test_real_debian_data_found_by_default_search(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FASTDENSE_DATA", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("load_data() tried to download although the data is installed")

    monkeypatch.setattr(fm, "_download_file", no_network)
    check_real(fm.load_data())


# ------------------------------------------------- mnist and california_housing (.npz files)
from fastdense.datasets import _fetch, california_housing as ch, mnist  # noqa: E402


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mnist_npz(path, n_train=12, n_test=5, marker=7):
    rng = np.random.default_rng(marker)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": (np.arange(n_train) % 10).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": (np.arange(n_test) % 10).astype(np.uint8)}
    arrays["x_train"][0, 0, 0] = marker
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def housing_npz(path, n=50):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = rng.uniform(25_000, 500_000, n).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return x, y


@pytest.fixture
def npz_sandbox(tmp_path, monkeypatch):
    """Fake HOME, no $FASTDENSE_DATA, and downloads from file:// URLs that do not exist."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FASTDENSE_DATA", raising=False)
    monkeypatch.setattr(mnist, "URL", (tmp_path / "server" / "mnist.npz").as_uri())
    monkeypatch.setattr(ch, "URL", (tmp_path / "server" / "california_housing.npz").as_uri())
    return tmp_path


def test_keras_sources_and_hashes():
    # The files and SHA-256 values keras.datasets uses (keras/src/datasets/*.py, Keras 3).
    assert mnist.URL == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
    assert mnist._SHA256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
    assert ch.URL == ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
                      "california_housing.npz")
    assert ch._SHA256 == "1a2e3a52e0398de6463aebe6f4a8da34fb21fbb6b934cf88c3425e766f2a1a6f"


def test_mnist_from_an_explicit_path(npz_sandbox, monkeypatch):
    path = npz_sandbox / "data" / "mnist.npz"
    arrays = mnist_npz(path)
    monkeypatch.setattr(mnist, "_SHA256", sha(path))
    (x_train, y_train), (x_test, y_test) = mnist.load_data(path=str(path))
    for got, key in ((x_train, "x_train"), (y_train, "y_train"), (x_test, "x_test"),
                     (y_test, "y_test")):
        np.testing.assert_array_equal(got, arrays[key])
        assert got.dtype == np.uint8 and got.flags.writeable


def test_mnist_hash_mismatch_is_refused(npz_sandbox):
    path = npz_sandbox / "data" / "mnist.npz"
    mnist_npz(path)
    with pytest.raises(ValueError, match=r"mnist.npz: SHA-256 hash mismatch.*expected 731c5ac6"):
        mnist.load_data(path=path)


@pytest.mark.parametrize("where", ["env", "env_sub", "cache"])
def test_mnist_bare_name_is_searched(npz_sandbox, monkeypatch, where):
    folder = {"env": npz_sandbox / "d", "env_sub": npz_sandbox / "d" / "mnist",
              "cache": npz_sandbox / "home" / ".fastdense" / "datasets" / "mnist"}[where]
    if where != "cache":
        monkeypatch.setenv("FASTDENSE_DATA", str(npz_sandbox / "d"))
    mnist_npz(folder / "mnist.npz", marker=11)
    monkeypatch.setattr(mnist, "_SHA256", sha(folder / "mnist.npz"))
    (x_train, _), _ = mnist.load_data()
    assert x_train[0, 0, 0] == 11


def test_mnist_downloads_into_the_cache_and_checks_the_hash(npz_sandbox, monkeypatch):
    source = npz_sandbox / "server" / "mnist.npz"
    mnist_npz(source, marker=5)
    monkeypatch.setattr(mnist, "_SHA256", sha(source))
    (x_train, _), _ = mnist.load_data()
    assert x_train[0, 0, 0] == 5
    cache = npz_sandbox / "home" / ".fastdense" / "datasets" / "mnist"
    assert os.listdir(cache) == ["mnist.npz"]
    # a server with other content: nothing lands under the final name
    (cache / "mnist.npz").unlink()
    monkeypatch.setattr(mnist, "_SHA256", "f" * 64)
    with pytest.raises(mnist.DatasetNotFoundError, match="hash mismatch"):
        mnist.load_data()
    assert os.listdir(cache) == []


def test_mnist_offline_guidance(npz_sandbox):
    with pytest.raises(mnist.DatasetNotFoundError) as info:
        mnist.load_data()
    text = str(info.value)
    assert "The MNIST files were not found on this machine and could not be downloaded" in text
    assert "$FASTDENSE_DATA: not set" in text and "user cache" in text
    assert "set the FASTDENSE_DATA environment variable" in text and "731c5ac6" in text
    assert isinstance(info.value, FileNotFoundError)


def test_mnist_explicit_missing_path_is_downloaded_there(npz_sandbox, monkeypatch):
    source = npz_sandbox / "server" / "mnist.npz"
    mnist_npz(source, marker=3)
    monkeypatch.setattr(mnist, "_SHA256", sha(source))
    target = npz_sandbox / "elsewhere" / "m.npz"
    target.parent.mkdir()
    (x_train, _), _ = mnist.load_data(path=target)
    assert x_train[0, 0, 0] == 3 and target.is_file()


@pytest.mark.parametrize("content, pattern", [
    (lambda p: np.savez(p, x_train=np.zeros((2, 28, 28), np.uint8)), r"lacks the arrays"),
    (lambda p: p.write_bytes(b"not a zip file at all"), r"mnist.npz"),
    (lambda p: np.savez(p, x_train=np.array([object()], dtype=object), y_train=[1], x_test=[1],
                        y_test=[1]), r"pickle"),
    (lambda p: np.savez(p, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(3),
                        x_test=np.zeros((1, 28, 28)), y_test=np.zeros(1)), r"must hold images"),
])
def test_mnist_malformed_files(npz_sandbox, monkeypatch, content, pattern):
    path = npz_sandbox / "bad" / "mnist.npz"
    path.parent.mkdir()
    content(path)
    monkeypatch.setattr(mnist, "_SHA256", sha(path))
    with pytest.raises(ValueError, match=pattern):
        mnist.load_data(path=path)


def test_mnist_path_must_be_a_path():
    with pytest.raises(TypeError, match=r"`path` to be a file path.*Received: path=3"):
        mnist.load_data(path=3)


@pytest.mark.parametrize("version, test_split, seed", [("large", 0.2, 113), ("large", 0.35, 1),
                                                       ("small", 0.2, 113), ("large", 0.0, 113)])
def test_california_housing_split_is_keras_s(npz_sandbox, monkeypatch, version, test_split, seed):
    path = npz_sandbox / "data" / "california_housing.npz"
    x, y = housing_npz(path, n=700)
    monkeypatch.setattr(ch, "_SHA256", sha(path))
    (x_train, y_train), (x_test, y_test) = ch.load_data(version=version, path=path,
                                                        test_split=test_split, seed=seed)
    # Keras's recipe, written out: first 600 rows for "small", RandomState(seed).shuffle of
    # the row numbers, then the first int(n * (1 - test_split)) rows for training.
    n = 600 if version == "small" else 700
    rows = list(range(n))
    np.random.RandomState(seed).shuffle(rows)
    cut = int(n * (1 - test_split))
    np.testing.assert_array_equal(x_train, x[rows[:cut]])
    np.testing.assert_array_equal(y_train, y[rows[:cut]])
    np.testing.assert_array_equal(x_test, x[rows[cut:]])
    np.testing.assert_array_equal(y_test, y[rows[cut:]])
    assert x_train.dtype == x.dtype and x_train.shape[1] == 8


@pytest.mark.parametrize("kwargs, pattern", [
    ({"version": "medium"}, r"`version` must be one of 'small', 'large'.*version='medium'"),
    ({"test_split": 1.0}, r"`test_split` must be a number in \[0, 1\).*test_split=1.0"),
    ({"test_split": -0.1}, r"test_split=-0.1"),
    ({"test_split": "0.2"}, r"test_split='0.2'"),
])
def test_california_housing_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ch.load_data(**kwargs)


def test_california_housing_offline_guidance_and_hash(npz_sandbox):
    with pytest.raises(ch.DatasetNotFoundError, match=r"California Housing files were not found"):
        ch.load_data()
    path = npz_sandbox / "data" / "california_housing.npz"
    housing_npz(path)
    with pytest.raises(ValueError, match=r"hash mismatch.*expected 1a2e3a52"):
        ch.load_data(path=path)


def test_one_home_for_the_fetch_code():
    assert fm.DatasetNotFoundError is _fetch.DatasetNotFoundError is mnist.DatasetNotFoundError
    assert fm.ENV_VAR == _fetch.ENV_VAR
