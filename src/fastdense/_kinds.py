"""Every activation, loss, metric, optimizer and layer-op kind of fastdense, declared once.

A kind's code is its position in its table. The compiled kernels get the codes as Cython enum
constants (`ACT_RELU`, `LOSS_MSE`, `OP_BATCHNORM`, ...) from `_kinds.pxi`, which setup.py writes
from this file at every build (`write_pxi`; the file is generated, never committed); the Python
modules (activations.py, losses.py, metrics.py, _reference.py, ...) read names and properties from
here. `check_compiled` refuses kernels built from another version of these tables.

What else a new kind needs (its compiled formulas, its NumPy reference, its ONNX translation) is
listed in docs/design.md, "Adding an activation, a loss or a layer kind".

This file imports nothing from fastdense: setup.py runs it before the kernels exist.
"""
from collections import namedtuple

# An activation: `kernel` names its code (ACT_<kernel>); `names` are its Keras names, the first
# one canonical (serialized), the others aliases; `needs_pre` when its derivative reads the
# pre-activation S, not only the output Z = act(S) (the training step then keeps S).
Activation = namedtuple("Activation", "kernel names needs_pre")

ACTIVATIONS = (
    Activation("LINEAR", ("linear",), False),
    Activation("SIGMOID", ("sigmoid",), False),
    Activation("SOFTMAX", ("softmax",), False),
    Activation("TANH", ("tanh",), False),
    Activation("RELU", ("relu",), False),
    Activation("ELU", ("elu",), False),
    Activation("SELU", ("selu",), False),
    Activation("SOFTPLUS", ("softplus",), False),
    Activation("SOFTSIGN", ("softsign",), False),
    Activation("SWISH", ("swish", "silu"), True),  # "silu" is Keras's alias of "swish"
    Activation("GELU", ("gelu",), True),
    Activation("LEAKY_RELU", ("leaky_relu",), False),
    Activation("HARD_SIGMOID", ("hard_sigmoid",), False),
    Activation("EXPONENTIAL", ("exponential",), False),
)

# A loss: `kind` is the key of its class in losses.py; `names` its Keras names; `kernel` names the
# code that reads probabilities or values (LOSS_<kernel>), `logits_kernel` the one that reads
# logits (from_logits=True), None if the loss has no such form; when the last activation is
# `fuses_with`, fit computes the loss from that activation's input, i.e. from logits, as TF-Keras
# does (gradient p - y at the logits). `sparse`: targets are class indices, one per sample.
Loss = namedtuple("Loss", "kind names kernel logits_kernel fuses_with sparse")

LOSSES = (
    Loss("mse", ("mean_squared_error", "mse"), "MSE", None, None, False),
    Loss("mae", ("mean_absolute_error", "mae"), "MAE", None, None, False),
    Loss("cce", ("categorical_crossentropy",), "CCE", "CCE_LOGITS", "softmax", False),
    Loss("scce", ("sparse_categorical_crossentropy",), "SCCE", "SCCE_LOGITS", "softmax", True),
    Loss("bce", ("binary_crossentropy",), "BCE", "BCE_LOGITS", "sigmoid", False),
)

# Metrics the compiled step accumulates (METRIC_<name>); their classes are in metrics.py.
METRICS = ("CATEGORICAL_ACCURACY", "SPARSE_CATEGORICAL_ACCURACY", "BINARY_ACCURACY", "MSE", "MAE")

# Optimizer updates of `_opt_step` (OPT_<name>); the classes are in optimizers.py.
OPTIMIZERS = ("SGD", "SGD_MOMENTUM", "SGD_NESTEROV", "ADAM", "RMSPROP", "ADAGRAD")

# A layer op of the plan (OP_<kernel>): `layer` is the fastdense.layers class that emits it.
# DENSE, ACTIVATION, DROPOUT and DENSE_FROZEN run in the network loops of _kernels.pyx; the others
# describe themselves (`_plan_op`) and run in _norm_forward / _norm_backward.
LayerOp = namedtuple("LayerOp", "kernel layer")

LAYER_OPS = (
    LayerOp("DENSE", "Dense"),
    LayerOp("ACTIVATION", "Activation"),
    LayerOp("DROPOUT", "Dropout"),
    LayerOp("BATCHNORM", "BatchNormalization"),
    LayerOp("LAYERNORM", "LayerNormalization"),
    LayerOp("NORMALIZE", "Normalization"),
    LayerOp("RESCALE", "Rescaling"),
    LayerOp("GAUSS_NOISE", "GaussianNoise"),
    LayerOp("GAUSS_DROPOUT", "GaussianDropout"),
    LayerOp("DENSE_FROZEN", "Dense"),  # a Dense layer with trainable=False, while training
)


def _enums():
    """(comment, [constant names in code order], count name or None) per enum block."""
    losses = [code for loss in LOSSES for code in (loss.kernel, loss.logits_kernel) if code]
    return [
        ("activations", ["ACT_" + a.kernel for a in ACTIVATIONS], "N_ACTIVATIONS"),
        ("losses; the *_LOGITS codes read logits, the others probabilities or values",
         ["LOSS_" + name for name in losses], None),
        ("metrics", ["METRIC_" + name for name in METRICS], None),
        ("optimizer updates", ["OPT_" + name for name in OPTIMIZERS], None),
        ("plan ops (layer kinds)", ["OP_" + op.kernel for op in LAYER_OPS], None),
    ]


def _codes():
    codes = {}
    for _, names, count in _enums():
        codes.update((name, code) for code, name in enumerate(names))
        if count:
            codes[count] = len(names)
    return codes


# Every code by its kernel name: {"ACT_LINEAR": 0, ..., "LOSS_MSE": 0, ..., "OP_DENSE": 0, ...}.
CODES = _codes()

# Keras activation name (aliases included) -> code.
ACTIVATION_CODES = {name: CODES["ACT_" + a.kernel] for a in ACTIVATIONS for name in a.names}
# Codes of the activations whose derivative reads the pre-activation.
NEEDS_PRE = tuple(CODES["ACT_" + a.kernel] for a in ACTIVATIONS if a.needs_pre)
# Loss kind -> its row.
LOSS_BY_KIND = {loss.kind: loss for loss in LOSSES}


def pxi_text():
    """The Cython declarations of the codes, as `_kernels.pyx` includes them."""
    lines = ["# Generated by setup.py from _kinds.py, at every build; do not edit (not committed).",
             ""]
    for comment, names, count in _enums():
        lines += ["# " + comment, "cdef enum:"]
        lines += [f"    {name} = {code}" for code, name in enumerate(names)]
        if count:
            lines.append(f"    {count} = {len(names)}")
        lines.append("")
    # The same constants for Python, read back from the compiled enums (check_compiled).
    lines.append("_KIND_CODES = {")
    lines += [f"    {name!r}: {name}," for name in CODES]
    lines.append("}")
    lines.append("ACT_NEEDS_PRE = (" + "".join(f"ACT_{a.kernel}," for a in ACTIVATIONS
                                               if a.needs_pre) + ")")
    return "\n".join(lines) + "\n"


def write_pxi(path):
    """Writes pxi_text() to `path` unless it already holds it (an unchanged file keeps its
    timestamp, so the extension is not rebuilt for nothing)."""
    text = pxi_text()
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def check_compiled(compiled_codes):
    """Raises ImportError when the compiled kernels' codes are not this table's (a build from an
    older _kinds.py: rebuild with `pip install -e .`)."""
    wrong = sorted(name for name, code in CODES.items() if compiled_codes.get(name) != code)
    if wrong:
        raise ImportError(
            "fastdense's compiled kernels were built from another version of "
            "fastdense/_kinds.py; rebuild them (`pip install -e .` or "
            f"`python setup.py build_ext --inplace`). Codes that differ: {wrong}")
