"""Tests of fastdense.saving: Keras 3 `.keras` / `.weights.h5` files, read and written.

Reference files come from real Keras 3.15 (tests/data/keras_fixtures). Robustness tests damage
files (truncation, bit flips, garbage) and expect a ValueError or a successful load, never a crash;
the HDF5 fuzzing runs in a subprocess so that a crash inside the HDF5 library fails the test
instead of killing pytest.
"""
import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import fastdense
from fastdense import saving
from fastdense.layers import Dense, Dropout, Flatten

from conftest import KERAS_FIXTURES
FIXTURE_NAMES = sorted(p.stem for p in KERAS_FIXTURES.glob("*.keras"))
REPO_ROOT = Path(fastdense.__file__).resolve().parents[1]


def fixture_path(name):
    return KERAS_FIXTURES / f"{name}.keras"


def data(n=64, d=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, classes, n)


def make_model(optimizer=None, dropout=False):
    layers = [Dense(12, activation="relu", input_shape=(8,))]
    if dropout:
        layers.append(Dropout(0.0))
    layers.append(Dense(3, activation="softmax"))
    m = fastdense.Sequential(layers)
    m.compile(optimizer=optimizer or fastdense.optimizers.Adam(0.003),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def trained_model(optimizer=None, epochs=1, dropout=False):
    x, y = data()
    m = make_model(optimizer, dropout=dropout)
    m.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0)
    return m


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                      for x, y in zip(wa, wb))


def h5_layout(h5bytes):
    """{path: (kind, shape, dtype, attrs)} of an HDF5 file."""
    out = {}
    with h5py.File(io.BytesIO(h5bytes), "r") as f:
        def visit(name, obj):
            attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", obj.shape, obj.dtype.str, attrs)
            else:
                out[name] = ("group", None, None, attrs)
        f.visititems(visit)
    return out


def rewrite_keras(src, dst, config=None, metadata=None, h5=None, extra=None,
                  compression=zipfile.ZIP_STORED):
    """Copies a .keras file, replacing members (config/metadata: dicts or bytes)."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for name, value in (("config.json", config), ("metadata.json", metadata),
                        ("model.weights.h5", h5)):
        if value is not None:
            members[name] = value if isinstance(value, bytes) else json.dumps(value).encode()
    members.update(extra or {})
    with zipfile.ZipFile(dst, "w", compression=compression) as z:
        for name, value in members.items():
            z.writestr(name, value)
    return dst


def keras_config(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))


def keras_member(path, name):
    with zipfile.ZipFile(path) as z:
        return z.read(name)


# ---------------------------------------------------------------------------------------------
# Files written by Keras 3
# ---------------------------------------------------------------------------------------------
def test_fixtures_present():
    assert len(FIXTURE_NAMES) >= 5, f"no Keras fixtures found in {KERAS_FIXTURES}"


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_keras_fixture_loads_and_predicts(name):
    arrays = np.load(KERAS_FIXTURES / f"{name}.npz")
    spec = json.loads((KERAS_FIXTURES / f"{name}.json").read_text())
    model = fastdense.load_model(fixture_path(name))
    assert isinstance(model, fastdense.Sequential)
    np.testing.assert_allclose(model.predict(arrays["x"][:20], verbose=0), arrays["predict"],
                               rtol=1e-5, atol=1e-6)
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_array_equal(w, arrays[f"trained_{i}"])
    assert model.compiled
    assert type(model.optimizer).__name__.lower() == spec["optimizer"]["name"].lower()
    assert model.optimizer.iterations == 2 * -(-len(arrays["x"]) // 16)
    assert model.metrics_names == ["loss"] + spec["metrics"]
    # and it can go on training
    model.fit(arrays["x"], arrays["y"], epochs=1, batch_size=16, shuffle=False, verbose=0)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_keras_fixture_optimizer_state_is_keras_order(name):
    """Training fastdense from the fixture's initial weights yields the optimizer state that
    Keras saved: this pins which HDF5 variable is which slot of which weight."""
    arrays = np.load(KERAS_FIXTURES / f"{name}.npz")
    loaded = fastdense.load_model(fixture_path(name))
    fresh = fastdense.load_model(fixture_path(name), compile=False)
    opt = type(loaded.optimizer).from_config(loaded.optimizer.get_config())
    fresh.compile(optimizer=opt, loss=keras_config(fixture_path(name))["compile_config"]["loss"])
    fresh.set_weights([arrays[f"initial_{i}"] for i in range(len(fresh.weights))])
    fresh.fit(arrays["x"], arrays["y"], epochs=2, batch_size=16, shuffle=False, verbose=0)
    assert fresh.optimizer.iterations == loaded.optimizer.iterations
    a, b = fresh.optimizer._slots, loaded.optimizer._slots
    assert a.shape == b.shape
    if a.size:
        assert np.abs(b).max() > 1e-3  # the state is really there
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-6)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_written_file_mirrors_keras_layout(name, tmp_path):
    """A Keras model loaded and saved again by fastdense has Keras's exact HDF5 layout (paths,
    shapes, dtypes, names) and config.json / metadata.json structure."""
    src = fixture_path(name)
    model = fastdense.load_model(src)
    out = tmp_path / "again.keras"
    model.save(out)
    ours = h5_layout(keras_member(out, "model.weights.h5"))
    theirs = h5_layout(keras_member(src, "model.weights.h5"))
    # Keras gives the learning-rate variable the dtype of floatx when the optimizer was made
    # (float64 in the float64 case, whose layers are float32); fastdense uses the model's dtype.
    assert ours.pop("optimizer/vars/1")[2] == np.dtype(model.dtype).str
    assert theirs.pop("optimizer/vars/1")[:2] == ("dataset", ())
    assert ours == theirs
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == sorted(zipfile.ZipFile(src).namelist())
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        meta = json.loads(z.read("metadata.json"))
    assert set(meta) == {"keras_version", "date_saved"} and meta["keras_version"].startswith("3.")
    c_ours, c_theirs = keras_config(out), keras_config(src)
    assert list(c_ours) == list(c_theirs)
    assert c_ours["build_config"] == c_theirs["build_config"]
    assert set(c_ours["compile_config"]) == set(c_theirs["compile_config"])
    opt_ours, opt_theirs = c_ours["compile_config"]["optimizer"], c_theirs["compile_config"]["optimizer"]
    assert opt_ours["class_name"] == opt_theirs["class_name"]
    assert opt_ours["module"] == opt_theirs["module"] == "keras.optimizers"
    assert set(opt_ours["config"]) == set(opt_theirs["config"])
    assert opt_ours["config"]["learning_rate"] == opt_theirs["config"]["learning_rate"]
    assert c_ours["compile_config"]["loss"] == c_theirs["compile_config"]["loss"]
    assert c_ours["compile_config"]["metrics"] == c_theirs["compile_config"]["metrics"]
    layers_ours = c_ours["config"]["layers"]
    layers_theirs = c_theirs["config"]["layers"]
    assert [(l["module"], l["class_name"]) for l in layers_ours] == \
        [(l["module"], l["class_name"]) for l in layers_theirs]
    for lo, lt in zip(layers_ours[1:], layers_theirs[1:]):
        assert lo["build_config"] == lt["build_config"]
        for key in ("name", "units", "activation", "use_bias"):
            assert lo["config"][key] == lt["config"][key]
    assert layers_ours[0]["config"]["batch_shape"] == layers_theirs[0]["config"]["batch_shape"]
    # and it loads back to the same predictions
    again = fastdense.load_model(out)
    x = np.load(KERAS_FIXTURES / f"{name}.npz")["x"][:20]
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_weightless_layers_get_keras_groups(tmp_path):
    m = fastdense.Sequential([Flatten(input_shape=(2, 4)), Dense(5, activation="tanh"),
                              Dropout(0.1), Dense(3), Dropout(0.2), fastdense.layers.Activation("softmax")])
    m.compile(optimizer=fastdense.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    m.save(tmp_path / "m.keras")
    layout = h5_layout(keras_member(tmp_path / "m.keras", "model.weights.h5"))
    groups = sorted(p for p, v in layout.items() if p.startswith("layers/") and p.endswith("/vars"))
    assert groups == ["layers/activation/vars", "layers/dense/vars", "layers/dense_1/vars",
                      "layers/dropout/vars", "layers/dropout_1/vars", "layers/flatten/vars"]
    assert layout["layers/dropout_1/vars"][3] == {"name": m.layers[4].name}
    assert not [p for p in layout if p.startswith("layers/dropout/vars/")]
    assert [p for p in layout if p.startswith("optimizer/vars/")] == \
        [f"optimizer/vars/{i}" for i in range(6)]
    loaded = fastdense.load_model(tmp_path / "m.keras")
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in m.layers]
    x = np.random.default_rng(0).normal(size=(7, 2, 4))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("floatx", ["float32", "float64"])
def test_round_trip_is_bit_identical_and_training_resumes_exactly(floatx, tmp_path):
    fastdense.config.set_floatx(floatx)
    x, y = data()
    m = trained_model(dropout=True)
    assert m.dtype == floatx
    path = tmp_path / "m.keras"
    m.save(path)
    fastdense.config.set_floatx("float32")  # the file decides the dtype, not floatx
    loaded = fastdense.load_model(path)
    assert loaded.dtype == floatx
    assert loaded.get_config() == m.get_config()
    assert same_weights(loaded, m)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))
    assert loaded.optimizer.get_config() == m.optimizer.get_config()
    assert loaded.optimizer.iterations == m.optimizer.iterations == 4
    assert loaded.optimizer._slots.dtype == m.optimizer._slots.dtype
    np.testing.assert_array_equal(loaded.optimizer._slots, m.optimizer._slots)
    assert loaded.metrics_names == m.metrics_names
    h1 = m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    h2 = loaded.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert same_weights(loaded, m)
    np.testing.assert_array_equal(loaded.optimizer._slots, m.optimizer._slots)
    assert h1.history == h2.history


OPTIMIZERS = {
    "sgd": lambda: fastdense.optimizers.SGD(0.05),
    "sgd_momentum": lambda: fastdense.optimizers.SGD(0.05, momentum=0.9),
    "sgd_nesterov": lambda: fastdense.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: fastdense.optimizers.Adam(0.003),
    "adamw": lambda: fastdense.optimizers.AdamW(0.003),
    "rmsprop": lambda: fastdense.optimizers.RMSprop(0.003),
    "rmsprop_centered_momentum": lambda: fastdense.optimizers.RMSprop(0.003, momentum=0.5,
                                                                      centered=True),
    "adagrad": lambda: fastdense.optimizers.Adagrad(0.05),
    "schedule": lambda: fastdense.optimizers.Adam(
        fastdense.optimizers.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.5)),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_every_optimizer_resumes_exactly(opt_name, tmp_path):
    x, y = data()
    m = trained_model(OPTIMIZERS[opt_name]())
    m.optimizer.learning_rate = 0.0123 if opt_name != "schedule" else m.optimizer._learning_rate
    m.save(tmp_path / "m.keras")
    loaded = fastdense.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is type(m.optimizer)
    assert loaded.optimizer.iterations == m.optimizer.iterations
    assert loaded.optimizer.learning_rate == m.optimizer.learning_rate
    for model in (m, loaded):
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert same_weights(loaded, m)
    np.testing.assert_array_equal(loaded.optimizer._slots, m.optimizer._slots)


def test_keras_order_of_rmsprop_variables(tmp_path):
    """RMSprop: all velocities, then all momentums, then all average gradients (Keras's build)."""
    m = trained_model(fastdense.optimizers.RMSprop(0.003, momentum=0.5, centered=True))
    m.save_weights(tmp_path / "w.weights.h5")
    n = m._params.size
    offsets = np.cumsum([0] + [w.size for w in m.weights])
    with h5py.File(tmp_path / "w.weights.h5", "r") as f:
        g = f["optimizer/vars"]
        assert len(g) == 2 + 3 * 4
        for k in range(3):
            for i, w in enumerate(m.weights):
                expect = m.optimizer._slots[k * n + offsets[i]:k * n + offsets[i + 1]].reshape(w.shape)
                np.testing.assert_array_equal(g[str(2 + 4 * k + i)][()], expect)


def test_keras_order_of_adam_variables(tmp_path):
    """Adam: momentum and velocity interleaved, per weight."""
    m = trained_model(fastdense.optimizers.Adam(0.003))
    m.save_weights(tmp_path / "w.weights.h5")
    n = m._params.size
    offsets = np.cumsum([0] + [w.size for w in m.weights])
    with h5py.File(tmp_path / "w.weights.h5", "r") as f:
        g = f["optimizer/vars"]
        assert g["0"][()] == m.optimizer.iterations and g["0"].dtype == np.int64
        assert g["1"].dtype == np.float32 and g["1"][()] == np.float32(0.003)
        for i, w in enumerate(m.weights):
            for k in range(2):
                expect = m.optimizer._slots[k * n + offsets[i]:k * n + offsets[i + 1]]
                np.testing.assert_array_equal(g[str(2 + 2 * i + k)][()], expect.reshape(w.shape))


def test_loss_and_metric_objects_round_trip(tmp_path):
    m = fastdense.Sequential([Dense(4, activation="relu", input_shape=(8,)), Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss=fastdense.losses.CategoricalCrossentropy(label_smoothing=0.1),
              metrics=[fastdense.metrics.CategoricalAccuracy(name="acc_obj"), "mae"])
    m.save(tmp_path / "m.keras")
    loaded = fastdense.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, fastdense.losses.CategoricalCrossentropy)
    assert loaded.loss.label_smoothing == 0.1
    assert loaded.metrics_names == m.metrics_names == ["loss", "acc_obj", "mae"]


def test_uncompiled_and_compile_false(tmp_path):
    m = fastdense.Sequential([Dense(4, input_shape=(3,))])
    m.save(tmp_path / "u.keras")
    assert "compile_config" not in keras_config(tmp_path / "u.keras")
    loaded = fastdense.load_model(tmp_path / "u.keras")
    assert not loaded.compiled and same_weights(loaded, m)
    t = trained_model()
    t.save(tmp_path / "t.keras")
    loaded = fastdense.load_model(tmp_path / "t.keras", compile=False)
    assert not loaded.compiled and loaded.optimizer is None and same_weights(loaded, t)


def test_model_from_config():
    m = trained_model(dropout=True)
    clone = saving.model_from_config(m.get_config())
    assert clone.get_config() == m.get_config() and not same_weights(clone, m)
    clone = saving.model_from_config(keras_config(fixture_path("tanh_rmsprop_mse")))
    assert [l.units for l in clone.layers] == [12, 2]
    bad = m.get_config()
    bad["layers"][1]["class_name"] = "Lambda"
    with pytest.raises(ValueError, match="Lambda"):
        saving.model_from_config(bad)


def test_replaced_file_keeps_permissions(tmp_path):
    path = tmp_path / "m.keras"
    m = trained_model()
    m.save(path)
    os.chmod(path, 0o640)
    m.save(path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_unbuilt_model_round_trip(tmp_path):
    m = fastdense.Sequential([Dense(4), Dense(2)])
    m.compile(optimizer="sgd", loss="mse")
    m.save(tmp_path / "u.keras")
    loaded = fastdense.load_model(tmp_path / "u.keras")
    assert not loaded.built and loaded.compiled
    assert [l.name for l in loaded.layers] == [l.name for l in m.layers]
    loaded.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)


def test_legacy_decay_is_saved_as_inverse_time_decay(tmp_path):
    x, y = data()
    with pytest.warns(DeprecationWarning):
        opt = fastdense.optimizers.SGD(learning_rate=0.1, decay=0.01)
    m = trained_model(opt)
    m.save(tmp_path / "m.keras")
    lr_cfg = keras_config(tmp_path / "m.keras")["compile_config"]["optimizer"]["config"]["learning_rate"]
    assert lr_cfg["class_name"] == "InverseTimeDecay"
    loaded = fastdense.load_model(tmp_path / "m.keras")
    for model in (m, loaded):
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert same_weights(loaded, m)


# ---------------------------------------------------------------------------------------------
# save_weights / load_weights
# ---------------------------------------------------------------------------------------------
def test_save_weights_load_weights(tmp_path):
    x, y = data()
    m = trained_model()
    m.save_weights(tmp_path / "w.weights.h5")
    other = make_model()
    assert not same_weights(other, m)
    other.load_weights(tmp_path / "w.weights.h5")
    assert same_weights(other, m)
    assert other.optimizer.iterations == m.optimizer.iterations
    np.testing.assert_array_equal(other.optimizer._slots, m.optimizer._slots)
    for model in (m, other):
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert same_weights(other, m)
    # from a .keras file too, and into an uncompiled model
    m.save(tmp_path / "m.keras")
    plain = fastdense.Sequential([Dense(12, activation="relu", input_shape=(8,)),
                                  Dense(3, activation="softmax")])
    plain.load_weights(tmp_path / "m.keras")
    assert same_weights(plain, m)


def test_load_weights_from_keras_fixture(tmp_path):
    arrays = np.load(KERAS_FIXTURES / "relu_adam_sparse.npz")
    m = fastdense.Sequential([Dense(12, activation="relu", input_shape=(8,)),
                              Dense(12, activation="relu"), Dense(3, activation="softmax")])
    m.load_weights(fixture_path("relu_adam_sparse"))
    np.testing.assert_allclose(m.predict(arrays["x"][:20], verbose=0), arrays["predict"],
                               rtol=1e-5, atol=1e-6)
    h5 = tmp_path / "k.weights.h5"
    h5.write_bytes(keras_member(fixture_path("relu_adam_sparse"), "model.weights.h5"))
    m2 = fastdense.Sequential([Dense(12, activation="relu", input_shape=(8,)),
                               Dense(12, activation="relu"), Dense(3, activation="softmax")])
    m2.compile(optimizer=fastdense.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    m2.load_weights(h5)
    assert same_weights(m2, m)
    assert m2.optimizer.iterations == 26


def test_suffixes_are_checked(tmp_path):
    m = trained_model()
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        m.save_weights(tmp_path / "w.h5")
    with pytest.raises(ValueError, match=r"\.keras"):
        m.save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="File format not supported"):
        m.load_weights(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="File format not supported"):
        fastdense.load_model(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="File not found"):
        fastdense.load_model(tmp_path / "missing.keras")
    assert os.listdir(tmp_path) == []


def _snapshot(model):
    opt = model.optimizer
    return (model.get_weights(), opt.iterations, opt.learning_rate,
            None if opt._slots is None else opt._slots.copy())


def _unchanged(model, snap):
    w, it, lr, slots = snap
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), w))
    assert model.optimizer.iterations == it and model.optimizer.learning_rate == lr
    np.testing.assert_array_equal(model.optimizer._slots, slots)


@pytest.mark.parametrize("other", [
    lambda: [Dense(12, activation="relu", input_shape=(8,)), Dense(4, activation="softmax")],
    lambda: [Dense(12, activation="relu", input_shape=(8,)), Dense(3), Dense(3)],
    lambda: [Dense(12, activation="relu", input_shape=(8,))],
    lambda: [Dense(12, activation="relu", input_shape=(7,)), Dense(3)],
    lambda: [Dense(12, activation="relu", input_shape=(8,)), Dense(3, use_bias=False)],
])
def test_wrong_architecture_load_weights_leaves_model_unchanged(other, tmp_path):
    src = trained_model()
    src.save_weights(tmp_path / "w.weights.h5")
    src.save(tmp_path / "m.keras")
    target = fastdense.Sequential(other())
    target.compile(optimizer=fastdense.optimizers.Adam(0.01), loss="mse")
    target.fit(np.ones((4,) + target.input_shape[1:]), np.ones((4, target.output_shape[1])),
               epochs=1, verbose=0)
    snap = _snapshot(target)
    for path in (tmp_path / "w.weights.h5", tmp_path / "m.keras"):
        with pytest.raises(ValueError):
            target.load_weights(path)
        _unchanged(target, snap)


def test_bad_optimizer_state_leaves_model_unchanged(tmp_path):
    """Weights fit, but an optimizer variable is damaged: nothing at all is assigned."""
    src = trained_model()
    src.save_weights(tmp_path / "w.weights.h5")
    with h5py.File(tmp_path / "w.weights.h5", "r+") as f:
        v = f["optimizer/vars/9"]  # a velocity: a sum of squares
        v[...] = -np.abs(v[()]) - 1
    target = trained_model(fastdense.optimizers.Adam(0.003), epochs=2)
    snap = _snapshot(target)
    with pytest.raises(ValueError, match="negative"):
        target.load_weights(tmp_path / "w.weights.h5")
    _unchanged(target, snap)


def test_nan_weights_refused(tmp_path):
    src = trained_model()
    src.save_weights(tmp_path / "w.weights.h5")
    with h5py.File(tmp_path / "w.weights.h5", "r+") as f:
        k = f["layers/dense_1/vars/0"]
        arr = k[()]
        arr[0, 0] = np.nan
        k[...] = arr
    target = make_model()
    snap = _snapshot(target)
    with pytest.raises(ValueError, match="NaN"):
        target.load_weights(tmp_path / "w.weights.h5")
    _unchanged(target, snap)


def test_h5_links_and_foreign_dtypes_refused(tmp_path):
    src = trained_model()
    src.save_weights(tmp_path / "w.weights.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["k"] = np.zeros((8, 12), np.float32)
    target = make_model()
    snap = _snapshot(target)
    for change in ("external", "soft", "int", "string"):
        p = tmp_path / f"{change}.weights.h5"
        p.write_bytes((tmp_path / "w.weights.h5").read_bytes())
        with h5py.File(p, "r+") as f:
            g = f["layers/dense/vars"]
            del g["0"]
            if change == "external":
                g["0"] = h5py.ExternalLink(str(other), "k")
            elif change == "soft":
                f["elsewhere"] = np.zeros((8, 12), np.float32)
                g["0"] = h5py.SoftLink("/elsewhere")
            elif change == "int":
                g["0"] = np.zeros((8, 12), np.int32)
            else:
                g.create_dataset("0", data=np.array([["x"] * 12] * 8, dtype=object),
                                 dtype=h5py.string_dtype())
        with pytest.raises(ValueError):
            target.load_weights(p)
        _unchanged(target, snap)


# ---------------------------------------------------------------------------------------------
# Hostile configs: only fastdense's own tables, nothing imported or executed
# ---------------------------------------------------------------------------------------------
MARKER_MODULE = "fastdense_saving_test_marker"


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A module that, if anything imported it, would create a file."""
    flag = tmp_path / "EXECUTED"
    (tmp_path / f"{MARKER_MODULE}.py").write_text(
        f"open({str(flag)!r}, 'w').write('x')\ndef evil(*a, **k):\n    open({str(flag)!r}, 'w').write('x')\n"
        "class Evil:\n    def __init__(self, *a, **k):\n        evil()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield flag
    sys.modules.pop(MARKER_MODULE, None)


def _hostile_variants(cfg):
    """(description, expected message fragment, modified config) triples."""
    def edit(fn):
        c = json.loads(json.dumps(cfg))
        fn(c)
        return c

    layers = lambda c: c["config"]["layers"]  # noqa: E731
    lam = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
           "config": {"name": "lambda", "function": {"module": "builtins", "class_name": "function",
                                                     "config": "exec", "registered_name": "exec"}}}
    yield "Lambda layer", "Lambda", edit(lambda c: layers(c).insert(2, lam))
    yield "UnitNormalization", "UnitNormalization", edit(
        lambda c: layers(c).insert(2, {"module": "keras.layers", "class_name": "UnitNormalization",
                                       "config": {"name": "bn"}, "registered_name": None}))
    yield "layer module", MARKER_MODULE, edit(
        lambda c: layers(c)[1].update(module=MARKER_MODULE, class_name="Evil"))
    yield "layer module with known class", MARKER_MODULE, edit(
        lambda c: layers(c)[1].update(module=MARKER_MODULE))
    yield "registered custom layer", "Custom>Dense", edit(
        lambda c: layers(c)[1].update(registered_name="Custom>Dense"))
    yield "model module", MARKER_MODULE, edit(lambda c: c.update(module=MARKER_MODULE))
    yield "model class", "Functional", edit(lambda c: c.update(class_name="Functional"))
    yield "activation function", MARKER_MODULE, edit(
        lambda c: layers(c)[1]["config"].update(activation={
            "module": MARKER_MODULE, "class_name": "function", "config": "evil",
            "registered_name": "evil"}))
    yield "unknown activation", "evil", edit(lambda c: layers(c)[1]["config"].update(activation="evil"))
    yield "initializer module", MARKER_MODULE, edit(
        lambda c: layers(c)[1]["config"]["kernel_initializer"].update(module=MARKER_MODULE))
    yield "initializer class", "Orthogonal", edit(
        lambda c: layers(c)[1]["config"]["kernel_initializer"].update(class_name="Orthogonal"))
    yield "regularizer", "Evil", edit(lambda c: layers(c)[1]["config"].update(
        kernel_regularizer={"module": "keras.regularizers", "class_name": "Evil", "config": {}}))
    yield "constraint", "kernel_constraint", edit(lambda c: layers(c)[1]["config"].update(
        kernel_constraint={"module": MARKER_MODULE, "class_name": "Evil", "config": {}}))
    yield "dtype policy", "mixed_float16", edit(lambda c: layers(c)[1]["config"].update(
        dtype={"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}))
    yield "optimizer class", "Lion", edit(
        lambda c: c["compile_config"]["optimizer"].update(class_name="Lion"))
    yield "optimizer module", MARKER_MODULE, edit(
        lambda c: c["compile_config"]["optimizer"].update(module=MARKER_MODULE))
    yield "schedule", "CosineDecay", edit(lambda c: c["compile_config"]["optimizer"]["config"].update(
        learning_rate={"module": "keras.optimizers.schedules", "class_name": "CosineDecay",
                       "config": {}}))
    yield "loss function", MARKER_MODULE, edit(lambda c: c["compile_config"].update(
        loss={"module": MARKER_MODULE, "class_name": "function", "config": "evil",
              "registered_name": "evil"}))
    yield "loss name", "huber", edit(lambda c: c["compile_config"].update(loss="huber"))
    yield "metric", "AUC", edit(lambda c: c["compile_config"].update(
        metrics=[{"module": "keras.metrics", "class_name": "AUC", "config": {}}]))
    yield "unknown kwarg", "surprise", edit(lambda c: layers(c)[1]["config"].update(surprise=1))


def test_hostile_configs_refused_and_nothing_executed(marker, tmp_path):
    src = fixture_path("relu_adam_sparse")
    cfg = keras_config(src)
    n = 0
    for what, fragment, bad in _hostile_variants(cfg):
        path = rewrite_keras(src, tmp_path / f"bad{n}.keras", config=bad)
        n += 1
        with pytest.raises(ValueError) as info:
            fastdense.load_model(path)
        assert fragment in str(info.value), (what, str(info.value))
        assert f"{path}': config.json: " in str(info.value), (what, str(info.value))
        assert not marker.exists(), what
        assert MARKER_MODULE not in sys.modules, what
    assert n > 15


def test_missing_fastdense_layer_is_named(tmp_path):
    src = fixture_path("reference_sigmoid_softmax_sgd")
    cfg = keras_config(src)
    cfg["config"]["layers"][1]["class_name"] = "Conv2D"
    with pytest.raises(ValueError, match=r"Conv2D.*(does not implement|Dense)"):
        fastdense.load_model(rewrite_keras(src, tmp_path / "c.keras", config=cfg))


def test_no_pickle_in_saving_module():
    source = Path(saving.__file__).read_text()
    assert "import pickle" not in source and "allow_pickle=True" not in source
    assert "marshal" not in source and "eval(" not in source and "importlib" not in source


# ---------------------------------------------------------------------------------------------
# Sizes bounded before allocation
# ---------------------------------------------------------------------------------------------
def test_huge_layer_in_config_refused_before_allocation(tmp_path):
    src = fixture_path("relu_adam_sparse")
    cfg = keras_config(src)
    cfg["config"]["layers"][2]["config"]["units"] = 10**12  # 12 * 10**12 weights
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="too (few|large)"):
        fastdense.load_model(rewrite_keras(src, tmp_path / "big.keras", config=cfg))
    assert time.perf_counter() - t0 < 2
    cfg["config"]["layers"][0]["config"]["batch_shape"] = [None, 2**40]
    with pytest.raises(ValueError):
        fastdense.load_model(rewrite_keras(src, tmp_path / "big2.keras", config=cfg))


def test_zip_bomb_members_refused(tmp_path):
    src = fixture_path("relu_adam_sparse")
    big = b" " * (40 << 20)  # 40 MB of spaces: valid JSON padding, compresses to ~40 KB
    cfg = json.dumps(keras_config(src)).encode() + big
    path = rewrite_keras(src, tmp_path / "bomb.keras", config=cfg, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match="config.json"):
        fastdense.load_model(path)
    h5 = keras_member(src, "model.weights.h5") + bytes(60 << 20)
    path = rewrite_keras(src, tmp_path / "bomb2.keras", h5=h5, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match="model.weights.h5"):
        fastdense.load_model(path)
    m = fastdense.load_model(src)
    with pytest.raises(ValueError, match="model.weights.h5"):
        m.load_weights(path)


def test_garbage_files(tmp_path):
    m = make_model()
    snap = _snapshot(m)
    for i, content in enumerate([b"", b"PK\x03\x04" + bytes(100), os.urandom(5000),
                                 b"\x89HDF\r\n\x1a\n" + bytes(3000), json.dumps({}).encode()]):
        for suffix in (".keras", ".weights.h5"):
            p = tmp_path / f"g{i}{suffix}"
            p.write_bytes(content)
            with pytest.raises(ValueError):
                m.load_weights(p)
            if suffix == ".keras":
                with pytest.raises(ValueError):
                    fastdense.load_model(p)
    _unchanged(m, snap)
    src = fixture_path("relu_adam_sparse")
    for bad in ({"keras_version": "2.15.0"}, [1, 2]):
        with pytest.raises(ValueError, match="keras_version|metadata"):
            fastdense.load_model(rewrite_keras(src, tmp_path / "meta.keras", metadata=bad))
    with pytest.raises(ValueError, match="config.json"):
        fastdense.load_model(rewrite_keras(src, tmp_path / "nan.keras", config=b'{"a": NaN}'))
    with pytest.raises(ValueError, match="config.json"):
        fastdense.load_model(rewrite_keras(src, tmp_path / "deep.keras", config=b"[" * 100000))


def test_truncated_files_raise_value_error(tmp_path):
    m = trained_model(dropout=True)
    m.save(tmp_path / "m.keras")
    m.save_weights(tmp_path / "w.weights.h5")
    target = make_model(dropout=True)
    snap = _snapshot(target)
    for name in ("m.keras", "w.weights.h5"):
        full = (tmp_path / name).read_bytes()
        cuts = sorted(set(list(range(0, len(full), max(1, len(full) // 150))) +
                          [1, 8, len(full) - 1, len(full) - 22, len(full) - 100]))
        for cut in cuts:
            p = tmp_path / f"t{cut}{'.keras' if name.endswith('.keras') else '.weights.h5'}"
            p.write_bytes(full[:cut])
            with pytest.raises(ValueError):
                target.load_weights(p)
            if name.endswith(".keras"):
                with pytest.raises(ValueError):
                    fastdense.load_model(p)
            p.unlink()
    _unchanged(target, snap)


def test_bit_flips_in_keras_file_never_crash(tmp_path):
    """The zip's CRC-32 covers every member: damage gives a ValueError (or, in fields nothing
    reads, such as timestamps, a load identical to the original)."""
    m = trained_model()
    m.save(tmp_path / "m.keras")
    full = (tmp_path / "m.keras").read_bytes()
    rng = random.Random(7)
    outcomes = {"error": 0, "ok": 0}
    for trial in range(300):
        b = bytearray(full)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        p = tmp_path / "f.keras"
        p.write_bytes(bytes(b))
        try:
            loaded = fastdense.load_model(p)
        except ValueError:
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        assert same_weights(loaded, m)
    assert outcomes["error"] > 200


FUZZ_CHILD = textwrap.dedent("""
    import collections, random, sys, traceback
    import fastdense
    src, dst, kind, seed, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    full = open(src, "rb").read()
    rng = random.Random(seed)
    model = fastdense.Sequential([fastdense.layers.Dense(12, activation="relu", input_shape=(8,)),
                                  fastdense.layers.Dense(12, activation="relu"),
                                  fastdense.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=fastdense.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    counts = collections.Counter()
    for trial in range(n):
        b = bytearray(full)
        mode = trial % 3
        if mode == 0:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif mode == 1:
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 64))
            b[i:j] = bytes(rng.randrange(256) for _ in range(j - i))
        else:
            i = rng.randrange(len(b))
            b[i:i + 8] = b"\\xff" * 8
        open(dst, "wb").write(bytes(b))
        try:
            if kind == "keras":
                fastdense.load_model(dst)
            else:
                model.load_weights(dst)
            counts["ok"] += 1
        except ValueError:
            counts["ValueError"] += 1
        except Exception:
            traceback.print_exc()
            sys.exit(3)
    print(dict(counts))
""")


@pytest.mark.parametrize("source", ["fastdense", "keras"])
def test_hdf5_fuzzing_never_crashes(source, tmp_path):
    """Bit flips and garbage in a `.weights.h5` file (no zip CRC to catch them first) give a
    ValueError or a successful load; run in a child process so a crash fails this test."""
    src = tmp_path / "w.weights.h5"
    if source == "fastdense":
        m = fastdense.load_model(fixture_path("relu_adam_sparse"))
        m.save_weights(src)
    else:
        src.write_bytes(keras_member(fixture_path("relu_adam_sparse"), "model.weights.h5"))
    proc = subprocess.run(
        [sys.executable, "-c", FUZZ_CHILD, str(src), str(tmp_path / "f.weights.h5"), "h5", "11",
         "240"], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), cwd=str(REPO_ROOT))
    assert proc.returncode == 0, f"child died (rc={proc.returncode}): {proc.stderr[-3000:]}"
    assert "ValueError" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------
def _fail_on(monkeypatch, target, name, after=0):
    calls = {"n": 0}
    real = getattr(target, name)

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(28, "No space left on device (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


@pytest.mark.parametrize("kind,where", [
    ("keras", "fsync"), ("keras", "replace"), ("keras", "writestr"), ("keras", "write"),
    ("weights", "fsync"), ("weights", "replace"), ("weights", "write")])
def test_oserror_mid_save_leaves_old_file(where, kind, tmp_path, monkeypatch):
    old = trained_model()
    new = trained_model(epochs=2)
    path = tmp_path / ("m.keras" if kind == "keras" else "m.weights.h5")
    save = (lambda m: m.save(path)) if kind == "keras" else (lambda m: m.save_weights(path))
    save(old)
    before = path.read_bytes()
    if where == "fsync":
        _fail_on(monkeypatch, os, "fsync")
    elif where == "replace":
        _fail_on(monkeypatch, os, "replace")
    elif where == "writestr":
        _fail_on(monkeypatch, zipfile.ZipFile, "writestr", after=1)
    else:
        real_fdopen = os.fdopen

        class Failing(io.RawIOBase):
            def __init__(self, fh):
                self.fh, self.written = fh, 0

            def writable(self):
                return True

            def write(self, b):
                b = bytes(b)
                if self.written + len(b) > 100:  # writes part, then the disk is full
                    self.fh.write(b[:100 - self.written])
                    raise OSError(28, "No space left on device (injected)")
                self.written += len(b)
                return self.fh.write(b)

            def flush(self):
                self.fh.flush()

            def fileno(self):
                return self.fh.fileno()

            def close(self):
                if not self.closed:
                    super().close()
                    self.fh.close()

            def seekable(self):
                return False

            def tell(self):
                return self.written

        monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Failing(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="injected"):
        save(new)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name], "a temp file was left behind"
    if kind == "keras":
        assert same_weights(fastdense.load_model(path), old)


def test_overwrite_false(tmp_path):
    m = trained_model()
    path = tmp_path / "m.keras"
    m.save(path, overwrite=False)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        trained_model(epochs=2).save(path, overwrite=False)
    assert path.read_bytes() == before
    wpath = tmp_path / "w.weights.h5"
    m.save_weights(wpath, overwrite=False)
    with pytest.raises(FileExistsError):
        m.save_weights(wpath, overwrite=False)
    m.save(path)  # overwrite=True replaces it
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "w.weights.h5"]


KILL_CHILD = textwrap.dedent("""
    import sys, time, zipfile
    import numpy as np
    import fastdense
    from fastdense.layers import Dense
    path = sys.argv[1]
    # A slow disk: each zip member takes a few ms to write, so most kills land mid-write.
    real_writestr = zipfile.ZipFile.writestr
    def slow_writestr(self, *args, **kwargs):
        time.sleep(0.015)
        return real_writestr(self, *args, **kwargs)
    zipfile.ZipFile.writestr = slow_writestr
    models = []
    for tag, value in (("model_a", 0.25), ("model_b", -0.5)):
        m = fastdense.Sequential([Dense(256, activation="relu", input_shape=(128,)),
                                  Dense(256, activation="relu"), Dense(10)], name=tag)
        m.compile(optimizer=fastdense.optimizers.Adam(0.001), loss="mse")
        m.set_weights([np.full(w.shape, value, w.dtype) for w in m.weights])
        m.optimizer.iterations = 1 if tag == "model_a" else 2
        models.append(m)
    models[0].save(path)
    print("ready", flush=True)
    i = 0
    while True:
        models[i % 2].save(path)
        i += 1
""")


def test_sigkill_during_saves_leaves_a_whole_file(tmp_path):
    path = tmp_path / "m.keras"
    rng = random.Random(3)
    deadline = time.monotonic() + 8
    rounds = 0
    while rounds < 6 and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), cwd=str(REPO_ROOT))
        try:
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.02, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        rounds += 1
        model = fastdense.load_model(path)  # must be one whole save: A or B, nothing mixed
        value = {"model_a": 0.25, "model_b": -0.5}[model.name]
        assert all((w == value).all() for w in model.get_weights()), model.name
        assert model.optimizer.iterations == (1 if model.name == "model_a" else 2)
        for p in tmp_path.iterdir():  # temp files of a killed writer may stay; never the target
            assert p == path or p.name.startswith(".m.keras."), p
    assert rounds >= 3
