"""Atomic file writes, shared by model saving, the dataset download and the demo's plots."""
import contextlib
import os
import secrets


def check_overwrite(path, overwrite):
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"File exists and overwrite=False: not overwriting it. "
                              f"Received: filepath={path}")


def atomic_write(path, write, overwrite=True, check=None):
    """Writes through `write(fileobj)` to a temp file next to `path`, fsyncs it, lets
    `check(temp_path)` inspect it, and moves it onto `path` in one step; on any failure the temp
    file is removed and `path` is untouched. A kill at any moment leaves the old file or the new
    one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                  f"{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(tmp)
        with contextlib.suppress(OSError):  # a replaced file keeps its permissions
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never overwrites
            except FileExistsError:
                raise FileExistsError(f"File exists and overwrite=False: not overwriting it. "
                                      f"Received: filepath={path}") from None
            except OSError:  # no hard links here (some filesystems): check, then replace
                check_overwrite(path, False)
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def fsync_directory(directory):
    if os.name != "posix":
        return
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
