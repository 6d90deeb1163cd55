"""The reference workload in PyTorch and Keras 3, when installed (skipped otherwise).

This file runs last (pytest orders files by name): importing PyTorch starts its own thread pools,
which would otherwise run beside the other benchmarks of the session.
"""
import numpy as np
import pytest

@pytest.mark.benchmark(group="epoch (784-100-10, batch 32, with validation)")
def test_torch_epoch(benchmark, fashion):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    x, y, xv, yv = (torch.from_numpy(a) for a in fashion)
    net = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.Sigmoid(), torch.nn.Linear(100, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    lossf = torch.nn.CrossEntropyLoss()

    def epoch():
        perm = torch.randperm(len(x))
        for s in range(0, len(x), 32):
            idx = perm[s:s + 32]
            opt.zero_grad()
            loss = lossf(net(x[idx]), y[idx].argmax(1))
            loss.backward()
            opt.step()
        with torch.no_grad():
            for s in range(0, len(xv), 32):
                lossf(net(xv[s:s + 32]), yv[s:s + 32].argmax(1))

    benchmark.pedantic(epoch, rounds=2, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="epoch (784-100-10, batch 32, with validation)")
def test_keras_epoch(benchmark, fashion):
    keras = pytest.importorskip("keras")
    x, y, xv, yv = fashion
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(100, activation="sigmoid"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    benchmark.pedantic(lambda: model.fit(x, y, epochs=1, validation_data=(xv, yv), verbose=0),
                       rounds=2, iterations=1, warmup_rounds=1)


