"""Benchmarks: fastdense beside a plain-NumPy implementation of the same work, in the same run.

Absolute times drift on a shared machine; the ratios printed at the end (reference time /
fastdense time, per group) are what the README reports. Run: `pytest bench` (add
`--benchmark-disable` to only check that they work).
"""
import platform

import numpy as np
import pytest

import fastdense


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return []
    return [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            | {"lib": i["filepath"].rsplit("/", 1)[-1]} for i in threadpool_info()]


@pytest.fixture(autouse=True)
def _machine_info(request):
    bench = request.node.funcargs.get("benchmark") if hasattr(request.node, "funcargs") else None
    if bench is not None:
        bench.extra_info["blas"] = blas_info()
        bench.extra_info["cpu"] = platform.processor() or platform.machine()
    yield


@pytest.fixture(scope="session")
def fashion():
    """The reference workload's data: 48,000 training rows and 12,000 validation rows, float32.

    Real Fashion-MNIST when installed, else random data of the same shape (timing only)."""
    try:
        (x, y), _ = fastdense.datasets.fashion_mnist.load_data()
        x = (x.reshape(-1, 784) / np.float32(255)).astype(np.float32)
    except Exception:  # pragma: no cover - data not installed
        rng = np.random.default_rng(0)
        x = rng.random((60000, 784), dtype=np.float32)
        y = rng.integers(0, 10, 60000)
    onehot = fastdense.utils.to_categorical(y, 10).astype(np.float32)
    return x[:48000], onehot[:48000], x[48000:], onehot[48000:]


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    groups = {}
    for group, benches in (getattr(session, "groups", None) or []):
        for bench in benches:
            as_dict = isinstance(bench, dict)
            median = bench["median"] if as_dict else bench.stats.median
            name = (bench["name"] if as_dict else bench.name).split("[")[0]
            extra = (bench.get("extra_info") if as_dict else getattr(bench, "extra_info", None)) or {}
            groups.setdefault(group, {})[name] = median
            for ref, info in extra.get("references", {}).items():  # interleaved with ours
                groups[group][ref + " (interleaved)"] = info["median_s"]
    if not groups:
        return
    terminalreporter.write_sep("-", "fastdense speed-up (median time of the other / fastdense's)")
    for group, times in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ours = {k: v for k, v in times.items() if "fastdense" in k}
        others = {k: v for k, v in times.items() if "fastdense" not in k}
        for name, t in sorted(ours.items()):
            parts = [f"{o.replace('test_', '')}: {v * 1e3:.3f} ms, {v / t:.2f}x"
                     for o, v in sorted(others.items())]
            terminalreporter.write_line(f"{group}: {name.replace('test_', '')} {t * 1e3:.3f} ms; "
                                        + ("; ".join(parts) or "no reference"))
