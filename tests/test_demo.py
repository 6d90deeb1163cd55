"""Tests of fastdense.demo: the reference Fashion-MNIST workflow and its stratified split.

The end-to-end tests train on the real Debian data (/usr/share/datasets/fashion-mnist,
installed here and in CI) through fastdense's public model API, in-process.
"""

import contextlib
import io
import math

import numpy as np
import pytest

from fastdense import demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy"}


# ------------------------------------------------------------------ stratified_split


def labelled_rows(counts):
    """x row i is [i, i, i] and y[i] its class; classes shuffled together."""
    y = np.concatenate([np.full(count, label) for label, count in enumerate(counts)])
    y = np.random.default_rng(123).permutation(y)
    x = np.repeat(np.arange(len(y))[:, None], 3, axis=1)
    return x, y


def test_split_preserves_class_proportions():
    counts = [50, 37, 13, 100, 7, 1, 2]
    x, y = labelled_rows(counts)
    x_train, x_test, y_train, y_test = demo.stratified_split(x, y, test_size=0.2, seed=0)
    for label, count in enumerate(counts):
        n_test = int(np.sum(y_test == label))
        assert abs(n_test - 0.2 * count) <= 1, (label, n_test, count)
        assert n_test + int(np.sum(y_train == label)) == count
    assert len(x_train) == len(y_train) and len(x_test) == len(y_test)


def test_split_is_disjoint_complete_and_keeps_rows_with_labels():
    x, y = labelled_rows([40, 60, 25])
    x_train, x_test, y_train, y_test = demo.stratified_split(x, y, test_size=0.3, seed=5)
    train_ids, test_ids = x_train[:, 0], x_test[:, 0]
    assert not set(train_ids) & set(test_ids)
    assert sorted(np.concatenate([train_ids, test_ids])) == list(range(len(y)))
    np.testing.assert_array_equal(y_train, y[train_ids])
    np.testing.assert_array_equal(y_test, y[test_ids])
    assert x_train.shape[1:] == x.shape[1:]


def test_split_exact_on_fashion_mnist_sized_labels():
    y = np.repeat(np.arange(10, dtype=np.uint8), 6000)
    x = np.zeros((60000, 2, 2), dtype=np.uint8)
    x_train, x_test, y_train, y_test = demo.stratified_split(x, y, test_size=0.2, seed=42)
    assert x_train.shape == (48000, 2, 2) and x_test.shape == (12000, 2, 2)
    assert np.bincount(y_test).tolist() == [1200] * 10
    assert np.bincount(y_train).tolist() == [4800] * 10
    assert y_train.dtype == np.uint8 and x_train.dtype == np.uint8
    # Shuffled across classes, so a prefix (--train-samples) is roughly stratified too.
    assert np.bincount(y_train[:6000], minlength=10).min() > 450


def test_split_is_deterministic_for_a_seed():
    x, y = labelled_rows([30, 30, 30])
    first = demo.stratified_split(x, y, seed=7)
    second = demo.stratified_split(x, y, seed=7)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = demo.stratified_split(x, y, seed=8)
    assert not np.array_equal(first[0], other[0])


def test_split_does_not_modify_inputs():
    x, y = labelled_rows([20, 20])
    x_before, y_before = x.copy(), y.copy()
    x_train, *_ = demo.stratified_split(x, y, seed=1)
    x_train[...] = -1
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


def test_split_accepts_lists_and_string_labels():
    x = [[i] for i in range(10)]
    y = ["a", "b"] * 5
    x_train, x_test, y_train, y_test = demo.stratified_split(x, y, test_size=0.4, seed=0)
    assert sorted(y_test.tolist()) == ["a", "a", "b", "b"]
    assert len(x_train) == 6


@pytest.mark.parametrize("test_size", [0, 0.0, 1, 1.0, 1.5, -0.2, True, "0.2", None, float("nan")])
def test_split_rejects_bad_test_size(test_size):
    x, y = labelled_rows([10, 10])
    with pytest.raises(ValueError, match="test_size"):
        demo.stratified_split(x, y, test_size=test_size)


def test_split_rejects_bad_labels():
    x, y = labelled_rows([10, 10])
    with pytest.raises(ValueError, match=r"Received: len\(x\)=20, len\(y\)=19"):
        demo.stratified_split(x, y[:-1])
    with pytest.raises(ValueError, match="1-D"):
        demo.stratified_split(x, np.eye(2)[y])
    with pytest.raises(ValueError, match="non-empty"):
        demo.stratified_split(x[:1], y[:1], test_size=0.2)


# ------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    "argv",
    [
        ["--epochs", "0"],
        ["--epochs", "two"],
        ["--train-samples", "0"],
        ["--verbose", "3"],
        ["--unknown"],
    ],
)
def test_bad_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_out_must_not_be_a_file(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(SystemExit):
        demo.main(["--out", str(a_file), "--epochs", "1"])
    assert "--out must be a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "plots"  # does not exist yet: main creates it
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = demo.main(
            ["--epochs", "2", "--train-samples", "6000", "--out", str(out), "--verbose", "0"]
        )
    return result, out, printed.getvalue()


def test_quick_run_history(quick_run):
    result, _, _ = quick_run
    history = result["history"]
    assert HISTORY_KEYS <= set(history)
    for key in HISTORY_KEYS:
        assert len(history[key]) == 2, key
        assert all(isinstance(v, float) and math.isfinite(v) for v in history[key]), key
    assert result["epochs"] == 2
    assert result["train_samples"] == 6000
    assert result["val_samples"] == 12000


def test_quick_run_learns(quick_run):
    result, _, _ = quick_run
    assert result["val_accuracy"] > 0.5
    assert result["val_loss"] < math.log(10)  # better than uniform guessing
    history = result["history"]
    assert history["loss"][1] < history["loss"][0]
    # evaluate() after fit sees the same weights as the last epoch's validation.
    assert result["val_accuracy"] == pytest.approx(history["val_accuracy"][-1], abs=1e-6)
    assert result["val_loss"] == pytest.approx(history["val_loss"][-1], rel=1e-4)


def test_quick_run_reports(quick_run):
    result, _, printed = quick_run
    assert result["seconds_per_epoch"] > 0
    assert result["fit_seconds"] == pytest.approx(2 * result["seconds_per_epoch"])
    assert f"{result['val_accuracy']:.4f}" in printed
    assert f"{result['val_loss']:.4f}" in printed
    assert "per epoch" in printed


def test_quick_run_writes_png_plots(quick_run):
    pytest.importorskip("matplotlib")
    result, out, _ = quick_run
    assert set(result["paths"]) == {"loss", "accuracy"}
    for name in ("loss", "accuracy"):
        path = out / f"{name}.png"
        assert result["paths"][name] == str(path)
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5000  # a drawn figure, not an empty image
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "loss.png"]


def test_without_matplotlib_still_succeeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "_load_figure_tools", lambda: None)
    result = demo.main(
        ["--epochs", "1", "--train-samples", "500", "--out", str(tmp_path), "--verbose", "0"]
    )
    assert result["paths"] == {}
    assert list(tmp_path.iterdir()) == []
    assert "pip install fastdense[demo]" in capsys.readouterr().out
    assert len(result["history"]["loss"]) == 1


def test_cli_reports_missing_data_and_returns_1(tmp_path, capsys):
    status = demo.cli(["--data", str(tmp_path), "--epochs", "1"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert str(tmp_path) in err
    assert "apt-get install dataset-fashion-mnist" in err
