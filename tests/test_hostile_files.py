"""Model files from strangers (issue 16): bounded memory and time, no heap garbage, nothing
non-finite, only regular files, and every error naming the file and the member or field.

Every hostile file is built by its test, from a small valid model saved by fastdense. Loads whose
memory matters run in a child process under an address-space limit (RLIMIT_AS), which reports how
much its peak RSS (ru_maxrss) grew during each load: a regression fails the test instead of
harming pytest. The bombs are sized so that decompressing them would exceed the asserted bound.
"""
import io
import json
import os
import resource
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile
import zlib

import h5py
import numpy as np
import pytest

import fastdense
from fastdense import saving
from fastdense.layers import Dense

MB = 1 << 20
GROWTH_MB = 48        # what a refused load may add to the child's peak RSS
BOMB_MB = 96          # what each bomb would expand to (more than GROWTH_MB)
_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


# ---------------------------------------------------------------------------------------------
# Valid files and ways to damage them
# ---------------------------------------------------------------------------------------------
def make_model():
    m = fastdense.Sequential([Dense(12, activation="relu", input_shape=(6,)),
                              Dense(3, activation="softmax")])
    m.compile(optimizer=fastdense.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return m


@pytest.fixture
def valid(tmp_path):
    """A trained model saved as m.keras and w.weights.h5; returns (model, keras path, h5 path)."""
    rng = np.random.default_rng(0)
    m = make_model()
    m.fit(rng.normal(size=(32, 6)), rng.integers(0, 3, 32), epochs=1, verbose=0)
    m.save(tmp_path / "m.keras")
    m.save_weights(tmp_path / "w.weights.h5")
    return m, tmp_path / "m.keras", tmp_path / "w.weights.h5"


def members(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path, content, methods=None):
    """A zip of `content` {name: bytes, or writer(fileobj) streaming the member}, each member
    compressed with methods[name] (default stored). Streaming keeps bombs out of memory."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in content.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = (methods or {}).get(name, zipfile.ZIP_STORED)
            if callable(data):
                with z.open(info, "w") as w:
                    data(w)
            else:
                z.writestr(info, data)
    return path


def zeros_stream(n_mb):
    def write(w):
        block = bytes(MB)
        for _ in range(n_mb):
            w.write(block)
    return write


def edit_h5(src, dst, fn):
    """Copies an HDF5 file and applies fn(h5py.File) to the copy; returns its bytes."""
    data = bytearray(src.read_bytes() if hasattr(src, "read_bytes") else src)
    buf = io.BytesIO(bytes(data))
    with h5py.File(buf, "r+") as f:
        fn(f)
    out = buf.getvalue()
    if dst is not None:
        dst.write_bytes(out)
    return out


def replace_dataset(f, name, **kwargs):
    del f[name]
    return f.create_dataset(name, **kwargs)


def with_h5(keras_path, dst, h5_bytes):
    content = members(keras_path)
    content["model.weights.h5"] = h5_bytes
    return write_zip(dst, content)


def with_config(keras_path, dst, edit):
    content = members(keras_path)
    cfg = json.loads(content["config.json"])
    edit(cfg)
    content["config.json"] = json.dumps(cfg).encode()
    return write_zip(dst, content)


def load_error(call, path):
    """The message of the ValueError that call(path) raises, checked to name the file."""
    with pytest.raises(ValueError) as info:
        call(path)
    msg = str(info.value)
    assert str(path) in msg, f"the message does not name the file: {msg}"
    return msg


# ---------------------------------------------------------------------------------------------
# Loads in a child process: outcome, message and peak-RSS growth of each
# ---------------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import fastdense
    from fastdense.layers import Dense

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def target():
        m = fastdense.Sequential([Dense(12, activation="relu", input_shape=(6,)),
                                  Dense(3, activation="softmax")])
        m.compile(optimizer=fastdense.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        return m

    def snapshot(m):
        opt = m.optimizer
        return m.get_weights() + [opt._slots.copy(), np.float64(opt.learning_rate),
                                  np.int64(opt.iterations)]

    def run(kind, path):
        m = None
        try:
            if kind == "load_model":
                fastdense.load_model(path)
            else:
                m = target()
                before = snapshot(m)
                m.load_weights(path)
            return "ok", ""
        except ValueError as exc:
            if m is not None and not all(np.array_equal(a, b) for a, b in
                                         zip(snapshot(m), before)):
                return "partial load", str(exc)  # a failed load must change nothing
            return "ValueError", str(exc)
        except BaseException as exc:  # MemoryError, crashes in Python code, ...
            return type(exc).__name__, repr(exc)

    jobs = json.loads(sys.stdin.read())
    for kind, path in jobs[:1]:  # a valid file first: imports and first-load allocations
        assert run(kind, path)[0] == "ok", run(kind, path)
    out = []
    for kind, path in jobs[1:]:
        before = peak_mb()
        outcome, message = run(kind, path)
        out.append({"outcome": outcome, "message": message, "grew_mb": peak_mb() - before})
    print(json.dumps(out))
""")


def _limit_address_space():
    # a safety net: a regression meets MemoryError here instead of the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def run_loads(valid_file, jobs, timeout=120):
    """[(kind, path)] loaded in one child, after a warm-up load of `valid_file`."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if _ASAN:  # ASan reserves terabytes of address space; keep its quarantine small
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"
    kind0 = "load_model" if str(valid_file).endswith(".keras") else "load_weights"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], input=json.dumps([(kind0, str(valid_file))] + [
            (k, str(p)) for k, p in jobs]), capture_output=True, text=True, timeout=timeout,
        env=env, preexec_fn=None if _ASAN else _limit_address_space)
    assert proc.returncode == 0, f"child failed (rc={proc.returncode}): {proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (kind, path), r in zip(jobs, results):
        assert r["outcome"] == "ValueError", (kind, path, r)
        assert str(path) in r["message"], r["message"]
        assert r["grew_mb"] < GROWTH_MB, (kind, path, r)
    return [r["message"] for r in results]


# ---------------------------------------------------------------------------------------------
# 1. Decompression bombs through bzip2 / lzma zip members
# ---------------------------------------------------------------------------------------------
def test_bzip2_and_lzma_members_refused_before_decompression(valid, tmp_path):
    model, keras, _ = valid
    content = members(keras)
    bz = write_zip(tmp_path / "bz.keras", dict(content, **{"metadata.json": zeros_stream(BOMB_MB)}),
                   {"metadata.json": zipfile.ZIP_BZIP2})
    xz = write_zip(tmp_path / "xz.keras", dict(content, **{"config.json": zeros_stream(BOMB_MB)}),
                   {"config.json": zipfile.ZIP_LZMA})
    xz_h5 = write_zip(tmp_path / "xzh5.keras", content, {"model.weights.h5": zipfile.ZIP_LZMA})
    assert bz.stat().st_size < 64 << 10 and xz.stat().st_size < 64 << 10
    msgs = run_loads(keras, [("load_model", bz), ("load_model", xz), ("load_weights", xz_h5)])
    assert "metadata.json" in msgs[0] and "zip method 12" in msgs[0]
    assert "config.json" in msgs[1] and "zip method 14" in msgs[1]
    assert "model.weights.h5" in msgs[2] and "zip method 14" in msgs[2]


def test_deflated_members_still_load(valid, tmp_path):
    model, keras, _ = valid
    path = write_zip(tmp_path / "d.keras", members(keras),
                     {n: zipfile.ZIP_DEFLATED for n in members(keras)})
    loaded = fastdense.load_model(path)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _patch_declared_size(path, name, size):
    """Rewrites the uncompressed size a zip declares for member `name` (local and central)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    struct.pack_into("<I", data, info.header_offset + 22, size)  # local header
    at = data.find(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(name)] != name.encode():  # its central directory entry
        at = data.find(b"PK\x01\x02", at + 1)
        assert at > 0
    struct.pack_into("<I", data, at + 24, size)
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------------------------------------
# 2. Sizes declared by the config: limits and bytes present, checked before allocation
# ---------------------------------------------------------------------------------------------
def _wide(units, input_dim=2):
    def edit(cfg):
        layers = cfg["config"]["layers"]
        layers[0]["config"]["batch_shape"] = [None, input_dim]
        layers[1]["config"]["units"] = units
        layers[1].pop("build_config", None)
        layers[2].pop("build_config", None)
        cfg.pop("build_config", None)
        cfg["config"].pop("build_input_shape", None)
    return edit


def test_sizes_declared_by_the_config_are_bounded(valid, tmp_path):
    model, keras, _ = valid
    huge = with_config(keras, tmp_path / "huge.keras", _wide(67108864))
    huger = with_config(keras, tmp_path / "huger.keras", _wide(268435456))
    # within the limits, but the weights member cannot hold 6 million weights
    wide = with_config(keras, tmp_path / "wide.keras", _wide(1_000_000))
    # ... nor can a deflated member of ~3 KB declaring the 16 MB those weights need
    lying = write_zip(tmp_path / "lying.keras", members(wide),
                      {"model.weights.h5": zipfile.ZIP_DEFLATED})
    _patch_declared_size(lying, "model.weights.h5", 16 << 20)
    msgs = run_loads(keras, [("load_model", huge), ("load_model", huger), ("load_model", wide),
                             ("load_model", lying), ("load_weights", lying)])
    for msg in msgs[:2]:
        assert "config.json" in msg and f"MAX_PARAMS={saving.MAX_PARAMS:,}" in msg
    assert "model.weights.h5: it holds" in msgs[2]
    assert "too few for the 6,000,003 weights config.json describes" in msgs[2]
    assert "model.weights.h5: member 'model.weights.h5' declares 16777216 bytes, more than " \
           "its" in msgs[3] and "deflated bytes can hold" in msgs[3]
    # a model of 243 weights needs far less than 16 MB
    assert "declares 16777216 bytes, more than the" in msgs[4] and "its content can need" in msgs[4]


def test_model_from_config_and_dense_build_refuse_huge_sizes():
    cfg = {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 2], "name": "i"}},
        {"class_name": "Dense", "config": {"units": 268435456, "name": "d"}}]}
    with pytest.raises(ValueError, match="MAX_PARAMS"):
        fastdense.Sequential.from_config(cfg)
    # A user's own huge layer: a ValueError, never a raw MemoryError (2**42 weights, 16 TiB).
    with pytest.raises(ValueError, match=r"cannot allocate its kernel of shape \(2, 2199023255552"):
        fastdense.Sequential([fastdense.Input((2,)), Dense(2**41)])


# ---------------------------------------------------------------------------------------------
# 3. HDF5 chunk bombs; 4. chunks shorter than they declare (heap bytes loaded as weights)
# ---------------------------------------------------------------------------------------------
def _chunk_bomb(f):
    """The (6, 12) kernel as one gzip chunk of 8192 x 4096 float32 (128 MiB, ~130 KB stored)."""
    ds = replace_dataset(f, "layers/dense/vars/0", shape=(6, 12), maxshape=(None, None),
                         chunks=(8192, 4096), dtype="f4", compression="gzip")
    z = zlib.compressobj(1)
    block = bytes(MB)
    raw = b"".join(z.compress(block) for _ in range(8192 * 4096 * 4 // MB)) + z.flush()
    ds.id.write_direct_chunk((0, 0), raw)


def test_hdf5_chunk_bomb_refused(valid, tmp_path):
    model, keras, h5 = valid
    bomb = edit_h5(h5, tmp_path / "bomb.weights.h5", _chunk_bomb)
    assert len(bomb) < 1 << 20
    bomb_keras = with_h5(keras, tmp_path / "bomb.keras", bomb)
    msgs = run_loads(h5, [("load_weights", tmp_path / "bomb.weights.h5"),
                          ("load_model", bomb_keras), ("load_weights", bomb_keras)])
    for msg in msgs:
        assert "layers/dense/vars/0" in msg and "filter deflate (1)" in msg


def test_chunks_larger_than_the_dataset_refused(valid, tmp_path):
    model, keras, h5 = valid
    snap = model.get_weights()
    path = tmp_path / "big.weights.h5"
    edit_h5(h5, path, lambda f: replace_dataset(
        f, "layers/dense/vars/0", data=np.ones((6, 12), "f4"), maxshape=(None, None),
        chunks=(64, 64)))
    msg = load_error(model.load_weights, path)
    assert "layers/dense/vars/0 has chunks of shape (64, 64), larger than" in msg
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), snap))


def _raw_chunk(shape, **filters):
    """The stored bytes of one chunk of `shape` (ones), written with `filters` by libhdf5."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        ds = f.create_dataset("x", data=np.ones(shape, "f4"), chunks=shape, **filters)
        return ds.id.read_direct_chunk((0,) * len(shape))[1]


@pytest.mark.parametrize("filters,fragment", [
    (dict(shuffle=True, compression="lzf"), "lzf (32000)"),
    (dict(fletcher32=True), "is missing, damaged or not 292 bytes"),
    ({}, "is missing, damaged or not 288 bytes"),
])
def test_short_chunks_never_load_heap_bytes(valid, tmp_path, filters, fragment):
    """A chunk holding the bytes of a (3, 12) array where a (6, 12) one belongs: libhdf5 would
    fill the rest from uninitialised memory (lzf) or from whatever follows in the file."""
    model, keras, h5 = valid
    snap = model.get_weights()
    short = _raw_chunk((3, 12), **filters)

    def edit(f):
        ds = replace_dataset(f, "layers/dense/vars/0", shape=(6, 12), dtype="f4",
                             chunks=(6, 12), **filters)
        ds.id.write_direct_chunk((0, 0), short)

    path = tmp_path / "short.weights.h5"
    edit_h5(h5, path, edit)
    msg = load_error(model.load_weights, path)
    assert "layers/dense/vars/0" in msg and fragment in msg
    msg = load_error(fastdense.load_model, with_h5(keras, tmp_path / "short.keras",
                                                   path.read_bytes()))
    assert "model.weights.h5: layers/dense/vars/0" in msg and fragment in msg
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), snap))


def test_fastdense_and_keras_layouts_still_load(valid, tmp_path):
    """What the reader accepts: fastdense's one Fletcher-32 chunk, Keras's contiguous datasets,
    and several chunks no larger than the dataset."""
    model, keras, h5 = valid
    path = tmp_path / "c.weights.h5"
    kernel = model.get_weights()[0]
    edit_h5(h5, path, lambda f: replace_dataset(f, "layers/dense/vars/0", data=kernel,
                                                chunks=(4, 5), fletcher32=True))
    target = make_model()
    target.load_weights(path)
    np.testing.assert_array_equal(target.get_weights()[0], kernel)
    edit_h5(h5, path, lambda f: replace_dataset(f, "layers/dense/vars/0", data=kernel))
    target.load_weights(path)
    np.testing.assert_array_equal(target.get_weights()[0], kernel)


# ---------------------------------------------------------------------------------------------
# 5. Values checked after the cast to the model's dtype
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,value,fragment", [
    ("layers/dense/vars/0", np.full((6, 12), 1e300), "layers/dense/vars/0 holds NaN or Inf once "
                                                     "cast to the model's dtype float32"),
    ("optimizer/vars/2", np.full((6, 12), 1e300), "optimizer/vars/2 holds NaN or Inf once cast"),
    ("optimizer/vars/1", np.float64(1e300), "optimizer/vars/1 (learning rate) must be positive "
                                            "and finite in the model's dtype float32"),
    ("optimizer/vars/1", np.float64(1e-50), "optimizer/vars/1 (learning rate) must be positive"),
])
def test_values_checked_after_the_cast(valid, tmp_path, name, value, fragment):
    model, keras, h5 = valid
    before = model.get_weights(), model.optimizer.learning_rate, model.optimizer._slots.copy()
    path = tmp_path / "v.weights.h5"
    edit_h5(h5, path, lambda f: replace_dataset(f, name, data=value))
    assert fragment in load_error(model.load_weights, path)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before[0]))
    assert model.optimizer.learning_rate == before[1]
    np.testing.assert_array_equal(model.optimizer._slots, before[2])
    msg = load_error(fastdense.load_model, with_h5(keras, tmp_path / "v.keras",
                                                   path.read_bytes()))
    assert "model.weights.h5: " + fragment in msg


def test_float64_values_that_fit_the_model_dtype_load(valid, tmp_path):
    model, keras, h5 = valid
    path = tmp_path / "ok.weights.h5"
    edit_h5(h5, path, lambda f: replace_dataset(f, "optimizer/vars/2",
                                                data=np.full((6, 12), 1e30)))
    model.load_weights(path)
    assert model.optimizer._slots[0] == np.float32(1e30)


def test_config_learning_rate_checked_in_the_model_dtype(valid, tmp_path):
    model, keras, h5 = valid

    def edit(cfg):
        cfg["compile_config"]["optimizer"]["config"]["learning_rate"] = 1e300

    msg = load_error(fastdense.load_model, with_config(keras, tmp_path / "lr.keras", edit))
    assert "config.json: compile_config's optimizer sets learning_rate=1e+300" in msg
    assert "not finite in the model's dtype float32" in msg


# ---------------------------------------------------------------------------------------------
# 6. Layer count: building is linear, and bounded by MAX_LAYERS
# ---------------------------------------------------------------------------------------------
def _many_layers(keras, dst, n):
    """m.keras's model with n Dropout layers between its two Dense layers (the weights file needs
    no groups for weightless layers)."""
    def edit(cfg):
        layers = cfg["config"]["layers"]
        layers[2:2] = [{"module": "keras.layers", "class_name": "Dropout",
                        "config": {"rate": 0.1, "name": f"drop{i}"}} for i in range(n)]
    return with_config(keras, dst, edit)


def test_layers_are_built_once_each(valid, tmp_path, monkeypatch):
    """The largest model MAX_LAYERS allows loads, and each layer is built once."""
    model, keras, _ = valid
    n = saving.MAX_LAYERS - 2
    path = _many_layers(keras, tmp_path / "many.keras", n)
    calls = []
    real = fastdense.layers.Layer.build
    monkeypatch.setattr(fastdense.layers.Layer, "build",
                        lambda self, shape: (calls.append(self.name), real(self, shape))[1])
    loaded = fastdense.load_model(path)
    assert len(loaded.layers) == n + 2
    assert len(calls) == n + 2 == len(set(calls))  # adding one by one builds n**2 / 2 times
    x = np.random.default_rng(1).normal(size=(5, 6))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)


@pytest.mark.parametrize("n", [saving.MAX_LAYERS, 20_000])
def test_layer_count_is_limited(valid, tmp_path, n):
    model, keras, _ = valid
    msg = load_error(fastdense.load_model, _many_layers(keras, tmp_path / "many.keras", n))
    assert f"config.json: the model has {n + 3:,} layers, more than the MAX_LAYERS=" in msg


# ---------------------------------------------------------------------------------------------
# 7. Only regular files
# ---------------------------------------------------------------------------------------------
def _in_thread(fn, unblock):
    result = {}

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # blocked in open(): release it, then fail
        unblock()
        t.join(5)
        pytest.fail("the load blocked")
    return result.get("exc")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("name", ["f.keras", "f.weights.h5"])
def test_fifo_refused_without_blocking(tmp_path, name):
    path = tmp_path / name
    os.mkfifo(path)

    def unblock():
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    calls = [lambda: make_model().load_weights(path)]
    if name.endswith(".keras"):
        calls.append(lambda: fastdense.load_model(path))
    for call in calls:
        exc = _in_thread(call, unblock)
        assert isinstance(exc, ValueError), exc
        assert str(path) in str(exc) and "a FIFO (named pipe), not a regular file" in str(exc)


def test_directories_and_devices_refused(tmp_path):
    (tmp_path / "d.keras").mkdir()
    msg = load_error(fastdense.load_model, tmp_path / "d.keras")
    assert "directory" in msg
    if os.path.exists("/dev/zero"):
        (tmp_path / "z.weights.h5").symlink_to("/dev/zero")
        msg = load_error(make_model().load_weights, tmp_path / "z.weights.h5")
        assert "a device, not a regular file" in msg


# ---------------------------------------------------------------------------------------------
# 8. Every message names the file and the field or member
# ---------------------------------------------------------------------------------------------
def _layer(i):
    return lambda cfg: cfg["config"]["layers"][i]


CONFIG_EDITS = [
    ("seed -1", lambda c: _layer(1)(c)["config"]["kernel_initializer"]["config"].update(seed=-1),
     "layer 1 (Dense) kernel_initializer: seed must be null or an integer in [0, 2**64). "
     "Received: seed=-1"),
    ("dropout seed", lambda c: _layer(1)(c).update(class_name="Dropout", config={
        "rate": 0.5, "seed": "x", "name": "dd"}), "layer 1 (Dropout): seed must be"),
    ("module dict", lambda c: _layer(1)(c).update(module={"a": 1}), "layer 1 (Dense) names module"),
    ("model module dict", lambda c: c.update(module={"a": 1}), "The model names module"),
    ("optimizer module list", lambda c: c["compile_config"]["optimizer"].update(module=[1]),
     "The optimizer names module"),
    ("registered dict", lambda c: _layer(1)(c).update(registered_name={"x": 1}),
     "custom registered layer"),
    ("units", lambda c: _layer(1)(c)["config"].update(units=-3),
     "layer 1 (Dense) has an invalid config"),
    ("layers", lambda c: c["config"].update(layers={}), "must hold a list of layers"),
    ("activation", lambda c: _layer(2)(c)["config"].update(activation=3),
     "layer 2 (Dense) activation"),
    ("batch shape", lambda c: _layer(0)(c)["config"].update(batch_shape=[None, 0]), "batch_shape"),
    ("loss", lambda c: c["compile_config"].update(loss=7), "The loss must be a JSON object"),
    ("optimizer", lambda c: c["compile_config"]["optimizer"]["config"].update(beta_1=7),
     "the optimizer Adam has an invalid config"),
]


@pytest.mark.parametrize("what,edit,fragment", CONFIG_EDITS, ids=[c[0] for c in CONFIG_EDITS])
def test_config_errors_name_file_member_and_field(valid, tmp_path, what, edit, fragment):
    model, keras, _ = valid
    msg = load_error(fastdense.load_model, with_config(keras, tmp_path / "c.keras", edit))
    assert "config.json: " in msg and fragment in msg
    assert "truncated" not in msg and "corrupted" not in msg


def test_member_errors_name_the_member(valid, tmp_path):
    model, keras, h5 = valid
    content = members(keras)
    cases = [
        (dict(content, **{"metadata.json": b"[1]"}), "metadata.json: must hold a JSON object"),
        (dict(content, **{"config.json": b"{"}), "config.json: not valid JSON"),
        (dict(content, **{"model.weights.h5": b"not hdf5" * 100}),
         "model.weights.h5: it is not a readable HDF5 weights file"),
        ({k: v for k, v in content.items() if k != "config.json"},
         "no member 'config.json'"),
    ]
    for i, (files, fragment) in enumerate(cases):
        msg = load_error(fastdense.load_model, write_zip(tmp_path / f"m{i}.keras", files))
        assert fragment in msg
    many = dict(content, **{f"extra{i}": b"" for i in range(saving._MAX_MEMBERS)})
    msg = load_error(fastdense.load_model, write_zip(tmp_path / "many.keras", many))
    assert "the zip archive declares 67 members" in msg
    big = tmp_path / "big.weights.h5"
    big.write_bytes(h5.read_bytes() + bytes(4 << 20))
    msg = load_error(model.load_weights, big)
    assert "more than the" in msg and "a weights file of this model" in msg


# ---------------------------------------------------------------------------------------------
# Fuzzing: seeded mutations of a valid file, loaded in a child under a memory limit
# ---------------------------------------------------------------------------------------------
FUZZ_CHILD = CHILD.replace("jobs = json.loads(sys.stdin.read())", "jobs = make_jobs()").replace(
    "import fastdense\n", "import fastdense\n" + textwrap.dedent('''
    import io, os, random, zipfile
    import h5py
    import numpy as np

    SRC, OUT, SEED, N = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def h5_edit(h5, rng):
        buf = io.BytesIO(h5)
        with h5py.File(buf, "r+") as f:
            names = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            name = rng.choice(names)
            shape = f[name].shape
            del f[name]
            kind = rng.randrange(5)
            if kind == 0 and shape:  # chunked, chunks up to 4x the dataset, some filter
                chunks = tuple(rng.randint(1, 4 * d) for d in shape)
                filt = rng.choice([{}, {"compression": "gzip"}, {"compression": "lzf"},
                                   {"fletcher32": True}, {"shuffle": True}])
                f.create_dataset(name, shape=shape, maxshape=(None,) * len(shape), chunks=chunks,
                                 dtype="f4", **filt)[...] = 1
            elif kind == 1:  # another dtype
                f[name] = np.ones(shape, rng.choice(["f2", "f8", "i4", "u1", ">f4"]))
            elif kind == 2:  # another shape
                f[name] = np.ones(tuple(d + rng.choice([-1, 1]) for d in shape) or (2,), "f4")
            elif kind == 3:  # huge values
                f[name] = np.full(shape, rng.choice([1e300, -1e300, 1e-300, 3e38]))
            else:  # a group where a dataset belongs
                f.create_group(name)
        return buf.getvalue()

    def json_edit(cfg, rng):
        # replace one value somewhere in the config by a hostile one
        nodes = []
        def walk(o):
            if isinstance(o, dict):
                nodes.extend((o, k) for k in o)
                for v in o.values():
                    walk(v)
            elif isinstance(o, list):
                nodes.extend((o, i) for i in range(len(o)))
                for v in o:
                    walk(v)
        walk(cfg)
        holder, key = rng.choice(nodes)
        holder[key] = rng.choice([-1, 0, 2**31, 2**62, 10**30, 1e300, -1e-300, "", "x" * 50,
                                  None, True, [], {}, {"module": {"a": 1}}, [None, 2**40],
                                  {"class_name": "Dense", "config": {}}])
        return cfg

    def make_jobs():
        rng = random.Random(SEED)
        with zipfile.ZipFile(SRC) as z:
            content = {n: z.read(n) for n in z.namelist()}
        full = open(SRC, "rb").read()
        jobs = [("load_model", SRC)]
        for t in range(N):
            kind = t % 5
            path = os.path.join(OUT, f"f{t}.keras")
            if kind == 0:  # bytes: flips, garbage, 0xff runs
                b = bytearray(full)
                for _ in range(rng.randint(1, 4)):
                    i = rng.randrange(len(b))
                    b[i:i + rng.randint(1, 8)] = bytes(rng.randrange(256) for _ in range(8))
                open(path, "wb").write(bytes(b[:len(full)]))
            else:
                files = dict(content)
                methods = {}
                if kind == 1:
                    files["config.json"] = json.dumps(
                        json_edit(json.loads(files["config.json"]), rng)).encode()
                elif kind == 2:
                    files["model.weights.h5"] = h5_edit(files["model.weights.h5"], rng)
                elif kind == 3:
                    name = rng.choice(sorted(files))
                    methods[name] = rng.choice([zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA,
                                                zipfile.ZIP_DEFLATED])
                else:
                    h5 = bytearray(files["model.weights.h5"])
                    for _ in range(rng.randint(1, 4)):
                        h5[rng.randrange(len(h5))] ^= 1 << rng.randrange(8)
                    files["model.weights.h5"] = bytes(h5)
                with zipfile.ZipFile(path, "w") as z:
                    for name, data in files.items():
                        z.writestr(zipfile.ZipInfo(name), data,
                                   compress_type=methods.get(name, zipfile.ZIP_STORED))
            jobs.append(("load_model" if t % 2 else "load_weights", path))
        return jobs
    '''))


def test_fuzzed_files_refused_cleanly_in_bounded_memory(valid, tmp_path):
    """A few hundred seeded mutations (bytes, config values, HDF5 layouts/dtypes/shapes/values,
    zip methods): each load is a success or a ValueError naming the file, within GROWTH_MB."""
    model, keras, _ = valid
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if _ASAN:
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"
    out = tmp_path / "fuzz"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", FUZZ_CHILD, str(keras), str(out), "16", "300"],
                          input="", capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=None if _ASAN else _limit_address_space)
    assert proc.returncode == 0, f"child failed (rc={proc.returncode}): {proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 300
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        assert r["outcome"] in ("ok", "ValueError"), r
        assert r["grew_mb"] < GROWTH_MB, r
        if r["outcome"] == "ValueError":
            assert str(out) in r["message"], r["message"]
    assert counts.get("ValueError", 0) > 150, counts
