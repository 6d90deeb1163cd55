"""A `.keras` file written by real Keras 3 on the torch backend (tools/keras_interop.py) loads in
fastdense, predicts what Keras predicted, and keeps its Adam state and compile config."""
from pathlib import Path

import numpy as np

import fastdense

DATA = Path(__file__).parent / "data"


def test_keras_torch_backend_file_loads_and_predicts():
    ref = np.load(DATA / "keras_torch_backend_adam.npz")
    model = fastdense.models.load_model(DATA / "keras_torch_backend_adam.keras")
    np.testing.assert_allclose(model.predict(ref["x"], verbose=0), ref["predict"], rtol=1e-5, atol=1e-6)
    assert [type(l).__name__ for l in model.layers] == ["Dense", "Dropout", "Dense", "Dense"]
    assert model.layers[2].activation.name == "gelu"
    assert isinstance(model.optimizer, fastdense.optimizers.Adam)
    assert model.optimizer.iterations == 6           # 4 fastdense steps + 2 Keras steps
    assert abs(model.optimizer.learning_rate - 0.003) < 1e-9
    # It trains on from there.
    before = model.get_weights()
    model.fit(ref["x"], ref["predict"].argmax(1), epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
