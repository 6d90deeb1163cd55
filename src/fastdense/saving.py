"""Keras 3 `.keras` and `.weights.h5` files: read and written in Keras's own format.

A `.keras` file is a zip (stored, not compressed) of three members:

- `metadata.json`: `{"keras_version": "3.x.y", "date_saved": "YYYY-MM-DD@HH:MM:SS"}`;
- `config.json`: `{"module": "keras", "class_name": "Sequential", "config": {...},
  "registered_name": null, "build_config": {"input_shape": [null, ...]}, "compile_config": {...}}`;
- `model.weights.h5`: HDF5 with one group per layer, named as Keras names them (the snake-case
  class name, numbered per class: `layers/dense/vars`, `layers/dense_1/vars`, `layers/dropout/vars`;
  the `vars` group's `name` attribute is the layer's own name), holding the layer's variables as
  datasets `0`, `1`, ... (kernel, bias); the optimizer's variables under `optimizer/vars/N` in
  Keras's order (`0` iterations (int64), `1` learning rate (absent with a schedule), then the slots:
  SGD momentum per parameter; Adam/AdamW momentum and velocity interleaved per parameter; RMSprop
  all velocities, then all momentums (if momentum > 0), then all average gradients (if centered);
  Adagrad accumulators); an empty `vars` group for the model itself.

A `.weights.h5` file is the same HDF5 file on its own.

Safety (see RELIABILITY.md, "Persistence"): no pickle; every class, function and module named in a
file is looked up in fastdense's own tables, and anything else is refused with a ValueError naming
it; sizes are bounded before anything is allocated (zip members against the config, every HDF5
dataset's shape and dtype against the model before it is read); everything is validated before
anything is assigned, so a failed load leaves the model unchanged; corrupted files raise ValueError.
Writes are atomic: a temp file in the target's directory, flushed and fsynced, then `os.replace`d
onto the target. fastdense writes its HDF5 with checksummed metadata and Fletcher-32 checksums on
the arrays (both standard HDF5, readable by Keras), and the zip's CRC-32 covers every member.
"""
import contextlib
import datetime
import io
import json
import math
import numbers
import os
import re
import warnings
import zipfile

import numpy as np

from . import activations, initializers, regularizers
from ._atomic import atomic_write as _atomic_write, check_overwrite as _check_overwrite
from . import layers as layers_mod
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "model_from_config"]

KERAS_VERSION = "3.15.1"  # what metadata.json declares: Keras 3 reads the file as its own
_CONFIG_NAME = "config.json"
_METADATA_NAME = "metadata.json"
_WEIGHTS_NAME = "model.weights.h5"
_MAX_CONFIG_BYTES = 16 << 20
_MAX_METADATA_BYTES = 1 << 20
_H5_BASE_OVERHEAD = 1 << 20      # allowance for HDF5 structure, on top of the arrays' bytes
_H5_OBJECT_OVERHEAD = 64 << 10   # per group / dataset
_MAX_DIM = 2**31 - 1             # BLAS takes C int sizes
_MAX_ITERATIONS = 2**62
_ALLOWED_H5_FILTERS = {1, 2, 3, 32000}  # deflate, shuffle, fletcher32, lzf


class _FormatError(ValueError):
    """A clear message about a file's content (passed through the error wrapping unchanged)."""


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def save_model(model, filepath, overwrite=True):
    """Saves `model` (architecture, weights, compile config, optimizer state) to a `.keras` file.

    Raises:
        ValueError: if the path does not end in `.keras`, or the model holds something a Keras
            file cannot describe.
        FileExistsError: if `overwrite=False` and the file exists.
    """
    path = _fspath(filepath)
    if not path.endswith(".keras"):
        raise ValueError(
            "Invalid filepath extension for saving. Please add a `.keras` extension for the "
            "native Keras format (fastdense does not write the legacy `.h5` format). "
            f"Received: filepath={path}")
    _check_overwrite(path, overwrite)
    config = _model_file_config(model)
    config_bytes = _json_bytes(config)
    metadata = {"keras_version": KERAS_VERSION,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    metadata_bytes = _json_bytes(metadata)
    h5_bytes = _weights_h5_bytes(model)

    def write(fh):
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, data, stamp in ((_METADATA_NAME, metadata_bytes, None),
                                      (_CONFIG_NAME, config_bytes, None),
                                      (_WEIGHTS_NAME, h5_bytes, datetime.datetime.now())):
                info = zipfile.ZipInfo(name, date_time=(stamp.timetuple()[:6] if stamp else
                                                        (1980, 1, 1, 0, 0, 0)))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o600 << 16
                info.create_system = 3
                zf.writestr(info, data)

    _atomic_write(path, write, overwrite)


def save_weights(model, filepath, overwrite=True):
    """Saves the model's weights (and optimizer state, if compiled) to a `.weights.h5` file."""
    path = _fspath(filepath)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"The filename must end in `.weights.h5`. Received: filepath={path}")
    _check_overwrite(path, overwrite)
    data = _weights_h5_bytes(model)
    _atomic_write(path, lambda fh: fh.write(data), overwrite)


def load_model(filepath, compile=True):
    """Loads a `.keras` file written by fastdense or by Keras 3 into a new `Sequential` model.

    Args:
        compile: also restore the compile config and the optimizer's state (iterations, learning
            rate, slots), so training resumes exactly where it stopped.

    Raises:
        ValueError: for a missing, truncated, corrupted or unsupported file, or a config naming
            anything fastdense does not implement (the message names it).
    """
    path = _fspath(filepath)
    if not path.endswith(".keras"):
        raise ValueError(
            f"File format not supported: filepath={path}. fastdense loads Keras 3 `.keras` files "
            "(and weights from `.weights.h5` files with `model.load_weights`).")
    if not os.path.exists(path):
        raise ValueError(f"File not found: filepath={path}. Please ensure the file is an "
                         "accessible `.keras` zip file.")
    with open(path, "rb") as fh, _wrap_errors(path):
        zf = _open_zip(fh)
        metadata = _read_json_member(zf, _METADATA_NAME, _MAX_METADATA_BYTES)
        _check_metadata(metadata)
        config = _read_json_member(zf, _CONFIG_NAME, _MAX_CONFIG_BYTES)
        plan = _model_plan(config)
        compile_plan = _compile_plan(config, plan) if compile else None
        opt_specs = None
        if compile_plan is not None:
            opt_specs = _optimizer_specs(compile_plan["optimizer"], plan["weight_shapes"])
        info = _member(zf, _WEIGHTS_NAME)
        _check_h5_size(info.file_size, plan["weight_shapes"])
        data = _read_member(zf, info, _h5_size_limit(plan["weight_shapes"], len(plan["layers"])))
        weights, opt_state = _read_h5_state(io.BytesIO(data), plan["h5_layers"], opt_specs,
                                            strict_optimizer=True)
    return _assemble(plan, compile_plan, weights, opt_state, opt_specs)


def load_weights(model, filepath):
    """Loads weights (and, if the model is compiled, the optimizer's state) from a `.weights.h5`
    or `.keras` file; all or nothing: on any error the model is left unchanged."""
    path = _fspath(filepath)
    is_keras = path.endswith(".keras")
    if not (is_keras or path.endswith(".weights.h5")):
        raise ValueError(
            f"File format not supported: filepath={path}. `load_weights` reads `.weights.h5` "
            "files (from `save_weights`) and `.keras` files (from `save`).")
    if not os.path.exists(path):
        raise ValueError(f"File not found: filepath={path}.")
    if not model.built:
        raise ValueError(
            "The model must be built before its weights can be loaded: give the first layer "
            "`input_shape=` (or start with `Input(shape)`), or call `model.build(input_shape)`. "
            f"Received: an unbuilt model {model.name!r}")
    specs = _model_h5_layers(model)
    shapes = [w.shape for w in model.weights]
    opt = model.optimizer if getattr(model, "compiled", False) else None
    opt_specs = _optimizer_specs(opt, shapes) if opt is not None else None
    with open(path, "rb") as fh, _wrap_errors(path):
        if is_keras:
            zf = _open_zip(fh)
            info = _member(zf, _WEIGHTS_NAME)
            limit = _h5_size_limit(shapes, len(specs))
            data = _read_member(zf, info, limit)
            source = io.BytesIO(data)
        else:
            source = fh
        weights, opt_state = _read_h5_state(source, specs, opt_specs, strict_optimizer=False)
        state = None
        if opt_state is not None:
            state = _checked_optimizer_state(opt, opt_state, opt_specs, shapes, model.dtype)
    # Everything is validated: assign (set_weights checks again, then assigns all at once).
    model.set_weights(weights)
    if state is not None:
        _assign_optimizer_state(opt, state, model._params.size, model.dtype)


def model_from_config(config):
    """A new, unweighted `Sequential` from `model.get_config()` or a Keras `config.json` dict,
    with the same checks as `load_model` (every name looked up in fastdense's own tables)."""
    if not isinstance(config, dict):
        raise ValueError(f"A model config must be a dict. Received: {type(config).__name__}")
    if "class_name" not in config:
        config = {"module": "keras", "class_name": "Sequential", "config": config}
    try:
        plan = _model_plan(config)
    except _FormatError as exc:
        raise ValueError(f"Invalid model config: {exc}") from None
    return _sequential_from_plan(plan)


# ---------------------------------------------------------------------------------------------
# Paths, atomic writes, error wrapping
# ---------------------------------------------------------------------------------------------
def _fspath(filepath):
    try:
        path = os.fspath(filepath)
    except TypeError:
        raise ValueError(f"`filepath` must be a path (str or os.PathLike). "
                         f"Received: filepath={filepath!r}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path


@contextlib.contextmanager
def _wrap_errors(path):
    """Turns whatever a damaged file makes zipfile, json or h5py raise into one clear ValueError."""
    try:
        yield
    except _FormatError as exc:
        raise ValueError(f"Could not load {path!r}: {exc}") from None
    except Exception as exc:  # zipfile/zlib/h5py/json errors, struct errors, ...
        raise ValueError(
            f"Could not load {path!r}: the file is truncated, corrupted or not a Keras 3 file "
            f"({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------------------------
# Zip and JSON
# ---------------------------------------------------------------------------------------------
def _open_zip(fh):
    try:
        return zipfile.ZipFile(fh, "r")
    except zipfile.BadZipFile as exc:
        raise _FormatError(f"it is not a valid `.keras` zip archive ({exc})") from None


def _member(zf, name):
    try:
        return zf.getinfo(name)
    except KeyError:
        raise _FormatError(f"the archive has no member {name!r}; a Keras 3 `.keras` file holds "
                           f"{_METADATA_NAME}, {_CONFIG_NAME} and {_WEIGHTS_NAME}") from None


def _read_member(zf, info, limit):
    if info.file_size > limit:
        raise _FormatError(f"member {info.filename!r} declares {info.file_size} bytes, more than "
                           f"the {limit} bytes its content can need")
    with zf.open(info, "r") as member:
        data = member.read(limit + 1)  # the CRC-32 is checked once the member is read to its end
        if len(data) > limit:
            raise _FormatError(f"member {info.filename!r} is larger than {limit} bytes")
        if member.read(1):
            raise _FormatError(f"member {info.filename!r} is longer than declared")
    if len(data) != info.file_size:
        raise _FormatError(f"member {info.filename!r} holds {len(data)} bytes, "
                           f"not the {info.file_size} declared")
    return data


def _read_json_member(zf, name, limit):
    data = _read_member(zf, _member(zf, name), limit)

    def reject_constant(constant):
        raise _FormatError(f"{name} holds {constant}, which is not valid JSON")

    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=reject_constant)
    except _FormatError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _FormatError(f"{name} is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise _FormatError(f"{name} must hold a JSON object. Received: {type(value).__name__}")
    return value


def _json_bytes(obj):
    def default(o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.bool_):
            return bool(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    try:
        return json.dumps(obj, allow_nan=False, default=default).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The model's config cannot be written as JSON: {exc}") from None


def _check_metadata(metadata):
    version = metadata.get("keras_version")
    if not isinstance(version, str) or not re.match(r"^3\.\d+", version):
        raise _FormatError(f"metadata.json must name a Keras 3 version. "
                           f"Received: keras_version={version!r}")


# ---------------------------------------------------------------------------------------------
# Writing: configs and the HDF5 weights file
# ---------------------------------------------------------------------------------------------
def _keras_snake_case(name):
    """Keras's `naming.to_snake_case`, which names the HDF5 group of each layer."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name


def _generic_names(class_names):
    used, out = {}, []
    for cname in class_names:
        name = _keras_snake_case(cname)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        out.append(name)
    return out


def _model_h5_layers(model):
    """[(group name, layer name, [weight shapes])] for a model's layers, in Keras's naming."""
    layers = list(model._layers)
    for layer in layers:
        if type(layer).__name__ not in layers_mod.LAYER_CLASSES:
            raise ValueError(f"Layer {layer.name!r} of type {type(layer).__name__} cannot be "
                             "saved: only fastdense's own layer classes can be described in a file.")
    names = _generic_names([type(l).__name__ for l in layers])
    return [(g, l.name, [tuple(w.shape) for w in l.weights]) for g, l in zip(names, layers)]


def _model_file_config(model):
    cfg = model.get_config()
    built = bool(model.built)
    if built:
        feature = [int(d) for d in model._feature_shape]
        cfg["build_input_shape"] = [None] + feature
        by_name = {l.name: l for l in model._layers}
        for entry in cfg.get("layers", []):
            layer = by_name.get((entry.get("config") or {}).get("name"))
            if entry.get("class_name") != "InputLayer" and layer is not None and layer.built:
                entry["build_config"] = {"input_shape": [None] + list(layer.input_feature_shape)}
    for layer in model._layers:
        if type(layer).__name__ not in layers_mod.LAYER_CLASSES:
            raise ValueError(f"Layer {layer.name!r} of type {type(layer).__name__} cannot be "
                             "saved: only fastdense's own layer classes can be described in a file.")
    top = {"module": "keras", "class_name": "Sequential", "config": cfg, "registered_name": None}
    if built:
        top["build_config"] = {"input_shape": [None] + [int(d) for d in model._feature_shape]}
    if getattr(model, "compiled", False) and model.optimizer is not None:
        top["compile_config"] = _compile_config(model)
    return top


def _optimizer_config(opt):
    cls_name = type(opt).__name__
    if optimizers_mod._BY_CLASS.get(cls_name) is not type(opt):
        raise ValueError(f"Optimizer {cls_name} cannot be saved: only fastdense's own optimizers "
                         f"({sorted(optimizers_mod._BY_CLASS)}) can be described in a file.")
    cfg = opt.get_config()
    if opt.decay:
        # Keras 2's `decay` is lr / (1 + decay * step): Keras 3 writes that as InverseTimeDecay.
        if callable(opt._learning_rate):
            raise ValueError("An optimizer with both a learning-rate schedule and the legacy "
                             "`decay` argument cannot be saved in the Keras 3 format. Received: "
                             f"decay={opt.decay!r} with learning_rate={opt._learning_rate!r}")
        cfg["learning_rate"] = {
            "module": "keras.optimizers.schedules", "class_name": "InverseTimeDecay",
            "config": {"initial_learning_rate": opt._learning_rate, "decay_steps": 1,
                       "decay_rate": opt.decay, "staircase": False, "name": "InverseTimeDecay"},
            "registered_name": None}
    return {"module": "keras.optimizers", "class_name": cls_name, "config": cfg,
            "registered_name": None}


def _compile_config(model):
    loss_id = getattr(model, "_loss_identifier", None)
    if isinstance(loss_id, str):
        loss = loss_id
    else:
        loss_obj = model.loss
        if losses_mod._BY_CLASS.get(type(loss_obj).__name__) is not type(loss_obj):
            raise ValueError(f"Loss {loss_obj!r} cannot be saved: only fastdense's own losses can "
                             "be described in a file.")
        loss = {"module": "keras.losses", "class_name": type(loss_obj).__name__,
                "config": loss_obj.get_config(), "registered_name": None}
    metric_list = []
    for m in getattr(model, "_metric_ids", []) or []:
        if isinstance(m, str):
            metric_list.append(m)
        elif metrics_mod._BY_CLASS.get(type(m).__name__) is type(m):
            metric_list.append({"module": "keras.metrics", "class_name": type(m).__name__,
                                "config": m.get_config(), "registered_name": None})
        else:
            raise ValueError(f"Metric {m!r} cannot be saved: only fastdense's own metrics can be "
                             "described in a file.")
    return {"optimizer": _optimizer_config(model.optimizer), "loss": loss, "loss_weights": None,
            "metrics": metric_list or None, "weighted_metrics": None, "run_eagerly": False,
            "steps_per_execution": 1, "jit_compile": False}


def _optimizer_specs(opt, weight_shapes):
    """Keras's `optimizer.variables` order for `opt` on a model with these weight shapes:
    ("iterations"), ("learning_rate"), then ("slot", k, i): slot k of weight i."""
    specs = [("iterations",)]
    if not callable(opt._learning_rate) and not opt.decay:
        specs.append(("learning_rate",))
    n = len(weight_shapes)
    if isinstance(opt, optimizers_mod.SGD):
        if opt.momentum:
            specs += [("slot", 0, i) for i in range(n)]
    elif isinstance(opt, optimizers_mod.Adam):  # and AdamW: momentum, velocity per variable
        for i in range(n):
            specs += [("slot", 0, i), ("slot", 1, i)]
    elif isinstance(opt, optimizers_mod.RMSprop):
        specs += [("slot", 0, i) for i in range(n)]
        if opt.momentum > 0:
            specs += [("slot", 1, i) for i in range(n)]
        if opt.centered:
            specs += [("slot", 2, i) for i in range(n)]
    elif isinstance(opt, optimizers_mod.Adagrad):
        specs += [("slot", 0, i) for i in range(n)]
    else:
        raise ValueError(f"Optimizer {type(opt).__name__} has no Keras file layout in fastdense.")
    return specs


def _nonnegative_slot(opt, k):
    """Whether slot k holds a running sum of squares (must be >= 0)."""
    if isinstance(opt, optimizers_mod.Adam):
        return k == 1
    if isinstance(opt, (optimizers_mod.RMSprop, optimizers_mod.Adagrad)):
        return k == 0
    return False


def _weight_offsets(weight_shapes):
    offs, off = [], 0
    for s in weight_shapes:
        offs.append(off)
        off += int(math.prod(s))
    return offs, off


def _optimizer_arrays(model):
    opt = model.optimizer
    shapes = [tuple(w.shape) for w in model.weights]
    specs = _optimizer_specs(opt, shapes)
    dtype = np.dtype(getattr(model, "dtype", "float32"))
    offs, n = _weight_offsets(shapes)
    slots = opt._slots
    out = []
    for spec in specs:
        if spec[0] == "iterations":
            out.append(np.int64(opt.iterations))
        elif spec[0] == "learning_rate":
            out.append(np.array(opt._learning_rate, dtype=dtype))
        else:
            _, k, i = spec
            size = int(math.prod(shapes[i]))
            if slots is None or slots.size != opt.n_slots * n:
                arr = np.zeros(shapes[i], dtype=dtype)
                if isinstance(opt, optimizers_mod.Adagrad):
                    arr[...] = opt.initial_accumulator_value
            else:
                start = k * n + offs[i]
                arr = np.array(slots[start:start + size]).reshape(shapes[i])
            out.append(arr)
    return out


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise ImportError(f"fastdense needs h5py to read and write Keras files: {exc}") from exc
    return h5py


def _dataset(group, key, value):
    arr = np.asarray(value)
    if arr.ndim and arr.size:
        group.create_dataset(key, data=np.ascontiguousarray(arr), chunks=arr.shape,
                             fletcher32=True)
    else:
        group.create_dataset(key, data=arr)


def _weights_h5_bytes(model):
    h5py = _h5py()
    specs = _model_h5_layers(model)
    opt_arrays = None
    if getattr(model, "compiled", False) and model.optimizer is not None:
        _optimizer_config(model.optimizer)  # refuses what a Keras file cannot describe
        opt_arrays = _optimizer_arrays(model)
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver=("v110", "v110")) as f:
        own = f.create_group("vars")
        own.attrs["name"] = model.name
        layers_group = f.create_group("layers")
        for (gname, lname, _), layer in zip(specs, model._layers):
            g = layers_group.create_group(gname).create_group("vars")
            g.attrs["name"] = lname
            for i, w in enumerate(layer.weights):
                _dataset(g, str(i), w)
        if opt_arrays is not None:
            g = f.create_group("optimizer").create_group("vars")
            g.attrs["name"] = str(model.optimizer.name)
            for i, arr in enumerate(opt_arrays):
                _dataset(g, str(i), arr)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Reading: configs, checked against fastdense's tables
# ---------------------------------------------------------------------------------------------
def _dict(value, what):
    if not isinstance(value, dict):
        raise _FormatError(f"{what} must be a JSON object. Received: {_short(value)}")
    return value


def _short(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


_BACKEND_OPTIMIZER_MODULE = re.compile(
    r"keras\.src\.(backend\.(tensorflow|torch|jax|numpy)\.optimizers\.[a-z_]+|optimizers(\.[a-z_]+)?)")


def _check_keras_module(entry, allowed, what):
    module = entry.get("module")
    if module is not None and module not in allowed:
        raise _FormatError(f"{what} names module {_short(module)}: fastdense loads only Keras's "
                           f"built-in {', '.join(sorted(allowed))} objects, and never imports code "
                           "named in a file")
    registered = entry.get("registered_name")
    if registered is not None and registered != entry.get("class_name"):
        raise _FormatError(f"{what} is a custom registered object {_short(registered)}, which "
                           "fastdense does not implement")


def _layer_module_ok(module):
    return module is None or module == "keras.layers" or (
        isinstance(module, str) and module.startswith(("keras.layers.", "keras.src.layers.")))


def _activation_name(value, where):
    if value is None or isinstance(value, str):
        name = "linear" if value is None else value
    elif isinstance(value, dict):
        _check_keras_module(value, {"keras.activations"}, f"{where} activation")
        if value.get("class_name") != "function" or not isinstance(value.get("config"), str):
            raise _FormatError(f"{where} activation {_short(value)} is not a fastdense activation")
        name = value["config"]
    else:
        raise _FormatError(f"{where} activation must be a name. Received: {_short(value)}")
    if name not in activations._CODES:
        raise _FormatError(f"{where} uses activation {name!r}, which fastdense does not implement "
                           f"(it has {sorted(activations._CODES)})")
    return name


def _initializer(value, where):
    if isinstance(value, str):
        if value not in initializers._BY_NAME and value not in initializers._BY_CLASS:
            raise _FormatError(f"{where} names initializer {value!r}, which fastdense does not "
                               f"implement (it has {sorted(initializers._BY_CLASS)})")
        return value
    _dict(value, f"{where}")
    _check_keras_module(value, {"keras.initializers"}, where)
    cname = value.get("class_name")
    if not isinstance(cname, str) or cname not in initializers._BY_CLASS:
        raise _FormatError(f"{where} names initializer class {_short(cname)}, which fastdense "
                           f"does not implement (it has {sorted(initializers._BY_CLASS)})")
    cfg = dict(_dict(value.get("config") or {}, f"{where} config"))
    for key in ("input_axes", "output_axes"):  # Keras 3.15 fan axes; None means the default
        if key in cfg:
            if cfg[key] is not None:
                raise _FormatError(f"{where}: fastdense does not support {key}={_short(cfg[key])}")
            del cfg[key]
    if "seed" in cfg and cfg["seed"] is not None and not _is_int(cfg["seed"]):
        raise _FormatError(f"{where}: seed must be an integer or null. Received: {_short(cfg['seed'])}")
    return {"class_name": cname, "config": cfg}


def _regularizer(value, where):
    if value is None:
        return None
    if isinstance(value, str):
        if value not in regularizers._BY_NAME:
            raise _FormatError(f"{where} names regularizer {value!r}, which fastdense does not "
                               "implement (it has 'l1', 'l2', 'l1_l2')")
        return value
    _dict(value, where)
    _check_keras_module(value, {"keras.regularizers"}, where)
    cname = value.get("class_name")
    if not isinstance(cname, str) or cname not in regularizers._BY_NAME:
        raise _FormatError(f"{where} names regularizer class {_short(cname)}, which fastdense "
                           "does not implement (it has L1, L2, L1L2)")
    cfg = _dict(value.get("config") or {}, f"{where} config")
    return {"class_name": cname, "config": dict(cfg)}


def _dtype_value(value, where):
    if value is None or isinstance(value, str):
        return value
    _dict(value, where)
    _check_keras_module(value, {"keras"}, where)
    if value.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy"):
        raise _FormatError(f"{where} is dtype policy {_short(value.get('class_name'))}; fastdense "
                           "computes in float32 or float64 only")
    name = (value.get("config") or {}).get("name") if isinstance(value.get("config"), dict) else None
    if name not in ("float32", "float64"):
        raise _FormatError(f"{where}: fastdense computes in 'float32' or 'float64'. "
                           f"Received: dtype policy {_short(name)}")
    return name


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _shape_list(value, where):
    if not isinstance(value, (list, tuple)) or len(value) < 2 or len(value) > 8:
        raise _FormatError(f"{where} must be a list [null, d1, ...]. Received: {_short(value)}")
    dims = list(value)[1:]
    if not all(_is_int(d) and 1 <= d <= _MAX_DIM for d in dims):
        raise _FormatError(f"{where} must hold positive integer sizes. Received: {_short(value)}")
    if value[0] is not None and not (_is_int(value[0]) and value[0] >= 1):
        raise _FormatError(f"{where} has an invalid batch size. Received: {_short(value)}")
    return tuple(dims)


# Keras config keys fastdense accepts only at their default (None / false), then drops.
_DEFAULT_ONLY_KEYS = ("activity_regularizer", "kernel_constraint", "bias_constraint",
                      "quantization_config", "lora_rank", "lora_alpha", "noise_shape", "sparse",
                      "ragged", "optional", "input_tensor", "weights", "autocast")


def _layer_kwargs(cname, cfg, where):
    cfg = dict(cfg)
    for key in _DEFAULT_ONLY_KEYS:
        if key in cfg:
            v = cfg.pop(key)
            if key == "autocast":
                continue
            if not (v is None or v is False or (_is_int(v) and v == 0)):
                raise _FormatError(f"{where} sets {key}={_short(v)}, which fastdense does not "
                                   "support")
    if "name" in cfg and not (isinstance(cfg["name"], str) and cfg["name"] and "/" not in cfg["name"]):
        raise _FormatError(f"{where} has an invalid name {_short(cfg['name'])}")
    if "trainable" in cfg and not isinstance(cfg["trainable"], bool):
        raise _FormatError(f"{where}: trainable must be true or false")
    if "dtype" in cfg:
        cfg["dtype"] = _dtype_value(cfg["dtype"], f"{where} dtype")
    if "activation" in cfg:
        cfg["activation"] = _activation_name(cfg["activation"], where)
    for key in ("kernel_initializer", "bias_initializer"):
        if key in cfg:
            cfg[key] = _initializer(cfg[key], f"{where} {key}")
    for key in ("kernel_regularizer", "bias_regularizer"):
        if key in cfg:
            cfg[key] = _regularizer(cfg[key], f"{where} {key}")
    if cname == "Flatten" and cfg.get("data_format") not in (None, "channels_last"):
        raise _FormatError(f"{where} sets data_format={_short(cfg.get('data_format'))}; fastdense "
                           "flattens channels_last inputs only")
    if cname == "Dropout" and cfg.get("seed") is not None and not _is_int(cfg.get("seed")):
        raise _FormatError(f"{where}: seed must be an integer or null")
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            _shape_list(cfg[key], f"{where} {key}")
    for key in ("shape", "input_shape"):
        v = cfg.get(key)
        if v is not None:
            _shape_list([None] + list(v) if isinstance(v, (list, tuple)) else v, f"{where} {key}")
    for key in ("batch_size", "input_dim"):
        if cfg.get(key) is not None and not (_is_int(cfg[key]) and 1 <= cfg[key] <= _MAX_DIM):
            raise _FormatError(f"{where}: {key} must be a positive integer or null. "
                               f"Received: {_short(cfg[key])}")
    return cfg


def _model_plan(config):
    """Validates a model config; returns the layers (constructed, unbuilt), the feature shape and
    the weight shapes it implies, before any weight is allocated."""
    _dict(config, "config.json")
    _check_keras_module(config, {"keras", "keras.models"}, "The model")
    cname = config.get("class_name")
    if cname != "Sequential":
        raise _FormatError(f"the model is a {_short(cname)}; fastdense loads Sequential models only")
    mcfg = _dict(config.get("config"), "The model's config")
    name = mcfg.get("name")
    if name is not None and not isinstance(name, str):
        raise _FormatError(f"the model's name must be a string. Received: {_short(name)}")
    entries = mcfg.get("layers")
    if not isinstance(entries, list):
        raise _FormatError(f"the model's config must hold a list of layers. Received: {_short(entries)}")
    layers, frozen = [], []
    if mcfg.get("trainable") is False:
        frozen.append(name or "the model")
    for i, entry in enumerate(entries):
        where = f"layer {i}"
        _dict(entry, where)
        lname = entry.get("class_name")
        module = entry.get("module")
        if not _layer_module_ok(module):
            raise _FormatError(f"{where} ({_short(lname)}) names module {_short(module)}: fastdense "
                               "loads only its own layers and never imports code named in a file")
        if entry.get("registered_name") not in (None, lname):
            raise _FormatError(f"{where} is a custom registered layer "
                               f"{_short(entry.get('registered_name'))}, which fastdense does not "
                               "implement")
        cls = layers_mod.LAYER_CLASSES.get(lname) if isinstance(lname, str) else None
        if cls is None:
            raise _FormatError(f"{where} is a {_short(lname)} layer, which fastdense does not "
                               f"implement (it has {sorted(layers_mod.LAYER_CLASSES)})")
        cfg = _layer_kwargs(lname, _dict(entry.get("config") or {}, f"{where} config"), f"{where} ({lname})")
        if cls is layers_mod.InputLayer and i != 0:
            raise _FormatError(f"{where}: an InputLayer can only come first")
        try:
            layer = cls.from_config(cfg)
        except (TypeError, ValueError) as exc:
            raise _FormatError(f"{where} ({lname}) has an invalid config: {exc}") from None
        layers.append(layer)
        if cfg.get("trainable") is False:
            frozen.append(layer.name)
    if not [l for l in layers if not isinstance(l, layers_mod.InputLayer)]:
        raise _FormatError("the model has no layers")
    names = [l.name for l in layers if not isinstance(l, layers_mod.InputLayer)]
    if len(set(names)) != len(names):
        raise _FormatError(f"layer names must be unique. Received: {names}")

    # The per-sample input shape, as Sequential finds it.
    feature = None
    body = [l for l in layers if not isinstance(l, layers_mod.InputLayer)]
    if isinstance(layers[0], layers_mod.InputLayer):
        feature = tuple(layers[0].shape)
    elif body[0]._input_shape_arg is not None:
        feature = tuple(body[0]._input_shape_arg)
    else:
        for shape in (mcfg.get("build_input_shape"),
                      (config.get("build_config") or {}).get("input_shape")
                      if isinstance(config.get("build_config"), dict) else None):
            if shape is not None:
                feature = _shape_list(shape, "build_input_shape")
                break
    if feature is not None and any(not (1 <= d <= _MAX_DIM) for d in feature):
        raise _FormatError(f"input shape {feature} is out of range")

    # Weight shapes, computed before anything is allocated.
    weight_shapes, h5_layers = [], []
    gnames = _generic_names([type(l).__name__ for l in body])
    shape = feature
    for gname, layer in zip(gnames, body):
        shapes = []
        if shape is not None:
            if isinstance(layer, layers_mod.Dense):
                if len(shape) != 1:
                    raise _FormatError(f"Dense layer {layer.name!r} gets inputs of shape "
                                       f"(None, {', '.join(map(str, shape))}); it needs flat inputs")
                shapes = [(shape[0], layer.units)] + ([(layer.units,)] if layer.use_bias else [])
                shape = (layer.units,)
            elif isinstance(layer, layers_mod.Flatten):
                shape = (int(math.prod(shape)),)
            if any(d > _MAX_DIM for s in shapes for d in s) or any(d > _MAX_DIM for d in shape):
                raise _FormatError(f"layer {layer.name!r} is too large (a dimension >= 2**31)")
        weight_shapes += shapes
        h5_layers.append((gname, layer.name, shapes))
    return {"name": name, "layers": layers, "feature_shape": feature, "frozen": frozen,
            "weight_shapes": weight_shapes, "h5_layers": h5_layers}


def _n_elements(shapes):
    return sum(int(math.prod(s)) for s in shapes)


def _h5_size_limit(weight_shapes, n_layers):
    n = _n_elements(weight_shapes)
    # weights + at most 3 optimizer slots per parameter, 8 bytes each, plus HDF5's structure
    return (4 * n + 2) * 8 + _H5_BASE_OVERHEAD + _H5_OBJECT_OVERHEAD * (
        4 * len(weight_shapes) + 2 * n_layers + 8)


def _check_h5_size(size, weight_shapes):
    need = 2 * _n_elements(weight_shapes)  # at least 2 bytes per weight (float16)
    if size < need:
        raise _FormatError(f"{_WEIGHTS_NAME} holds {size} bytes, too few for the "
                           f"{_n_elements(weight_shapes)} weights its config describes")


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _FormatError(f"{where} must be a number. Received: {_short(value)}")
    return value


def _optimizer_from_config(value):
    if isinstance(value, str):
        try:
            return optimizers_mod.get(value)
        except ValueError as exc:
            raise _FormatError(str(exc)) from None
    _dict(value, "The optimizer")
    module = value.get("module")
    if isinstance(module, str) and _BACKEND_OPTIMIZER_MODULE.fullmatch(module):
        # Keras on the torch/jax backends records the backend's subclass module (e.g.
        # keras.src.backend.torch.optimizers.torch_adam, class "Adam"); the class is still
        # looked up by name in fastdense's own table, nothing is imported.
        value = dict(value, module="keras.optimizers")
    _check_keras_module(value, {"keras.optimizers"}, "The optimizer")
    cname = value.get("class_name")
    cls = optimizers_mod._BY_CLASS.get(cname) if isinstance(cname, str) else None
    if cls is None:
        raise _FormatError(f"the optimizer {_short(cname)} is not one fastdense implements "
                           f"(it has {sorted(optimizers_mod._BY_CLASS)})")
    cfg = dict(_dict(value.get("config") or {}, "The optimizer's config"))
    for key in ("loss_scale_factor", "gradient_accumulation_steps", "ema_overwrite_frequency"):
        if cfg.get(key) is not None:
            raise _FormatError(f"the optimizer sets {key}={_short(cfg[key])}, which fastdense "
                               "does not support")
    if "name" in cfg and not isinstance(cfg["name"], str):
        raise _FormatError("the optimizer's name must be a string")
    lr = cfg.get("learning_rate")
    if isinstance(lr, dict):
        _check_keras_module(lr, {"keras.optimizers.schedules"}, "The learning-rate schedule")
        sname = lr.get("class_name")
        if sname not in ("ExponentialDecay", "InverseTimeDecay"):
            raise _FormatError(f"the learning-rate schedule {_short(sname)} is not one fastdense "
                               "implements (it has ExponentialDecay, InverseTimeDecay)")
        scfg = _dict(lr.get("config") or {}, "The learning-rate schedule's config")
        cfg["learning_rate"] = {"class_name": sname, "config": dict(scfg)}
    elif lr is not None:
        _number(lr, "the optimizer's learning_rate")
    try:
        return cls.from_config(cfg)
    except (TypeError, ValueError) as exc:
        raise _FormatError(f"the optimizer {cname} has an invalid config: {exc}") from None


def _registered_class(value, module, what, kind, registry):
    """(class name, fastdense class, config dict) of a serialized Keras object of `module`; for a
    Keras "function" entry, (name, None, the entry's config) for the caller to resolve."""
    _dict(value, what)
    _check_keras_module(value, {module}, what)
    cname = value.get("class_name")
    if cname == "function":
        return cname, None, value.get("config")
    cls = registry.get(cname) if isinstance(cname, str) else None
    if cls is None:
        raise _FormatError(f"the {kind} {_short(cname)} is not one fastdense implements "
                           f"(it has {sorted(registry)})")
    return cname, cls, dict(_dict(value.get("config") or {}, f"{what}'s config"))


def _loss_from_config(value):
    if isinstance(value, str):
        if value not in losses_mod._BY_NAME:
            raise _FormatError(f"the loss {value!r} is not one fastdense implements "
                               f"(it has {sorted(losses_mod._BY_NAME)})")
        return value
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return _loss_from_config(value[0])
    cname, cls, cfg = _registered_class(value, "keras.losses", "The loss", "loss",
                                        losses_mod._BY_CLASS)
    if cls is None:  # a function, stored by name
        return _loss_from_config(cfg)
    if cfg.get("ignore_class") is not None:
        raise _FormatError(f"the loss sets ignore_class={_short(cfg['ignore_class'])}, which "
                           "fastdense does not support")
    if cfg.get("axis", -1) != -1:
        raise _FormatError(f"the loss sets axis={_short(cfg['axis'])}; fastdense supports -1")
    if isinstance(cfg.get("dtype"), dict):
        cfg.pop("dtype")
    try:
        return cls.from_config(cfg)
    except (TypeError, ValueError) as exc:
        raise _FormatError(f"the loss {cname} has an invalid config: {exc}") from None


def _metric_from_config(value):
    if isinstance(value, str):
        try:
            return metrics_mod.check(value)
        except ValueError as exc:
            raise _FormatError(str(exc)) from None
    cname, cls, cfg = _registered_class(value, "keras.metrics", "A metric", "metric",
                                        metrics_mod._BY_CLASS)
    if cls is None:  # a function, stored by name
        return _metric_from_config(cfg)
    if not isinstance(cfg.get("dtype"), (str, type(None))):
        cfg.pop("dtype")
    try:
        return cls(**cfg)
    except (TypeError, ValueError) as exc:
        raise _FormatError(f"the metric {cname} has an invalid config: {exc}") from None


def _compile_plan(config, plan):
    cc = config.get("compile_config")
    if cc is None:
        return None
    _dict(cc, "compile_config")
    if cc.get("loss") is None:
        warnings.warn("The file's compile_config has no loss, which fastdense needs to compile: "
                      "the model is returned uncompiled.", UserWarning, stacklevel=3)
        return None
    for key in ("loss_weights", "weighted_metrics"):
        if cc.get(key) not in (None, [], {}):
            raise _FormatError(f"compile_config sets {key}={_short(cc[key])}, which fastdense's "
                               "single-output models do not support")
    if plan["frozen"]:
        raise _FormatError(f"{plan['frozen'][0]!r} is frozen (trainable=false); fastdense trains "
                           "every layer, so it cannot restore this training state. Load the "
                           "model with compile=False")
    optimizer = _optimizer_from_config(cc.get("optimizer", "rmsprop"))
    loss = _loss_from_config(cc["loss"])
    metric_values = cc.get("metrics")
    if metric_values is None:
        metric_values = []
    if isinstance(metric_values, list) and len(metric_values) == 1 and isinstance(metric_values[0], list):
        metric_values = metric_values[0]  # Keras's per-output nesting, one output
    if not isinstance(metric_values, list):
        raise _FormatError(f"compile_config metrics must be a list. Received: {_short(metric_values)}")
    metric_list = [_metric_from_config(m) for m in metric_values]
    return {"optimizer": optimizer, "loss": loss, "metrics": metric_list}


# ---------------------------------------------------------------------------------------------
# Reading: the HDF5 state, every dataset checked before it is read
# ---------------------------------------------------------------------------------------------
def _child(group, name, kind, where):
    """group[name] if it is a hard link to an object of `kind` (h5py.Group / h5py.Dataset)."""
    if name not in group:
        return None
    link = group.get(name, getlink=True)
    h5py = _h5py()
    if not isinstance(link, h5py.HardLink):
        raise _FormatError(f"{where} is a {type(link).__name__}; Keras files hold plain groups "
                           "and datasets only")
    obj = group[name]
    if not isinstance(obj, kind):
        raise _FormatError(f"{where} is a {type(obj).__name__}, not a {kind.__name__}")
    return obj


def _read_dataset(ds, shape, kinds, where):
    if ds.shape != tuple(shape):
        raise _FormatError(f"{where} has shape {ds.shape}; the model needs {tuple(shape)}")
    dt = ds.dtype
    if dt.kind not in kinds or dt.itemsize not in (2, 4, 8) or dt.fields is not None \
            or dt.subdtype is not None:
        raise _FormatError(f"{where} has dtype {dt}; expected a "
                           f"{'float' if kinds == 'f' else 'integer'} dataset")
    if ds.external or ds.is_virtual:
        raise _FormatError(f"{where} refers to data outside the file, which fastdense refuses")
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _ALLOWED_H5_FILTERS:
            raise _FormatError(f"{where} uses HDF5 filter {code}, which fastdense does not read")
    arr = np.asarray(ds[()])
    if arr.shape != tuple(shape):
        raise _FormatError(f"{where} read back with shape {arr.shape}")
    return arr


def _vars_group(f, path, where):
    group = f
    parts = path.split("/")
    h5py = _h5py()
    for j, part in enumerate(parts):
        group = _child(group, part, h5py.Group, f"{where} ({'/'.join(parts[:j + 1])})")
        if group is None:
            return None
    return group


def _expect_keys(group, n, where):
    keys = list(group.keys())
    want = {str(i) for i in range(n)}
    if set(keys) != want:
        raise _FormatError(f"{where} holds {len(keys)} variables ({', '.join(sorted(keys)[:10])}); "
                           f"the model expects {n}")


def _open_h5(source):
    h5py = _h5py()
    try:
        return h5py.File(source, "r")
    except Exception as exc:
        raise _FormatError(f"it is not a readable HDF5 weights file ({type(exc).__name__}: "
                           f"{exc})") from None


def _read_h5_state(source, h5_layers, opt_specs, strict_optimizer):
    """Reads and validates all layer weights (and the optimizer's variables, when `opt_specs`
    is given) from an HDF5 file in Keras 3's layout. Returns (weights, optimizer arrays or None).
    """
    h5py = _h5py()
    with _open_h5(source) as f:
        if "model_weights" in f or "layer_names" in f.attrs:
            raise _FormatError("this is a legacy Keras 2 HDF5 file; fastdense reads the Keras 3 "
                               "format (`model.save('m.keras')`, `model.save_weights('w.weights.h5')`)")
        weights = []
        expected = set()
        for gname, lname, shapes in h5_layers:
            where = f"the weights of layer {lname!r} (layers/{gname}/vars)"
            expected.add(gname)
            group = _vars_group(f, f"layers/{gname}/vars", where)
            if group is None:
                if shapes:
                    raise _FormatError(f"the file has no weights for layer {lname!r} "
                                       f"(expected the group layers/{gname}/vars): the file "
                                       "was saved from a different architecture")
                continue
            _expect_keys(group, len(shapes), where)
            for i, shape in enumerate(shapes):
                ds = _child(group, str(i), h5py.Dataset, f"{where}/{i}")
                arr = _read_dataset(ds, shape, "f", f"layers/{gname}/vars/{i}")
                if not np.isfinite(arr).all():
                    raise _FormatError(f"layers/{gname}/vars/{i} holds NaN or Inf")
                weights.append(arr)
        layers_group = _vars_group(f, "layers", "the layers")
        if layers_group is not None:
            for key in layers_group.keys():
                if key in expected:
                    continue
                extra = _vars_group(layers_group, f"{key}/vars", f"layers/{key}")
                if extra is not None and len(extra.keys()):
                    raise _FormatError(f"the file has weights for a layer layers/{key} that the "
                                       "model does not have: it was saved from a different "
                                       "architecture")
        opt_arrays = None
        if opt_specs is not None:
            opt_arrays = _read_optimizer(f, opt_specs, [s for _, _, ss in h5_layers for s in ss],
                                         strict_optimizer)
    return weights, opt_arrays


def _read_optimizer(f, specs, weight_shapes, strict):
    h5py = _h5py()
    group = _vars_group(f, "optimizer/vars", "the optimizer's variables")
    if group is None:
        return None
    n_found = len(group.keys())
    if n_found != len(specs):
        msg = (f"the file's optimizer has {n_found} variables, but this model's optimizer has "
               f"{len(specs)}: it was saved with a different optimizer or architecture")
        if strict:
            raise _FormatError(msg)
        warnings.warn(f"Skipping the optimizer's state: {msg}.", UserWarning, stacklevel=4)
        return None
    _expect_keys(group, len(specs), "optimizer/vars")
    out = []
    for i, spec in enumerate(specs):
        where = f"optimizer/vars/{i}"
        ds = _child(group, str(i), h5py.Dataset, where)
        if spec[0] == "iterations":
            arr = _read_dataset(ds, (), "iu", where + " (iterations)")
            value = int(arr)
            if not 0 <= value <= _MAX_ITERATIONS:
                raise _FormatError(f"{where} (iterations) is out of range: {value}")
            out.append(value)
        elif spec[0] == "learning_rate":
            arr = _read_dataset(ds, (), "f", where + " (learning rate)")
            if not (np.isfinite(arr) and arr > 0):
                raise _FormatError(f"{where} (learning rate) must be positive and finite. "
                                   f"Received: {arr!r}")
            out.append(arr)
        else:
            _, k, w = spec
            arr = _read_dataset(ds, weight_shapes[w], "f", where)
            if not np.isfinite(arr).all():
                raise _FormatError(f"{where} holds NaN or Inf")
            out.append(arr)
    return out


def _checked_optimizer_state(opt, arrays, specs, weight_shapes, dtype):
    """(iterations, learning rate or None, new slots array) from the file's optimizer variables,
    all validated; nothing is assigned."""
    offs, n_params = _weight_offsets(weight_shapes)
    iterations, lr = 0, None
    slots = np.array(opt._initial_slots(n_params, dtype), dtype=dtype, copy=True)
    for spec, arr in zip(specs, arrays):
        if spec[0] == "iterations":
            iterations = arr
        elif spec[0] == "learning_rate":
            current = opt._learning_rate
            # The config (or the running optimizer) knows the rate to full precision; the file
            # holds it in the variable's dtype (float32 for float32 models). Keep the precise
            # value when the two agree.
            if isinstance(current, numbers.Real) and np.asarray(current).astype(arr.dtype) == arr:
                lr = float(current)
            else:
                lr = float(arr)
        else:
            _, k, w = spec
            start = k * n_params + offs[w]
            flat = arr.astype(dtype).reshape(-1)
            if _nonnegative_slot(opt, k) and (flat < 0).any():
                raise _FormatError(f"optimizer slot {k} of weight {w} holds negative values, "
                                   "which a sum of squares cannot")
            slots[start:start + flat.size] = flat
    return iterations, lr, slots


def _assign_optimizer_state(opt, state, n_params, dtype):
    iterations, lr, slots = state
    opt.build(n_params, dtype)
    opt.iterations = iterations
    if lr is not None:
        opt.learning_rate = lr
    opt._slots[...] = slots


# ---------------------------------------------------------------------------------------------
# Assembling a loaded model
# ---------------------------------------------------------------------------------------------
def _sequential_from_plan(plan):
    """A new, built `Sequential` from a validated plan (what `Sequential.from_config` would do)."""
    from .models import Sequential

    kwargs = {"name": plan["name"]} if plan["name"] else {}
    model = Sequential(**kwargs)
    for layer in plan["layers"]:
        model.add(layer)
    if not model.built and plan["feature_shape"] is not None:
        model.build((None,) + tuple(plan["feature_shape"]))
    return model


def _assemble(plan, compile_plan, weights, opt_state, opt_specs):
    try:
        model = _sequential_from_plan(plan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Could not rebuild the saved model: {exc}") from None
    if model.built:
        got = [tuple(w.shape) for w in model.weights]
        if got != [tuple(s) for s in plan["weight_shapes"]]:
            raise ValueError(f"The rebuilt model's weights {got} do not match the file's "
                             f"{plan['weight_shapes']}")
        model.set_weights(weights)
    if compile_plan is None:
        return model
    opt = compile_plan["optimizer"]
    model.compile(optimizer=opt, loss=compile_plan["loss"], metrics=compile_plan["metrics"])
    if opt_state is not None:
        dtype = model.dtype if model.built else "float32"
        try:
            state = _checked_optimizer_state(opt, opt_state, opt_specs, plan["weight_shapes"],
                                             dtype)
        except _FormatError as exc:
            raise ValueError(f"Could not restore the optimizer's state: {exc}") from None
        if model.built:
            _assign_optimizer_state(opt, state, model._params.size, model.dtype)
        else:  # an unbuilt model: Keras's unbuilt optimizer has only these two variables
            opt.iterations = state[0]
            if state[1] is not None:
                opt.learning_rate = state[1]
    return model
