"""What every dataset loader shares: where files are looked for, the user cache, the bounded,
atomic, verified download, the SHA-256 check, and the message that says how to get the data
on a machine without network access."""

import hashlib
import os
import sys

from .._atomic import atomic_write

# Environment variable naming a folder that holds dataset files (or per-dataset sub-folders).
ENV_VAR = "FASTDENSE_DATA"
DOWNLOAD_TIMEOUT = 30  # seconds without data before a download is given up
CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files were not found locally and could not be downloaded."""


def cache_root():
    """The per-user cache folder that downloads go to (one sub-folder per dataset)."""
    return os.path.join(os.path.expanduser("~"), ".fastdense", "datasets")


def env_folders(subfolder):
    """(label, folder) for $FASTDENSE_DATA and its `subfolder`, when the variable is set."""
    value = os.environ.get(ENV_VAR, "")
    if not value:
        return []
    folder = os.path.expanduser(value)
    return [(f"${ENV_VAR}", folder), (f"${ENV_VAR}", os.path.join(folder, subfolder))]


def as_path(path, what):
    """`path` (str or os.PathLike) as a str with `~` expanded; TypeError naming `what` else."""
    try:
        return os.path.expanduser(os.fsdecode(os.fspath(path)))
    except TypeError:
        raise TypeError(f"load_data() expects `path` to be {what} (str or os.PathLike). "
                        f"Received: path={path!r}") from None


def sha256_of(filename):
    digest = hashlib.sha256()
    with open(filename, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(filename, expected, title):
    """Raises ValueError naming the file when its SHA-256 is not `expected` (None: no check)."""
    if expected is None:
        return
    actual = sha256_of(filename)
    if actual != expected.lower():
        raise ValueError(
            f"{filename}: SHA-256 hash mismatch: the file hashes to {actual}, expected "
            f"{expected.lower()}. The file is corrupt or is not the original {title} file; "
            "delete it and get it again.")


def download(url, destination, check=None, max_bytes=64 * 1024 * 1024):
    """Downloads `url` to `destination` atomically: the body goes to a temporary file next to
    it, is flushed to disk, checked by `check(temp_path)`, and only then renamed onto
    `destination`, so an interrupted or bad download never leaves a file under that name.

    Raises:
        OSError: the network or the disk failed (`urllib.error.URLError` included).
        http.client.HTTPException: the server's answer was broken.
        ValueError: the download is larger than `max_bytes` or `check` refused it.
    """
    def fetch(out):
        import urllib.request  # lazy: only a download needs the network stack

        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            total = 0
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise ValueError(f"{url}: the download exceeds {max_bytes:,} bytes, far more "
                                     "than the real file; giving up.")
                out.write(chunk)

    atomic_write(destination, fetch, check=check)


def download_or_explain(title, fetch_all, searched, source, cache, how_to):
    """Runs `fetch_all()` (the downloads into `cache`); on failure raises DatasetNotFoundError
    listing the places searched, the failure, and how to get the data."""
    import http.client  # lazy: keeps `import fastdense` free of the network stack

    try:
        os.makedirs(cache, exist_ok=True)
        fetch_all()
    except (OSError, http.client.HTTPException, ValueError) as err:
        lines = [f"The {title} files were not found on this machine and could not be "
                 "downloaded.", "Searched, in order:"]
        lines += [f"  - {entry}" for entry in searched]
        lines.append(f"Downloading from {source} into {cache} failed: {type(err).__name__}: {err}")
        lines.append(how_to)
        raise DatasetNotFoundError("\n".join(lines)) from err


def announce(url, folder):
    print(f"Downloading {url} to {folder}", file=sys.stderr)


class NpzDataset:
    """One `.npz` file published by Keras, found or downloaded like Keras's `get_file`.

    Args:
        title: the dataset's name in messages; subfolder: its folder under the cache and
            $FASTDENSE_DATA; filename, url, sha256: the published file and its SHA-256.
    """

    def __init__(self, title, subfolder, filename, url, sha256, max_bytes):
        self.title, self.subfolder, self.filename = title, subfolder, filename
        self.url, self.sha256, self.max_bytes = url, sha256, max_bytes

    def how_to(self):
        return (f"To get the data, download {self.url} (SHA-256 {self.sha256}) into a folder and "
                f"set the {ENV_VAR} environment variable to that folder, or pass "
                "load_data(path=that_file); or call load_data() again when this machine can "
                "reach the internet.")

    def locate(self, path):
        """The file to read: `path` when it names an existing file; else, for a bare file name
        (Keras's default), $FASTDENSE_DATA (or its sub-folder) and the user cache; else the
        file is downloaded to `path` (absolute or with folders) or into the user cache."""
        given = as_path(path, "a file path")
        explicit = os.path.dirname(given) != ""
        if os.path.isfile(given) and explicit:
            return given
        name = os.path.basename(given) or self.filename
        cache = os.path.join(cache_root(), self.subfolder)
        searched = [] if os.environ.get(ENV_VAR, "") else [f"${ENV_VAR}: not set"]
        places = [] if explicit else env_folders(self.subfolder) + [("user cache", cache)]
        for label, folder in places:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
            searched.append(f"{candidate} ({label}): not found")
        target = given if explicit else os.path.join(cache, name)
        if explicit:
            searched.append(f"{given} (path=): not found")
        folder = os.path.dirname(os.path.abspath(target))

        def fetch_all():
            announce(self.url, folder)
            download(self.url, target, check=lambda tmp: check_sha256(tmp, self.sha256, self.title),
                     max_bytes=self.max_bytes)

        download_or_explain(self.title, fetch_all, searched, self.url, folder, self.how_to())
        return target

    def load(self, path, keys):
        """The arrays `keys` of the verified file, as new arrays (no pickle)."""
        import numpy as np

        filename = self.locate(path)
        check_sha256(filename, self.sha256, self.title)
        try:
            with np.load(filename, allow_pickle=False) as f:
                if not hasattr(f, "files"):
                    raise ValueError("it holds one array, not an .npz archive")
                names = list(f.files)
                arrays = {k: np.array(f[k]) for k in keys if k in names}
        except (OSError, EOFError, ValueError) as err:  # not a zip, truncated, pickled objects
            raise ValueError(f"{filename}: not a readable {self.title} .npz file "
                             f"({type(err).__name__}: {err}).") from err
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(f"{filename}: not a {self.title} file: it lacks the arrays "
                             f"{missing} (it holds {sorted(names)}).")
        return [arrays[k] for k in keys]
