"""Issue 12's practitioner shapes: one epoch of fastdense beside the same training loop in PyTorch
eager (when installed; fastdense alone otherwise), with PyTorch on 1 and on 2 threads, the three
interleaved round by round.

Both sides do the same work per batch and no more: forward, loss, backward, optimizer step, on
the same random data in the same order (no shuffling, no validation, no metrics). fastdense runs
one `fit` call per epoch (its input checks included) with its default threads. Every round
trains a freshly built model for its first epoch: on random labels a network trained on keeps
collapsing, its relus die and Adam's moments underflow to denormals, which makes later epochs of
any framework several times slower (measured here: 0.7 s, then 1.6, 4.0, 3.3 s per epoch). Runs after the
other benchmarks (file order), since importing PyTorch starts its thread pools.
"""
import time

import numpy as np
import pytest

import fastdense
from fastdense import layers

# name: (input width, hidden widths, activation, outputs, loss, optimizer, batch, rows)
SHAPES = {
    "seed 784-100-10 sigmoid sgd b32": (784, [100], "sigmoid", 10, "cce", "sgd", 32, 48000),
    "784-512-512-10 relu adam b32": (784, [512, 512], "relu", 10, "cce", "adam", 32, 12000),
    "784-512-512-10 relu adam b256": (784, [512, 512], "relu", 10, "cce", "adam", 256, 24000),
    "20-64-64-1 relu adam b32 bce": (20, [64, 64], "relu", 1, "bce", "adam", 32, 100000),
    "100-256x4-1 tanh adam b64 mse": (100, [256] * 4, "tanh", 1, "mse", "adam", 64, 50000),
    "784-1024-1024-10 relu sgd b1024": (784, [1024, 1024], "relu", 10, "cce", "sgd", 1024, 24000),
}
LOSSES = {"cce": "sparse_categorical_crossentropy", "bce": "binary_crossentropy", "mse": "mse"}
ROUNDS = 3
SETTLE = 0.25  # seconds between runs, so that no run inherits another's spinning threads


def _data(shape):
    d, _, _, out, loss, _, _, n = shape
    rng = np.random.default_rng(0)
    x = rng.random((n, d), dtype=np.float32)
    if loss == "cce":
        y = rng.integers(0, out, n)
    elif loss == "bce":
        y = rng.integers(0, 2, (n, 1)).astype(np.float32)
    else:
        y = rng.normal(size=(n, 1)).astype(np.float32)
    return x, y


def _fastdense_model(shape):
    d, hidden, act, out, loss, opt, _, _ = shape
    last = "softmax" if loss == "cce" else ("sigmoid" if loss == "bce" else None)
    model = fastdense.Sequential([fastdense.Input((d,))]
                                 + [layers.Dense(h, activation=act) for h in hidden]
                                 + [layers.Dense(out, activation=last)])
    model.compile(optimizer=opt, loss=LOSSES[loss])
    return model


def _torch_epoch(torch, shape, x, y):
    """A function that trains a fresh PyTorch net for one epoch and returns the seconds the
    epoch took (building the net and its optimizer is not timed)."""
    d, hidden, act, out, loss, opt, batch, _ = shape
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
    lossf = {"cce": torch.nn.CrossEntropyLoss(), "bce": torch.nn.BCEWithLogitsLoss(),
             "mse": torch.nn.MSELoss()}[loss]

    def run():
        mods, width = [], d
        for h in hidden:
            mods += [torch.nn.Linear(width, h), acts[act]()]
            width = h
        net = torch.nn.Sequential(*mods, torch.nn.Linear(width, out))
        optimizer = (torch.optim.SGD(net.parameters(), lr=0.01) if opt == "sgd"
                     else torch.optim.Adam(net.parameters(), lr=0.001))
        t0 = time.perf_counter()
        for s in range(0, len(x), batch):
            optimizer.zero_grad()
            lossf(net(x[s:s + batch]), y[s:s + batch]).backward()
            optimizer.step()
        return time.perf_counter() - t0

    return run


@pytest.mark.parametrize("name", list(SHAPES))
def test_fastdense_shape_epoch(benchmark, name):
    """One fit() epoch of a fresh fastdense model; before each round (untimed by the benchmark),
    one epoch of PyTorch on 1 thread and one on 2 threads, so the three alternate and see the
    same state of the machine. Their times go to extra_info ("references"), where conftest.py's
    summary prints the ratios; the issue's figure is the minimum over the rounds."""
    shape = SHAPES[name]
    batch = shape[6]
    benchmark.group = f"shape: {name}"
    x, y = _data(shape)
    references = {}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        epoch = _torch_epoch(torch, shape, tx, ty)
        references = {f"torch {t} thread{'s' if t > 1 else ''}": (t, epoch) for t in (1, 2)}
    times = {ref: [] for ref in references}

    def fresh():
        for ref, (threads, epoch) in references.items():
            torch.set_num_threads(threads)
            time.sleep(SETTLE)
            times[ref].append(epoch())
        time.sleep(SETTLE)
        return (_fastdense_model(shape),), {}

    benchmark.pedantic(lambda model: model.fit(x, y, batch_size=batch, epochs=1, shuffle=False,
                                               verbose=0),
                       setup=fresh, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["references"] = {
        ref: {"times_s": t[-ROUNDS:], "median_s": float(np.median(t[-ROUNDS:])),
              "min_s": float(min(t[-ROUNDS:]))} for ref, t in times.items()}
