"""The normalization and noise layers (BatchNormalization, LayerNormalization, Normalization,
Rescaling, GaussianNoise, GaussianDropout) and frozen layers (trainable=False): formulas against
float64 NumPy, gradients against central differences, Keras's training/inference semantics,
saving, the custom-loop API, and a clear error for every bad argument.
(Numbers from real Keras: test_layer_fixtures.py.)"""
import numpy as np
import pytest

import fastdense
from fastdense import Sequential, load_model, optimizers
from fastdense.layers import (Activation, BatchNormalization, Dense, GaussianDropout,
                              GaussianNoise, Input, LayerNormalization, Normalization, Rescaling)


def _data(n=40, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * 2 + 1
    return x, np.eye(k)[rng.integers(0, k, n)]


def _randomize(model, seed=1):
    """Random non-trivial values for every float weight (gamma, beta, statistics included)."""
    rng = np.random.default_rng(seed)
    new = []
    for w in model.get_weights():
        if w.dtype.kind == "f":
            v = rng.normal(size=w.shape) * 0.5
            if w.ndim == 1:
                v = 1 + 0.3 * v  # keeps variances positive
            new.append(v)
        else:
            new.append(w)
    model.set_weights(new)


# ---------------------------------------------------------------------------------------------
# Formulas (float64 NumPy, written here, not by the code under test)
# ---------------------------------------------------------------------------------------------
def test_batchnorm_training_step_and_inference_match_the_formulas(float64):
    x, _ = _data(n=16)
    model = Sequential([Input((5,)), BatchNormalization(momentum=0.9, epsilon=1e-2)])
    _randomize(model)
    gamma, beta, mm, mv = model.get_weights()
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(out, (x - mm) / np.sqrt(mv + 1e-2) * gamma + beta, rtol=1e-12)
    model.compile(optimizer=optimizers.SGD(1e-9), loss="mse")  # ~no update of gamma/beta
    model.train_on_batch(x, np.zeros_like(x))
    mean, var = x.mean(0), x.var(0)  # the biased batch variance, as Keras 3
    np.testing.assert_allclose(model.get_weights()[2], mm * 0.9 + mean * 0.1, rtol=1e-12)
    np.testing.assert_allclose(model.get_weights()[3], mv * 0.9 + var * 0.1, rtol=1e-12)
    # training mode normalizes with the batch statistics: the loss tells
    xhat = (x - mean) / np.sqrt(var + 1e-2) * gamma + beta
    loss, _ = model.loss_and_gradients(x, np.zeros_like(x))
    np.testing.assert_allclose(loss, np.mean(xhat ** 2), rtol=1e-7)  # gamma moved by ~1e-9


def test_layernorm_normalization_rescaling_match_the_formulas(float64):
    x, _ = _data(n=9)
    ln = Sequential([Input((5,)), LayerNormalization(epsilon=0.1)])
    _randomize(ln)
    gamma, beta = ln.get_weights()
    mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    np.testing.assert_allclose(ln.predict(x, verbose=0), (x - mu) / np.sqrt(var + 0.1) * gamma + beta,
                               rtol=1e-12)
    mean, variance = np.arange(5.0), np.array([4.0, 1.0, 0.0, 9.0, 0.25])
    norm = Sequential([Input((5,)), Normalization(mean=mean, variance=variance)])
    np.testing.assert_allclose(norm.predict(x, verbose=0),
                               (x - mean) / np.maximum(np.sqrt(variance), 1e-7), rtol=1e-12)
    assert norm.get_weights() == []
    resc = Sequential([Input((5,)), Rescaling(0.5, offset=-2.0)])
    np.testing.assert_allclose(resc.predict(x, verbose=0), x * 0.5 - 2.0, rtol=1e-15)
    # the standalone layer call gives the same
    np.testing.assert_allclose(ln.layers[0](x), ln.predict(x, verbose=0), rtol=1e-12)


def test_rescaling_accepts_uint8_images():
    x = np.arange(24, dtype=np.uint8).reshape(2, 12) * 10
    model = Sequential([Input((12,)), Rescaling(1 / 255)])
    out = model.predict(x, verbose=0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x.astype(np.float32) * np.float32(1 / 255), rtol=1e-7)


def test_normalization_adapt_is_keras_statistics_and_updates_a_built_model_in_place():
    x, _ = _data(n=50)
    norm = Normalization()
    model = Sequential([Input((5,)), norm, Dense(2)])
    model.compile("sgd", "mse")
    norm.adapt(x)
    mean, variance, count = norm.get_weights()
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(variance, x.var(0), rtol=1e-6)
    assert count.dtype == np.int64 and count.shape == () and count == 0  # Keras 3 leaves it 0
    kernel, bias = model.get_weights()[3:]
    expected = ((x - mean) / np.sqrt(variance)) @ kernel + bias
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    before = norm.get_weights()
    model.fit(x, np.zeros((50, 2)), epochs=2, verbose=0)
    for a, b in zip(before, norm.get_weights()):  # never trained
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Gradients: central differences in float64, on every parameter
# ---------------------------------------------------------------------------------------------
NETS = {
    "batchnorm": lambda: [Dense(6, activation="tanh"), BatchNormalization(), Dense(3, activation="softmax")],
    "batchnorm_plain": lambda: [Dense(6), BatchNormalization(center=False, scale=False),
                                Activation("sigmoid"), Dense(3, activation="softmax")],
    "batchnorm_first": lambda: [BatchNormalization(epsilon=0.1), Dense(3, activation="softmax")],
    "layernorm": lambda: [Dense(6, activation="relu"), LayerNormalization(), Dense(3, activation="softmax")],
    "layernorm_first": lambda: [LayerNormalization(scale=False), Dense(3, activation="softmax")],
    "normalization": lambda: [Dense(6, activation="tanh"), Normalization(mean=0.5, variance=2.0),
                              Dense(3, activation="softmax")],
    "rescaling": lambda: [Dense(6, activation="tanh"), Rescaling(0.3, 1.0), Dense(3, activation="softmax")],
    "gaussian_noise": lambda: [Dense(6, activation="tanh"), GaussianNoise(0.4), Dense(3, activation="softmax")],
    "gaussian_dropout": lambda: [Dense(6, activation="tanh"), GaussianDropout(0.3), Dense(3, activation="softmax")],
    "frozen_dense": lambda: [Dense(6, activation="tanh"), Dense(5, activation="sigmoid", trainable=False),
                             Dense(3, activation="softmax")],
    "frozen_batchnorm": lambda: [Dense(6, activation="tanh"), BatchNormalization(trainable=False),
                                 Dense(3, activation="softmax")],
}


@pytest.mark.parametrize("net", sorted(NETS))
def test_gradients_match_central_differences(net, float64):
    x, y = _data(n=12)
    model = Sequential([Input((5,))] + NETS[net]())
    model.compile("sgd", "categorical_crossentropy")
    _randomize(model)
    state = model.get_weights()

    def loss_at(weights):
        model.set_weights(weights)
        fastdense.utils.set_random_seed(3)  # the same noise draws every time
        return model.loss_and_gradients(x, y)

    _, grads = loss_at(state)
    trainable = {id(w) for w in model.trainable_weights}
    index = [i for i, w in enumerate(model.weights) if id(w) in trainable]
    assert len(grads) == len(index)
    eps = 1e-6
    for g, i in zip(grads, index):
        num = np.zeros_like(g)
        for j in np.ndindex(g.shape):
            up = [w.copy() for w in state]
            down = [w.copy() for w in state]
            up[i][j] += eps
            down[i][j] -= eps
            num[j] = (loss_at(up)[0] - loss_at(down)[0]) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-7, err_msg=f"weight {i}")


def test_float32_gradients_agree_with_float64():
    x, y = _data(n=12)
    grads = {}
    for dtype in ("float64", "float32"):
        fastdense.config.set_floatx(dtype)
        model = Sequential([Input((5,))] + NETS["batchnorm"]())
        model.compile("sgd", "categorical_crossentropy")
        _randomize(model)
        grads[dtype] = model.loss_and_gradients(x, y)[1]
    fastdense.config.set_floatx("float32")
    for a, b in zip(grads["float32"], grads["float64"]):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Frozen layers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", ["sgd", "adam", "rmsprop"])
def test_frozen_layers_never_change_and_the_others_train(opt):
    x, y = _data()
    model = Sequential([Input((5,)), Dense(6, activation="tanh", trainable=False),
                        BatchNormalization(trainable=False), Dense(4, activation="relu"),
                        BatchNormalization(), Dense(3, activation="softmax")])
    _randomize(model)
    model.compile(optimizer=opt, loss="categorical_crossentropy")
    before = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = model.get_weights()
    for i in range(6):  # the frozen Dense and the frozen BatchNormalization (statistics too)
        np.testing.assert_array_equal(after[i], before[i], err_msg=f"weight {i}")
    for i in range(6, 14):  # the rest, moving statistics included, moved
        assert not np.array_equal(after[i], before[i]), i
    assert len(model.trainable_weights) == 6 and len(model.non_trainable_weights) == 8
    assert len(model.optimizer._slots) in (0, sum(w.size for w in model.trainable_weights) *
                                           model.optimizer.n_slots)


def test_frozen_batchnorm_runs_in_inference_mode_while_training(float64):
    x, y = _data(n=10)
    model = Sequential([Input((5,)), BatchNormalization(trainable=False)])
    _randomize(model)
    gamma, beta, mm, mv = model.get_weights()
    model.compile("sgd", "mse")
    loss, grads = model.loss_and_gradients(x, np.zeros_like(x))
    assert grads == []
    np.testing.assert_allclose(loss, np.mean(((x - mm) / np.sqrt(mv + 1e-3) * gamma + beta) ** 2),
                               rtol=1e-12)


def test_summary_counts_non_trainable_params():
    model = Sequential([Input((5,)), Dense(4, trainable=False), BatchNormalization(),
                        Normalization(), Dense(2)])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    # trainable: BN gamma+beta 8, last Dense 10; non-trainable: frozen Dense 24, BN stats 8,
    # Normalization mean+variance+count 9
    assert " Total params: 59 " in text
    assert " Trainable params: 18 (72.00 B)" in text
    assert " Non-trainable params: 41 (" in text


def test_trainable_change_takes_effect_at_compile_and_refuses_a_silent_change():
    x, y = _data()
    model = Sequential([Input((5,)), Dense(4, activation="tanh"), Dense(3, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    model.layers[0].trainable = False  # before any training: taken as Keras's first fit does
    kernel = model.get_weights()[0]
    model.fit(x, y, verbose=0)
    np.testing.assert_array_equal(model.get_weights()[0], kernel)
    model.layers[0].trainable = True
    with pytest.raises(ValueError, match=r"call `compile\(\)` again.*dense"):
        model.fit(x, y, verbose=0)
    model.compile("sgd", "categorical_crossentropy")
    model.fit(x, y, verbose=0)
    assert not np.array_equal(model.get_weights()[0], kernel)


def test_custom_loop_gives_fits_weights_with_batchnorm():
    x, y = _data(n=48)
    models = []
    for _ in range(2):
        fastdense.utils.set_random_seed(4)
        m = Sequential([Input((5,)), Dense(6), BatchNormalization(), Activation("relu"),
                        Dense(3, activation="softmax")])
        m.compile(optimizer=optimizers.Adam(0.01), loss="categorical_crossentropy")
        models.append(m)
    fitted, looped = models
    fitted.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for _ in range(2):
        for s in range(0, len(x), 16):
            _, grads = looped.loss_and_gradients(x[s:s + 16], y[s:s + 16])
            looped.optimizer.apply_gradients(zip(grads, looped.trainable_variables))
    assert [w.shape for w in looped.non_trainable_weights] == [(6,), (6,)]
    for a, b in zip(looped.get_weights(), fitted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Noise layers
# ---------------------------------------------------------------------------------------------
def test_noise_layers_are_the_identity_at_inference():
    x, _ = _data()
    base = Sequential([Input((5,)), Dense(4)])
    noisy = Sequential([Input((5,)), GaussianNoise(1.0), Dense(4), GaussianDropout(0.5)])
    noisy.set_weights(base.get_weights())
    np.testing.assert_array_equal(noisy.predict(x, verbose=0), base.predict(x, verbose=0))


@pytest.mark.parametrize("layer,expected", [(lambda: GaussianNoise(0.5), 0.25),
                                            (lambda: GaussianDropout(0.2), 0.25)])
def test_noise_has_keras_statistics_in_training(layer, expected, float64):
    # a frozen identity after the noise, and y = x = 1: the mse is the noise's mean square
    # (GaussianNoise: stddev^2; GaussianDropout: rate / (1 - rate))
    n, d = 4000, 25
    model = Sequential([Input((d,)), layer(), Dense(d, use_bias=False, trainable=False)])
    model.set_weights([np.eye(d)])
    model.compile("sgd", "mse")
    ones = np.ones((n, d))
    loss, _ = model.loss_and_gradients(ones, ones)
    assert abs(loss - expected) < 0.01


def test_noise_is_reproducible_for_a_seed_and_the_same_for_any_thread_count():
    x, y = _data(n=64)

    def run(threads, seed=7):
        fastdense.config.set_num_threads(threads)
        fastdense.utils.set_random_seed(seed)
        m = Sequential([Input((5,)), GaussianNoise(0.3), Dense(32, activation="relu"),
                        GaussianDropout(0.2), Dense(3, activation="softmax")])
        m.compile("sgd", "categorical_crossentropy")
        m.fit(x, y, batch_size=8, epochs=2, verbose=0)
        return m.get_weights()

    before = fastdense.config.num_threads()
    try:
        one, two, again, other = run(1), run(2), run(1), run(1, seed=8)
    finally:
        fastdense.config.set_num_threads(before)
    for a, b, c in zip(one, two, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not all(np.array_equal(a, b) for a, b in zip(one, other))


# ---------------------------------------------------------------------------------------------
# Saving, configs, export
# ---------------------------------------------------------------------------------------------
def _all_layers_model():
    norm = Normalization()
    model = Sequential([Input((5,)), norm, Rescaling(0.5, 0.1), GaussianNoise(0.1),
                        Dense(6, activation="tanh", trainable=False), BatchNormalization(),
                        LayerNormalization(center=False), GaussianDropout(0.1),
                        Dense(3, activation="softmax")])
    x, y = _data()
    norm.adapt(x)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return model, x, y


def test_keras_file_round_trip_keeps_every_weight_and_the_training_state(tmp_path):
    model, x, y = _all_layers_model()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    assert [l.trainable for l in loaded.layers] == [l.trainable for l in model.layers]
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # the optimizer's state (per trainable weight) comes back: training goes on the same way
    fastdense.utils.set_random_seed(2)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    fastdense.utils.set_random_seed(2)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_file_and_config_round_trip(tmp_path):
    model, x, _ = _all_layers_model()
    clone = Sequential.from_config(model.get_config())
    clone.build((None, 5))
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    clone.load_weights(path)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))
    given = Sequential([Input((5,)), Normalization(mean=[1, 2, 3, 4, 5], variance=[2.0] * 5)])
    again = Sequential.from_config(given.get_config())
    np.testing.assert_array_equal(again.predict(x, verbose=0), given.predict(x, verbose=0))


def test_onnx_export_of_the_new_layers_matches_predict(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, x, _ = _all_layers_model()
    path = tmp_path / "m.onnx"
    model.export(str(path), format="onnx", verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bad arguments: one clear error each
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: BatchNormalization(momentum=1.5), r"momentum.*Received: momentum=1.5"),
    (lambda: BatchNormalization(momentum="a"), r"momentum.*Received: momentum='a'"),
    (lambda: BatchNormalization(epsilon=0), r"epsilon.*Received: epsilon=0"),
    (lambda: BatchNormalization(epsilon=float("nan")), r"epsilon.*Received: epsilon=nan"),
    (lambda: BatchNormalization(axis=0), r"axis.*Received: axis=0"),
    (lambda: BatchNormalization(center="yes"), r"center.*Received: center='yes'"),
    (lambda: BatchNormalization(scale=1), r"scale.*Received: scale=1"),
    (lambda: BatchNormalization(renorm=True), r"renorm.*Received: renorm=True"),
    (lambda: BatchNormalization(gamma_regularizer="l2"), r"gamma_regularizer.*Received"),
    (lambda: BatchNormalization(beta_initializer="nope"), r"nope"),
    (lambda: LayerNormalization(epsilon=-1.0), r"epsilon.*Received: epsilon=-1.0"),
    (lambda: LayerNormalization(axis=[0, 1]), r"axis.*Received: axis=\[0, 1\]"),
    (lambda: LayerNormalization(rms_scaling=True), r"rms_scaling.*Received"),
    (lambda: LayerNormalization(center=None), r"center.*Received: center=None"),
    (lambda: Normalization(mean=1.0), r"both `mean` and `variance`"),
    (lambda: Normalization(mean=[1.0, 2.0], variance=[1.0]), r"same shape|one shape"),
    (lambda: Normalization(mean=0.0, variance=-1.0), r"variance.*>= 0"),
    (lambda: Normalization(mean=float("inf"), variance=1.0), r"finite"),
    (lambda: Normalization(invert=True), r"invert.*Received: invert=True"),
    (lambda: Normalization(axis=None), r"axis.*Received: axis=None"),
    (lambda: Rescaling("half"), r"scale.*Received: scale='half'"),
    (lambda: Rescaling(1.0, offset=float("inf")), r"offset.*Received: offset=inf"),
    (lambda: GaussianNoise(-0.1), r"stddev.*Received: stddev=-0.1"),
    (lambda: GaussianNoise(0.1, seed=-2), r"seed.*Received: seed=-2"),
    (lambda: GaussianDropout(1.0), r"rate.*Received: rate=1.0"),
    (lambda: GaussianDropout(-0.5), r"rate.*Received: rate=-0.5"),
])
def test_bad_arguments_are_refused_clearly(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_adapt_data_and_shapes_are_refused_clearly():
    norm = Normalization()
    with pytest.raises(ValueError, match=r"data.shape=\(0, 3\)"):
        norm.adapt(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"NaN or Inf"):
        norm.adapt(np.array([[1.0, np.nan]]))
    with pytest.raises(TypeError, match=r"data.*dtype"):
        norm.adapt(np.array([["a", "b"]]))
    norm.adapt(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"built for inputs of 3 features.*\(4, 2\)"):
        norm.adapt(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"nothing to adapt"):
        Normalization(mean=0.0, variance=1.0).adapt(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"3 means for inputs of 4 features"):
        Sequential([Input((4,)), Normalization(mean=[1, 2, 3], variance=[1, 1, 1])])
    with pytest.raises(ValueError, match=r"flat inputs.*Flatten"):
        Sequential([Input((2, 3)), BatchNormalization()])


def test_the_keras_file_we_write_has_keras_layout(tmp_path):
    """What Keras 3 reads (checked by hand: Keras 3.15 loads such a file and predicts the same to
    1e-7): each layer's weights under layers/<name>/vars in Keras's order (count an int64
    scalar), the layers' Keras config keys, and one optimizer variable pair per trainable weight."""
    import json
    import zipfile

    import h5py

    model, _, _ = _all_layers_model()
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
        (tmp_path / "w.h5").write_bytes(zf.read("model.weights.h5"))
    entries = {e["class_name"]: e["config"] for e in config["config"]["layers"]}
    assert entries["BatchNormalization"]["momentum"] == 0.99
    assert entries["BatchNormalization"]["epsilon"] == 1e-3
    assert entries["LayerNormalization"]["axis"] == [-1]
    assert entries["Normalization"]["mean"] is None and entries["Normalization"]["invert"] is False
    assert entries["Rescaling"]["scale"] == 0.5 and entries["Rescaling"]["offset"] == 0.1
    assert entries["GaussianNoise"]["stddev"] == 0.1 and entries["GaussianDropout"]["rate"] == 0.1
    dense = [e["config"] for e in config["config"]["layers"] if e["class_name"] == "Dense"]
    assert [d["trainable"] for d in dense] == [False, True]
    with h5py.File(tmp_path / "w.h5", "r") as f:
        bn = f["layers/batch_normalization/vars"]
        np.testing.assert_array_equal(bn["2"][()], model.layers[4].moving_mean)
        np.testing.assert_array_equal(bn["3"][()], model.layers[4].moving_variance)
        count = f["layers/normalization/vars/2"]
        assert count.shape == () and count.dtype == np.int64
        assert len(f["layers/layer_normalization/vars"]) == 1  # gamma only (center=False)
        n_trainable = len(model.trainable_weights)
        assert n_trainable == 5
        assert len(f["optimizer/vars"]) == 2 + 2 * n_trainable  # iterations, lr, Adam's m and v
        assert f["optimizer/vars/2"].shape == model.trainable_weights[0].shape


def test_model_trainable_freezes_every_layer(tmp_path):
    x, y = _data()
    model = Sequential([Input((5,)), Dense(4), BatchNormalization(), Dense(3, activation="softmax")],
                       trainable=False)
    assert not model.trainable and not any(l.trainable for l in model.layers)
    assert model.trainable_weights == [] and model.get_config()["trainable"] is False
    model.compile("adam", "categorical_crossentropy")
    before = model.get_weights()
    model.fit(x, y, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.save(tmp_path / "m.keras")
    assert not load_model(tmp_path / "m.keras").trainable
    model.trainable = True
    model.compile("sgd", "categorical_crossentropy")
    model.fit(x, y, verbose=0)
    assert not np.array_equal(before[0], model.get_weights()[0])
