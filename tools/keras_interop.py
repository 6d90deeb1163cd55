"""Round trip between fastdense and real Keras 3 (run by hand where Keras is installed).

    python tools/keras_interop.py save      # fastdense writes /tmp/fd_model.keras + inputs
    KERAS_BACKEND=torch python tools/keras_interop.py keras   # Keras loads it, checks, trains, re-saves
    python tools/keras_interop.py load      # fastdense loads Keras's file and checks predictions

tests/data/keras_torch_backend_adam.{keras,npz} were produced by the `keras` step (Keras 3 on the
torch backend, 2026-11-26); tests/test_saving_interop.py loads them in CI.
"""
import sys

import numpy as np


def save():
    import fastdense
    from fastdense import Sequential, layers, optimizers

    rng = np.random.default_rng(0)
    x = rng.random((64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    m = Sequential([layers.Dense(12, activation="relu", input_shape=(8,)), layers.Dropout(0.1),
                    layers.Dense(12, activation="gelu"), layers.Dense(3, activation="softmax")])
    m.compile(optimizer=optimizers.Adam(0.003), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    m.fit(x, y, epochs=2, verbose=0)
    m.save("/tmp/fd_model.keras")
    np.save("/tmp/fd_x.npy", x)
    np.save("/tmp/fd_pred.npy", m.predict(x, verbose=0))


def keras_step():
    import keras

    m = keras.models.load_model("/tmp/fd_model.keras")
    x, p = np.load("/tmp/fd_x.npy"), np.load("/tmp/fd_pred.npy")
    q = np.asarray(m.predict(x, verbose=0))
    print("Keras predicts fastdense's model; max abs difference:", np.abs(p - q).max())
    assert np.abs(p - q).max() < 1e-5
    m.fit(x, np.argmax(p, 1), epochs=1, verbose=0)
    m.save("/tmp/k_model.keras")
    np.save("/tmp/k_pred.npy", np.asarray(m.predict(x, verbose=0)))


def load():
    import fastdense

    m = fastdense.models.load_model("/tmp/k_model.keras")
    diff = np.abs(m.predict(np.load("/tmp/fd_x.npy"), verbose=0) - np.load("/tmp/k_pred.npy")).max()
    print("fastdense predicts Keras's model; max abs difference:", diff)
    assert diff < 1e-5


if __name__ == "__main__":
    {"save": save, "keras": keras_step, "load": load}[sys.argv[1]]()
