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
it; everything is validated before anything is assigned, so a failed load leaves the model
unchanged; corrupted files raise ValueError naming the file and the member or field at fault.

Files from strangers: memory and time are bounded by the size of the model a file describes, and
that size by documented limits (`MAX_PARAMS`, `MAX_LAYERS`, the member caps below), each checked
before anything is allocated or decompressed. Only regular files are opened (a FIFO would block
forever). Zip members must be stored or deflated (zipfile inflates bzip2/lzma members in one call,
without an output cap), with declared sizes a deflate stream of their compressed size can hold,
read through a capped stream. HDF5 datasets are checked by `_hdf5_reader` before they are read
(layouts and filters Keras and fastdense write, every byte present). Values are checked after
the cast to the model's dtype (1e300 stored as float64 is inf in a float32 model).
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
import stat
import struct
import warnings
import zipfile

import numpy as np

from . import activations, initializers, regularizers
from . import _hdf5_reader
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
# Limits on what a file may describe (README, "Loading files from others"). Each is checked before
# anything is allocated or decompressed; beyond one, a load is a ValueError naming it.
MAX_PARAMS = 2**27               # parameters (weights) of the model: 512 MiB in float32
MAX_LAYERS = 10_000              # layers of the model
_MAX_CONFIG_BYTES = 16 << 20     # config.json, decompressed
_MAX_METADATA_BYTES = 1 << 20    # metadata.json, decompressed
_MAX_MEMBERS = 64                # zip members (Keras writes 3)
_MAX_ZIP_DIRECTORY = 1 << 20     # bytes of the zip's central directory
_H5_BASE_OVERHEAD = 1 << 20      # allowance for HDF5 structure, on top of the arrays' bytes
_H5_OBJECT_OVERHEAD = 4 << 10    # per group / dataset (Keras and fastdense use about 1 KiB)
_MAX_EXTRA_GROUPS = 64           # layer groups in a weights file beyond the model's layers
_DEFLATE_MAX_RATIO = 1032        # no deflate stream expands more than this
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_MAX_DIM = 2**31 - 1             # BLAS takes C int sizes
_MAX_ITERATIONS = 2**62
_MAX_SEED = 2**64 - 1


class _FormatError(ValueError):
    """A clear message about a file's content (passed through the error wrapping unchanged);
    `section` is the member or part of the file it is about, once the message names it."""

    def __init__(self, message, section=None):
        super().__init__(message)
        self.section = section


_CLEAR_ERRORS = (_FormatError, _hdf5_reader.StorageError)


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
        ValueError: for a missing, truncated, corrupted or unsupported file, a config naming
            anything fastdense does not implement, or a model beyond the documented limits
            (`MAX_PARAMS`, `MAX_LAYERS`); the message names the file and the member or field.
    """
    path = _fspath(filepath)
    if not path.endswith(".keras"):
        raise ValueError(
            f"File format not supported: filepath={path}. fastdense loads Keras 3 `.keras` files "
            "(and weights from `.weights.h5` files with `model.load_weights`).")
    with _open_regular(path) as (fh, size), _wrap_errors(path):
        zf = _open_zip(fh, size)
        with _section(_METADATA_NAME):
            _check_metadata(_read_json_member(zf, _METADATA_NAME, _MAX_METADATA_BYTES, size))
        with _section(_CONFIG_NAME):
            config = _read_json_member(zf, _CONFIG_NAME, _MAX_CONFIG_BYTES, size)
            plan = _model_plan(config)
            compile_plan = _compile_plan(config, plan) if compile else None
            opt_specs = None
            if compile_plan is not None:
                opt_specs = _optimizer_specs(compile_plan["optimizer"], plan["trainable_shapes"])
        with _section(_WEIGHTS_NAME):
            info = _member(zf, _WEIGHTS_NAME)
            _check_h5_size(info.file_size, plan["weight_shapes"])
            limit = _h5_size_limit(plan["weight_shapes"], len(plan["layers"]))
            data = _read_member(zf, info, limit, size)
            weights, opt_state = _read_h5_state(io.BytesIO(data), len(data), plan["h5_layers"],
                                                opt_specs, plan["dtype"], strict_optimizer=True,
                                                int_weights=plan["int_weights"],
                                                trainable_shapes=plan["trainable_shapes"])
            del data
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
    if not model.built:
        raise ValueError(
            "The model must be built before its weights can be loaded: give the first layer "
            "`input_shape=` (or start with `Input(shape)`), or call `model.build(input_shape)`. "
            f"Received: an unbuilt model {model.name!r}, filepath={path}")
    specs = _model_h5_layers(model)
    shapes = [w.shape for w in model.weights]
    tshapes = [w.shape for w in model.trainable_weights]  # the optimizer's variables
    opt = model.optimizer if getattr(model, "compiled", False) else None
    opt_specs = _optimizer_specs(opt, tshapes) if opt is not None else None
    limit = _h5_size_limit(shapes, len(specs))
    with _open_regular(path) as (fh, size), _wrap_errors(path):
        if is_keras:
            zf = _open_zip(fh, size)
            with _section(_WEIGHTS_NAME):
                data = _read_member(zf, _member(zf, _WEIGHTS_NAME), limit, size)
            source, source_size, section = io.BytesIO(data), len(data), _WEIGHTS_NAME
        else:
            if size > limit:
                raise _FormatError(f"the file holds {size} bytes, more than the {limit} bytes a "
                                   f"weights file of this model (its {_n_elements(shapes):,} "
                                   "weights, optimizer state and HDF5 structure) can need")
            source, source_size, section = fh, size, None
        with _section(section):
            weights, opt_state = _read_h5_state(source, source_size, specs, opt_specs,
                                                model.dtype, strict_optimizer=False,
                                                int_weights=_int_weights(model),
                                                trainable_shapes=tshapes)
            state = None
            if opt_state is not None:
                state = _checked_optimizer_state(opt, opt_state, opt_specs, tshapes, model.dtype)
    # Everything is validated: assign (set_weights checks again, then assigns all at once).
    model.set_weights(weights)
    if state is not None:
        _assign_optimizer_state(opt, state, model._n_trainable, model.dtype)


def _int_weights(model):
    """{(group name, index)} of a model's integer weights (Normalization's count)."""
    return {(g, i) for (g, _, _), layer in zip(_model_h5_layers(model), model._layers)
            for i, w in enumerate(layer.weights) if w.dtype.kind in "iu"}


def model_from_config(config):
    """A new, unweighted `Sequential` from `model.get_config()` or a Keras `config.json` dict,
    with the same checks and limits as `load_model` (every name looked up in fastdense's own
    tables)."""
    if not isinstance(config, dict):
        raise ValueError(f"A model config must be a dict. Received: {type(config).__name__}")
    if "class_name" not in config:
        config = {"module": "keras", "class_name": "Sequential", "config": config}
    try:
        return _sequential_from_plan(_model_plan(config))
    except _FormatError as exc:
        raise ValueError(f"Invalid model config: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Paths, opening, error wrapping
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
def _open_regular(path):
    """(file object, size in bytes) of `path` opened for reading, if it is a regular file. A FIFO
    would block `open()` forever (O_NONBLOCK makes that open return at once, then it is refused)
    and a device could stream without end; directories are refused too."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | \
        getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ValueError(f"File not found: filepath={path}. Please ensure the file exists and "
                         "is an accessible Keras file.") from None
    except OSError as exc:
        kind = "a directory" if os.path.isdir(path) else f"not readable ({exc.strerror})"
        raise ValueError(f"Could not load {path!r}: it is {kind}; fastdense reads Keras files "
                         "from regular files only") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                    "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                    "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise ValueError(f"Could not load {path!r}: it is {kind}, not a regular file; "
                             "fastdense reads Keras files from regular files only")
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh, st.st_size


@contextlib.contextmanager
def _wrap_errors(path):
    """Turns whatever a damaged file makes zipfile, json or h5py raise into one clear ValueError
    naming the file; a MemoryError (a model within the limits, on a machine with less memory)
    becomes a ValueError too."""
    try:
        yield
    except _CLEAR_ERRORS as exc:
        raise ValueError(f"Could not load {path!r}: {exc}") from None
    except MemoryError:
        raise ValueError(f"Could not load {path!r}: not enough memory for the model it describes "
                         f"(fastdense loads models of up to MAX_PARAMS={MAX_PARAMS:,} "
                         "parameters)") from None
    except Exception as exc:  # zipfile/zlib/h5py/json errors, struct errors, ...
        raise ValueError(
            f"Could not load {path!r}: the file is truncated, corrupted or not a Keras 3 file "
            f"({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def _section(name):
    """Names the member (or part) of the file an error comes from: clear messages get the prefix
    `name: `, anything else (h5py, zlib, json, ...) becomes one saying `name` is damaged."""
    try:
        yield
    except _CLEAR_ERRORS as exc:
        if name is None or getattr(exc, "section", None) is not None:
            raise
        raise _FormatError(f"{name}: {exc}", section=name) from None
    except MemoryError:
        raise
    except Exception as exc:
        what = name or "the HDF5 weights file"
        raise _FormatError(f"{what} is truncated, corrupted or not in Keras 3's format "
                           f"({type(exc).__name__}: {exc})", section=what) from exc


# ---------------------------------------------------------------------------------------------
# Zip and JSON
# ---------------------------------------------------------------------------------------------
def _open_zip(fh, size):
    _check_zip_directory(fh, size)
    fh.seek(0)
    try:
        return zipfile.ZipFile(fh, "r")
    except zipfile.BadZipFile as exc:
        raise _FormatError(f"it is not a valid `.keras` zip archive ({exc})") from None


def _check_zip_directory(fh, size):
    """Refuses an archive whose central directory is larger than a Keras file's, before zipfile
    reads it whole and makes an object per entry. Finds the end record as zipfile does."""
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06", 0, max(0, len(tail) - 18))  # a whole 22-byte record
    if at < 0:
        return  # zipfile reports it is not a zip
    entries, directory = struct.unpack_from("<HI", tail, at + 10)
    locator = at - 20
    if (entries == 0xFFFF or directory == 0xFFFFFFFF) and locator >= 0 \
            and tail[locator:locator + 4] == b"PK\x06\x07":
        fh.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
        record = fh.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            entries, directory = struct.unpack_from("<QQ", record, 32)
    if entries > _MAX_MEMBERS or directory > _MAX_ZIP_DIRECTORY:
        raise _FormatError(f"the zip archive declares {entries} members in a {directory}-byte "
                           f"directory; a Keras file has at most {_MAX_MEMBERS} members in "
                           f"{_MAX_ZIP_DIRECTORY} bytes")


def _member(zf, name):
    try:
        return zf.getinfo(name)
    except KeyError:
        raise _FormatError(f"the archive has no member {name!r}; a Keras 3 `.keras` file holds "
                           f"{_METADATA_NAME}, {_CONFIG_NAME} and {_WEIGHTS_NAME}") from None


def _read_member(zf, info, limit, archive_size):
    """The member's bytes, at most `limit` of them, checked before anything is decompressed:
    only the methods Keras writes (stored, deflated: zipfile inflates bzip2 and lzma members in
    one call without an output cap), a declared size within `limit` that the compressed bytes
    can hold, and those bytes inside the archive."""
    name = info.filename
    method = _ZIP_METHODS.get(info.compress_type)
    if method is None:
        raise _FormatError(f"member {name!r} is compressed with zip method {info.compress_type}; "
                           "Keras writes members stored (0) or deflated (8), the only methods "
                           "fastdense reads")
    if info.flag_bits & 0x1:
        raise _FormatError(f"member {name!r} is encrypted")
    if info.file_size > limit:
        raise _FormatError(f"member {name!r} declares {info.file_size} bytes, more than the "
                           f"{limit} bytes its content can need")
    most = info.compress_size if method == "stored" else \
        info.compress_size * _DEFLATE_MAX_RATIO + 64
    if info.file_size > most:
        raise _FormatError(f"member {name!r} declares {info.file_size} bytes, more than its "
                           f"{info.compress_size} {method} bytes can hold")
    if info.header_offset + info.compress_size > archive_size:
        raise _FormatError(f"member {name!r} declares {info.compress_size} bytes at offset "
                           f"{info.header_offset}, beyond the end of the file (truncated)")
    with zf.open(info, "r") as member:
        data = member.read(limit + 1)  # the CRC-32 is checked once the member is read to its end
        if len(data) > limit:
            raise _FormatError(f"member {name!r} is larger than {limit} bytes")
        if member.read(1):
            raise _FormatError(f"member {name!r} is longer than declared")
    if len(data) != info.file_size:
        raise _FormatError(f"member {name!r} holds {len(data)} bytes, "
                           f"not the {info.file_size} declared")
    return data


def _read_json_member(zf, name, limit, archive_size):
    data = _read_member(zf, _member(zf, name), limit, archive_size)

    def reject_constant(constant):
        raise _FormatError(f"it holds {constant}, which is not valid JSON")

    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=reject_constant)
    except _FormatError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _FormatError(f"not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise _FormatError(f"must hold a JSON object. Received: {type(value).__name__}")
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
        raise _FormatError(f"it must name a Keras 3 version. "
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
    shapes = [tuple(w.shape) for w in model.trainable_weights]  # Keras: per trainable variable
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
    if module is not None and (not isinstance(module, str) or module not in allowed):
        raise _FormatError(f"{what} names module {_short(module)}: fastdense loads only Keras's "
                           f"built-in {', '.join(sorted(allowed))} objects, and never imports code "
                           "named in a file")
    registered = entry.get("registered_name")
    if registered is not None and (not isinstance(registered, str)
                                   or registered != entry.get("class_name")):
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
    _check_seed(cfg, where)
    return {"class_name": cname, "config": cfg}


def _check_seed(cfg, where):
    seed = cfg.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= _MAX_SEED):
        raise _FormatError(f"{where}: seed must be null or an integer in [0, 2**64). "
                           f"Received: seed={_short(seed)}")


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
    for key in ("kernel_initializer", "bias_initializer", "beta_initializer", "gamma_initializer",
                "moving_mean_initializer", "moving_variance_initializer"):
        if key in cfg:
            cfg[key] = _initializer(cfg[key], f"{where} {key}")
    for key in ("kernel_regularizer", "bias_regularizer", "beta_regularizer", "gamma_regularizer"):
        if key in cfg:
            cfg[key] = _regularizer(cfg[key], f"{where} {key}")
    if cname == "Flatten" and cfg.get("data_format") not in (None, "channels_last"):
        raise _FormatError(f"{where} sets data_format={_short(cfg.get('data_format'))}; fastdense "
                           "flattens channels_last inputs only")
    if cname in ("Dropout", "GaussianNoise", "GaussianDropout"):
        _check_seed(cfg, where)
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
    if len(entries) > MAX_LAYERS + 1:  # + an InputLayer
        raise _FormatError(f"the model has {len(entries):,} layers, more than the "
                           f"MAX_LAYERS={MAX_LAYERS:,} fastdense loads")
    layers = []
    for i, entry in enumerate(entries):
        where = f"layer {i}"
        _dict(entry, where)
        lname = entry.get("class_name")
        label = lname if isinstance(lname, str) and lname.isidentifier() else _short(lname)
        where = f"layer {i} ({label})"
        module = entry.get("module")
        if not _layer_module_ok(module):
            raise _FormatError(f"{where} names module {_short(module)}: fastdense "
                               "loads only its own layers and never imports code named in a file")
        if entry.get("registered_name") not in (None, lname):
            raise _FormatError(f"{where} is a custom registered layer "
                               f"{_short(entry.get('registered_name'))}, which fastdense does not "
                               "implement")
        cls = layers_mod.LAYER_CLASSES.get(lname) if isinstance(lname, str) else None
        if cls is None:
            raise _FormatError(f"layer {i} is a {_short(lname)} layer, which fastdense does not "
                               f"implement (it has {sorted(layers_mod.LAYER_CLASSES)})")
        cfg = _layer_kwargs(lname, _dict(entry.get("config") or {}, f"{where} config"), where)
        if cls is layers_mod.InputLayer and i != 0:
            raise _FormatError(f"{where}: an InputLayer can only come first")
        try:
            layer = cls.from_config(cfg)
        except (TypeError, ValueError) as exc:
            raise _FormatError(f"{where} has an invalid config: {exc}") from None
        if mcfg.get("trainable") is False:
            layer.trainable = False  # a frozen model: every layer frozen, as in Keras
        layers.append(layer)
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
    weight_shapes, h5_layers, trainable_shapes, int_weights = [], [], [], set()
    gnames = _generic_names([type(l).__name__ for l in body])
    shape = feature
    n_params = 0
    for gname, layer in zip(gnames, body):
        shapes = []
        if shape is not None:
            if isinstance(layer, layers_mod.Dense):
                if len(shape) != 1:
                    raise _FormatError(f"Dense layer {layer.name!r} gets inputs of shape "
                                       f"(None, {', '.join(map(str, shape))}); it needs flat inputs")
                shapes = [(shape[0], layer.units)] + ([(layer.units,)] if layer.use_bias else [])
                if layer.trainable:
                    trainable_shapes += shapes
                shape = (layer.units,)
            elif isinstance(layer, layers_mod.Flatten):
                shape = (int(math.prod(shape)),)
            elif hasattr(layer, "_config_weights"):  # the normalization layers
                try:
                    specs = layer._config_weights(shape)
                except ValueError as exc:
                    raise _FormatError(str(exc)) from None
                shapes = [s for s, _, _ in specs]
                trainable_shapes += [s for s, _, t in specs if t]
                int_weights |= {(gname, i) for i, (_, kind, _) in enumerate(specs) if kind != "f"}
            if any(d > _MAX_DIM for s in shapes for d in s) or any(d > _MAX_DIM for d in shape):
                raise _FormatError(f"layer {layer.name!r} is too large (a dimension >= 2**31)")
            n_params += _n_elements(shapes)
            if n_params > MAX_PARAMS:
                raise _FormatError(f"the model is too large: its layers up to {layer.name!r} have "
                                   f"{n_params:,} parameters, more than the MAX_PARAMS="
                                   f"{MAX_PARAMS:,} fastdense loads")
        weight_shapes += shapes
        h5_layers.append((gname, layer.name, shapes))
    # The model's dtype, as Sequential.build finds it (which refuses mixed ones): values from
    # the file are checked after the cast to it.
    weighted = [l for l, (_, _, s) in zip(body, h5_layers) if s] or \
        [l for l in body if isinstance(l, layers_mod.Dense)] or body
    dtype = weighted[0].dtype
    return {"name": name, "layers": layers, "feature_shape": feature,
            "weight_shapes": weight_shapes, "h5_layers": h5_layers, "dtype": dtype,
            "trainable_shapes": trainable_shapes, "int_weights": int_weights}


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
        raise _FormatError(f"it holds {size} bytes, too few for the "
                           f"{_n_elements(weight_shapes):,} weights config.json describes")


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
    optimizer = _optimizer_from_config(cc.get("optimizer", "rmsprop"))
    _check_hyperparameters(optimizer, plan["dtype"])
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


def _check_hyperparameters(opt, dtype):
    """The optimizer's numbers (and its schedule's) must be finite in the model's dtype, where
    the kernels use them, and a constant learning rate positive there."""
    cfg = opt.get_config()
    items = list(cfg.items())
    if isinstance(cfg.get("learning_rate"), dict):
        items += [(f"learning_rate {k}", v) for k, v in
                  (cfg["learning_rate"].get("config") or {}).items()]
    for key, value in items:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            with np.errstate(over="ignore", under="ignore"):
                cast = np.asarray(value, dtype=np.float64).astype(dtype)
            if not np.isfinite(cast) or (key == "learning_rate" and not cast > 0):
                raise _FormatError(f"compile_config's optimizer sets {key}={value!r}, which is "
                                   f"{'not positive' if np.isfinite(cast) else 'not finite'} "
                                   f"in the model's dtype {dtype}")


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


def _in_dtype(arr, dtype, where):
    """`arr` cast to the model's dtype, which must leave every value finite: 1e300 stored as
    float64 is finite, but inf in a float32 model (and one training step spreads it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr).astype(dtype)
    if not np.isfinite(out).all():
        raise _FormatError(f"{where} holds NaN or Inf once cast to the model's dtype {dtype}")
    return out


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


def _read_h5_state(source, file_size, h5_layers, opt_specs, dtype, strict_optimizer,
                   int_weights=(), trainable_shapes=None):
    """Reads and validates all layer weights (and the optimizer's variables, when `opt_specs`
    is given) from an HDF5 file of `file_size` bytes in Keras 3's layout, cast to the model's
    `dtype` (the weights named in `int_weights`, {(group, index)}, are integers and stay so).
    Returns (weights, optimizer arrays or None); the optimizer's slots follow
    `trainable_shapes` (default: every weight).
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
            if not shapes:  # nothing to read (a lookup per layer would dominate for many layers)
                continue
            group = _vars_group(f, f"layers/{gname}/vars", where)
            if group is None:
                raise _FormatError(f"the file has no weights for layer {lname!r} "
                                   f"(expected the group layers/{gname}/vars): the file "
                                   "was saved from a different architecture")
            _expect_keys(group, len(shapes), where)
            for i, shape in enumerate(shapes):
                ds = _child(group, str(i), h5py.Dataset, f"{where}/{i}")
                name = f"layers/{gname}/vars/{i}"
                if (gname, i) in int_weights:
                    arr = _hdf5_reader.read_dataset(ds, shape, "iu", file_size, name)
                    if not 0 <= int(arr) <= _MAX_ITERATIONS:
                        raise _FormatError(f"{name} (a count) is out of range: {int(arr)}")
                    weights.append(np.asarray(arr, dtype=np.int64))
                    continue
                arr = _hdf5_reader.read_dataset(ds, shape, "f", file_size, name)
                weights.append(_in_dtype(arr, dtype, name))
        layers_group = _vars_group(f, "layers", "the layers")
        if layers_group is not None:
            if len(layers_group) > len(h5_layers) + _MAX_EXTRA_GROUPS:  # each costs lookups
                raise _FormatError(f"the file has {len(layers_group)} layer groups under layers/ "
                                   f"for a model of {len(h5_layers)} layers: it was saved from a "
                                   "different architecture")
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
            if trainable_shapes is None:
                trainable_shapes = [s for _, _, ss in h5_layers for s in ss]
            opt_arrays = _read_optimizer(f, file_size, opt_specs, trainable_shapes, dtype,
                                         strict_optimizer)
    return weights, opt_arrays


def _read_optimizer(f, file_size, specs, weight_shapes, dtype, strict):
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
            arr = _hdf5_reader.read_dataset(ds, (), "iu", file_size, where + " (iterations)")
            value = int(arr)
            if not 0 <= value <= _MAX_ITERATIONS:
                raise _FormatError(f"{where} (iterations) is out of range: {value}")
            out.append(value)
        elif spec[0] == "learning_rate":
            name = where + " (learning rate)"
            arr = _hdf5_reader.read_dataset(ds, (), "f", file_size, name)
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                cast = np.asarray(arr).astype(dtype)
            if not (np.isfinite(cast) and cast > 0):
                raise _FormatError(f"{name} must be positive and finite in the model's dtype "
                                   f"{dtype}. Received: {arr!r}")
            out.append(cast)
        else:
            _, k, w = spec
            arr = _hdf5_reader.read_dataset(ds, weight_shapes[w], "f", file_size, where)
            out.append(_in_dtype(arr, dtype, where))
    return out


def _checked_optimizer_state(opt, arrays, specs, weight_shapes, dtype):
    """(iterations, learning rate or None, new slots array) from the file's optimizer variables,
    all validated; nothing is assigned."""
    offs, n_params = _weight_offsets(weight_shapes)
    iterations, lr = 0, None
    slots = np.array(opt._initial_slots(n_params, dtype), dtype=dtype, copy=True)
    for i, (spec, arr) in enumerate(zip(specs, arrays)):
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
                raise _FormatError(f"optimizer/vars/{i} (slot {k} of weight {w}) holds negative "
                                   "values, which a sum of squares cannot")
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
def _sequential_from_plan(plan, weights=None):
    """A new `Sequential` from a validated plan (what `Sequential.from_config` does), built once
    at the end (linear in the layer count). Given the file's `weights` (validated, in the model's
    dtype), Dense layers start from them: no initializer runs, no random draw is spent."""
    from .models import Sequential

    kwargs = {"name": plan["name"]} if plan["name"] else {}
    model = Sequential(**kwargs)
    if weights is not None and plan["feature_shape"] is not None:
        arrays = iter(weights)
        body = [l for l in plan["layers"] if not isinstance(l, layers_mod.InputLayer)]
        for layer, (_, _, shapes) in zip(body, plan["h5_layers"]):
            mine = [next(arrays) for _ in shapes]
            if isinstance(layer, layers_mod.Dense) and mine:
                layer.kernel = mine[0]
                layer.bias = mine[1] if layer.use_bias else None
    model._add_all(plan["layers"])
    if not model.built and plan["feature_shape"] is not None:
        model.build((None,) + tuple(plan["feature_shape"]))
    return model


def _assemble(plan, compile_plan, weights, opt_state, opt_specs):
    with _section(_CONFIG_NAME):
        try:
            model = _sequential_from_plan(plan, weights)
        except _FormatError:
            raise
        except (TypeError, ValueError) as exc:
            raise _FormatError(f"the model it describes cannot be built: {exc}") from None
        if model.built:
            got = [tuple(w.shape) for w in model.weights]
            if got != [tuple(s) for s in plan["weight_shapes"]]:
                raise _FormatError(f"the rebuilt model's weights {got} do not match the "
                                   f"file's {plan['weight_shapes']}")
            model.set_weights(weights)
        if compile_plan is None:
            return model
        opt = compile_plan["optimizer"]
        model.compile(optimizer=opt, loss=compile_plan["loss"], metrics=compile_plan["metrics"])
    if opt_state is not None:
        with _section(_WEIGHTS_NAME):
            state = _checked_optimizer_state(opt, opt_state, opt_specs, plan["trainable_shapes"],
                                             plan["dtype"])
        if model.built:
            _assign_optimizer_state(opt, state, model._n_trainable, model.dtype)
        else:  # an unbuilt model: Keras's unbuilt optimizer has only these two variables
            opt.iterations = state[0]
            if state[1] is not None:
                opt.learning_rate = state[1]
    return model
