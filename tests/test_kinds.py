"""The table of kinds (fastdense/_kinds.py) against everything that must follow it: the compiled
codes, the compiled activations (against the independent formulas of tests/formulas.py), the
NumPy reference, the loss and layer classes, and the ONNX translations."""
import numpy as np
import pytest

import fastdense
from fastdense import _kernels, _kinds, _reference, activations, layers, losses
from formulas import ACTIVATIONS as FORMULAS

ACT_NAMES = sorted(name for a in _kinds.ACTIVATIONS for name in a.names)


# -- the compiled codes ------------------------------------------------------------------------
def test_compiled_codes_are_the_tables():
    for name, code in _kinds.CODES.items():
        assert _kernels.CODES[name] == code, name
    assert tuple(_kernels.ACT_NEEDS_PRE) == _kinds.NEEDS_PRE
    _kinds.check_compiled(_kernels.CODES)  # what `import fastdense` runs


def test_kernels_built_from_another_table_are_refused():
    for name in ("ACT_GELU", "LOSS_BCE", "OP_RESCALE"):
        stale = dict(_kernels.CODES)
        stale[name] += 1
        with pytest.raises(ImportError, match=f"rebuild.*{name}"):
            _kinds.check_compiled(stale)
    stale = {k: v for k, v in _kernels.CODES.items() if k != "ACT_EXPONENTIAL"}
    with pytest.raises(ImportError, match="ACT_EXPONENTIAL"):
        _kinds.check_compiled(stale)


def test_codes_are_positions_in_each_table():
    for prefix, count in (("ACT_", len(_kinds.ACTIVATIONS)), ("METRIC_", len(_kinds.METRICS)),
                          ("OPT_", len(_kinds.OPTIMIZERS)), ("OP_", len(_kinds.LAYER_OPS))):
        codes = sorted(v for k, v in _kinds.CODES.items() if k.startswith(prefix))
        assert codes == list(range(count)), prefix
    assert _kinds.CODES["N_ACTIVATIONS"] == len(_kinds.ACTIVATIONS)


def test_generated_declarations_name_every_code():
    text = _kinds.pxi_text()
    for name, code in _kinds.CODES.items():
        assert f"    {name} = {code}\n" in text
        assert f"    {name!r}: {name},\n" in text


# -- activations: every table row has a kernel, a reference, a formula, an ONNX graph ------------
def test_every_activation_name_is_public_and_has_a_formula():
    assert sorted(activations._CODES) == ACT_NAMES
    assert set(FORMULAS) == set(ACT_NAMES)
    for name in ACT_NAMES:
        assert getattr(activations, name).code == _kinds.ACTIVATION_CODES[name]
    assert set(_reference._ACTIVATIONS) == {a.kernel for a in _kinds.ACTIVATIONS}


@pytest.mark.parametrize("module", [_kernels, _reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("name", ACT_NAMES)
def test_every_activation_forward_and_derivative_match_the_formulas(module, name):
    """act(s) against tests/formulas.py, and dZ * act'(s) against central differences of it."""
    code = _kinds.ACTIVATION_CODES[name]
    f = FORMULAS[name]
    S = np.linspace(-4, 4, 13).reshape(1, -1) + 0.1234  # off the kinks (0, +-3)
    Z = S.copy()
    module.activation_forward(code, Z)
    np.testing.assert_allclose(Z, f(S), rtol=1e-12, atol=1e-14)
    dZ = np.random.default_rng(0).normal(size=S.shape)
    dS = np.empty_like(S)
    module.activation_backward(code, S, Z, dZ, dS)
    h = 1e-6
    numeric = np.empty_like(S)
    for j in range(S.shape[1]):
        e = np.zeros_like(S)
        e[0, j] = h
        numeric[0, j] = np.sum(dZ * (f(S + e) - f(S - e))) / (2 * h)
    np.testing.assert_allclose(dS, numeric, rtol=1e-6, atol=1e-8)


def test_the_pre_activation_is_read_exactly_by_the_needs_pre_activations():
    """A wrong S changes the derivative of the needs_pre activations only."""
    S = np.linspace(-2, 2, 9).reshape(1, -1) + 0.1234
    for a in _kinds.ACTIVATIONS:
        code = _kinds.CODES["ACT_" + a.kernel]
        Z = S.copy()
        _kernels.activation_forward(code, Z)
        dZ = np.ones_like(S)
        right, wrong = np.empty_like(S), np.empty_like(S)
        _kernels.activation_backward(code, S, Z, dZ, right)
        _kernels.activation_backward(code, S + 1.0, Z, dZ, wrong)
        assert (not np.array_equal(right, wrong)) == a.needs_pre, a.kernel


def test_every_activation_has_an_onnx_translation():
    from fastdense.export import onnx as onnx_export

    assert sorted(onnx_export.ACTIVATION_CONVERTERS) == ACT_NAMES


# -- losses ------------------------------------------------------------------------------------
def test_every_loss_row_resolves_to_its_class_and_codes():
    for row in _kinds.LOSSES:
        for name in row.names:
            loss = losses.get(name)
            assert loss.kind == row.kind and loss.sparse == row.sparse
            assert type(loss).default_name == row.names[0]  # the canonical name first
            assert loss.codes(None) == (_kinds.CODES["LOSS_" + row.kernel], False)
            if row.logits_kernel:
                logits = _kinds.CODES["LOSS_" + row.logits_kernel]
                assert loss.codes(row.fuses_with) == (logits, True)
                assert type(loss)(from_logits=True).codes(None) == (logits, False)
                assert type(loss)(from_logits=True).codes(row.fuses_with) == (logits, False)
    assert sorted(losses._BY_NAME) == sorted(n for row in _kinds.LOSSES for n in row.names)


def test_every_loss_code_has_a_reference():
    assert set(_reference._LOSSES) == {v for k, v in _kinds.CODES.items() if k.startswith("LOSS_")}


# -- layer kinds -------------------------------------------------------------------------------
def _self_planning_layers():
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    norm = layers.Normalization()
    norm.adapt(x)
    return [layers.BatchNormalization(), layers.LayerNormalization(), norm,
            layers.Rescaling(0.5), layers.GaussianNoise(0.1), layers.GaussianDropout(0.1)]


def test_every_layer_kind_names_a_layer_class_and_is_emitted_by_it():
    for op in _kinds.LAYER_OPS:
        assert isinstance(getattr(layers, op.layer), type), op
    emitted = {}
    for layer in _self_planning_layers():
        model = fastdense.Sequential([fastdense.Input((4,)), layer])
        model.build()
        kind = layer._plan_op(model._flat_offsets.get(layer.name, []), True)["kind"]
        emitted[kind] = type(layer).__name__
    by_kind = {"OP_" + op.kernel: op.layer for op in _kinds.LAYER_OPS}
    for kind, cls in emitted.items():
        assert by_kind[kind] == cls
    # every kind run by _norm_forward has its layer
    assert set(emitted) == set(by_kind) - {"OP_DENSE", "OP_ACTIVATION", "OP_DROPOUT",
                                           "OP_DENSE_FROZEN"}


def test_every_layer_kind_has_an_onnx_translation():
    from fastdense.export import onnx as onnx_export

    assert {op.layer for op in _kinds.LAYER_OPS} <= set(onnx_export.LAYER_CONVERTERS)
