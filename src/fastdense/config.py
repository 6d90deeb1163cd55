"""Global defaults, as in `keras.config`: the float type of new layers."""
_FLOATX = "float32"
_VALID = ("float32", "float64")


def floatx():
    """Returns the default float type of new layers: `"float32"` (default) or `"float64"`."""
    return _FLOATX


def set_floatx(value):
    """Sets the default float type of layers created afterwards.

    Args:
        value: `"float32"` or `"float64"`.

    Example:
    >>> fastdense.config.set_floatx("float64")
    """
    global _FLOATX
    if value not in _VALID:
        raise ValueError(
            f"Unknown floatx type: expected one of {list(_VALID)}. Received: value={value!r}"
        )
    _FLOATX = str(value)


def epsilon():
    """The fuzz factor of losses, as in Keras: 1e-7."""
    return 1e-7


def _default_threads(environ=None):
    """`FASTDENSE_NUM_THREADS` if set; else the cores this process may run on, at most
    `OMP_NUM_THREADS`: process pools set it in their workers to each worker's share of the
    machine (joblib's loky backend to `cpu_count() // n_jobs`, Dask's nanny to 1), as they do for
    OpenBLAS and MKL, so a worker does not oversubscribe the cores."""
    import os

    environ = os.environ if environ is None else environ
    env = environ.get("FASTDENSE_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    try:
        budget = len(os.sched_getaffinity(0))  # cores of this process (taskset, cgroup cpusets)
    except (AttributeError, OSError):
        budget = os.cpu_count() or 1
    limit = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # "4,2": the outer level
    if limit.isdigit() and int(limit) > 0:
        budget = min(budget, int(limit))
    return max(1, min(MAX_THREADS, budget))


_THREADS = {"max": None}
MAX_THREADS = 64  # the compiled pool's limit (FD_MAX_THREADS in _simd.h)


def num_threads():
    """The most threads `fit` (and inference over several batches) may use.

    The default is the number of cores this process may run on (`os.sched_getaffinity`), at
    most `OMP_NUM_THREADS` (joblib's and Dask's worker processes set it to their share), or
    `FASTDENSE_NUM_THREADS`."""
    if _THREADS["max"] is None:
        _THREADS["max"] = _default_threads()
    return _THREADS["max"]


def set_num_threads(n):
    """Sets the most threads `fit` may use for its larger matrix products, and `predict` and
    `evaluate` over several batches: any n from 1 to 64.

    With n > 1, `fit` times one and n threads on short probe chunks and keeps the faster (on a
    machine where other processes hold the cores, one thread is faster). Each product is cut
    into units whose arithmetic does not depend on the thread that runs them, so results are
    bit-identical for every n. `predict` and `evaluate` over more than one batch let the threads
    share the batches (same results); a single batch uses one thread. float64 products run on
    SciPy's BLAS, which keeps its own thread count (threadpoolctl or OPENBLAS_NUM_THREADS set
    that one).

    Args:
        n: a positive integer, at most 64.
    """
    from . import _validation

    n = _validation.positive_int("n", n)
    if n > MAX_THREADS:
        raise ValueError(f"fastdense runs on at most {MAX_THREADS} threads. Received: n={n}")
    _THREADS["max"] = n
