"""Reference workflow: a 784-100-10 network on Fashion-MNIST, with learning-curve plots.

Run it with::

    python -m fastdense.demo                       # 40 epochs, plots in the current folder
    python -m fastdense.demo --epochs 2 --train-samples 6000 --out /tmp/run

`python -m fastdense.demo` runs `cli()`; `main(argv)` runs the same workflow in-process
and returns its results. The model code uses only fastdense's public, Keras-compatible
API, so it runs unchanged under Keras with `fastdense` replaced by `keras`. The plots
need matplotlib (`pip install fastdense[demo]`); without it, training still runs and
the plots are skipped with a note.
"""

import argparse
import math
import os
import sys
import time
import warnings

import numpy as np

__all__ = ["cli", "main", "stratified_split"]

_NUM_CLASSES = 10
_MATPLOTLIB_NOTE = (
    "Note: matplotlib is not installed, so loss.png and accuracy.png were not written; "
    "get the plots with `pip install fastdense[demo]` (or `pip install matplotlib`)."
)


def stratified_split(x, y, test_size=0.2, seed=42):
    """Split `x` and `y` into train and test parts holding each class in the same proportion.

    Each class contributes `round(test_size * count)` of its rows, drawn at random, to the
    test part and the rest to the train part. Both parts are then shuffled, so any prefix
    of the train part is itself roughly stratified. The inputs are not modified.

    Args:
        x: array-like of samples, first axis the sample axis.
        y: 1-D array-like of class labels (any values `np.unique` can sort), `len(x)` long.
        test_size: fraction of each class that goes to the test part, in (0, 1).
        seed: seed of the NumPy generator drawing the split (an int, or None for a
            different split each call). The same seed gives the same split.

    Returns:
        `(x_train, x_test, y_train, y_test)`, as `sklearn.model_selection.train_test_split`
        orders them: new NumPy arrays.

    Raises:
        ValueError: `test_size` is not in (0, 1), `y` is not 1-D, the lengths differ, or one
            of the parts would be empty.

    Example:

    ```python
    x_train, x_val, y_train, y_val = stratified_split(x, y, test_size=0.2, seed=42)
    ```
    """
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.floating)):
        raise ValueError(
            f"test_size must be a float in (0, 1). Received: test_size={test_size!r}"
        )
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(
            f"test_size must be a float in (0, 1). Received: test_size={test_size!r}"
        )
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(
            "y must be a 1-D array of class labels (not one-hot). "
            f"Received: y.shape={y.shape}"
        )
    if x.ndim == 0 or len(x) != len(y):
        raise ValueError(
            "x and y must have the same number of samples. "
            f"Received: len(x)={len(x) if x.ndim else 'scalar'}, len(y)={len(y)}"
        )
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(y, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    train_parts, test_parts = [], []
    start = 0
    for count in counts:
        members = rng.permutation(order[start:start + count])
        start += count
        n_test = int(math.floor(float(test_size) * count + 0.5))
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    train_idx = rng.permutation(np.concatenate(train_parts)) if train_parts else np.empty(0, int)
    test_idx = rng.permutation(np.concatenate(test_parts)) if test_parts else np.empty(0, int)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ValueError(
            f"Splitting {len(y)} samples with test_size={test_size!r} leaves "
            f"{len(train_idx)} train and {len(test_idx)} test samples; both must be "
            f"non-empty. Received: test_size={test_size!r}"
        )
    return x[train_idx], x[test_idx], y[train_idx], y[test_idx]


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fastdense.demo",
        description=(
            "Train a 784-100-10 sigmoid/softmax network with SGD on a stratified 80/20 "
            "split of the Fashion-MNIST training images, report validation loss and "
            "accuracy, and plot the learning curves."
        ),
    )
    parser.add_argument("--epochs", type=_positive_int, default=40,
                        help="training epochs (default: 40)")
    parser.add_argument("--out", default=".",
                        help="folder for loss.png and accuracy.png, created if missing "
                             "(default: current folder)")
    parser.add_argument("--data", default=None,
                        help="folder holding the four Fashion-MNIST .gz files (default: "
                             "search $FASTDENSE_DATA, the user cache and "
                             "/usr/share/datasets/fashion-mnist, else download)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the split and of the model (default: 42)")
    parser.add_argument("--train-samples", type=_positive_int, default=None, metavar="N",
                        help="train on only the first N rows of the training split "
                             "(for quick runs)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="fit() progress output: 0 silent, 1 progress bar, "
                             "2 one line per epoch (default: 1)")
    return parser


def _load_figure_tools():
    """Return (Figure, FigureCanvasAgg, MaxNLocator), or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    return Figure, FigureCanvasAgg, MaxNLocator


def _save_curve(tools, train, val, quantity, path):
    """Plot train and validation curves of one quantity to a PNG file, atomically."""
    Figure, FigureCanvasAgg, MaxNLocator = tools
    figure = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(figure)  # draw with the non-interactive Agg backend, no pyplot state
    axes = figure.add_subplot()
    epochs = np.arange(1, len(train) + 1)
    axes.plot(epochs, train, label="Train")
    if val is not None:
        axes.plot(epochs, val, label="Validation")
    axes.set_title(f"Model {quantity.lower()}")
    axes.set_xlabel("Epoch")
    axes.set_ylabel(quantity)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="best")
    figure.tight_layout()
    from ._atomic import atomic_write

    atomic_write(path, lambda out: figure.savefig(out, format="png", dpi=100))


def main(argv=None):
    """Run the reference workflow.

    Args:
        argv: command-line arguments without the program name (None: `sys.argv[1:]`).

    Returns:
        dict with keys `history` (`history.history` of the fit: `{key: [float per
        epoch]}`), `val_loss` and `val_accuracy` (floats from `model.evaluate` on the
        validation split), `seconds_per_epoch` and `fit_seconds` (wall time of `fit`),
        `epochs` (epochs run), `train_samples` and `val_samples`, and `paths`
        (`{"loss": path, "accuracy": path}` of the plots written; empty when matplotlib
        is missing).
    """
    parser = _build_parser()
    args = parser.parse_args(argv)

    import fastdense
    import fastdense.datasets
    from fastdense import Sequential
    from fastdense.layers import Dense

    out_dir = os.path.abspath(args.out)
    # Fail on a bad --out now, not after a long training run.
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        parser.error(f"--out must be a folder, not a file. Received: --out={args.out}")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        parser.error(
            f"--out must be a folder that exists or can be created ({err.strerror}). "
            f"Received: --out={args.out}"
        )
    figure_tools = _load_figure_tools()

    (x_train_all, y_train_all), _ = fastdense.datasets.fashion_mnist.load_data(path=args.data)
    x_train, x_val, y_train, y_val = stratified_split(
        x_train_all, y_train_all, test_size=0.2, seed=args.seed
    )
    if args.train_samples is not None:
        if args.train_samples > len(x_train):
            parser.error(
                f"--train-samples must be at most {len(x_train)} (the size of the training "
                f"split). Received: --train-samples={args.train_samples}"
            )
        x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    x_train = x_train.reshape(-1, 784).astype(np.float32) / np.float32(255)
    x_val = x_val.reshape(-1, 784).astype(np.float32) / np.float32(255)

    y_train_encoded = fastdense.utils.to_categorical(y_train, num_classes=_NUM_CLASSES)
    y_val_encoded = fastdense.utils.to_categorical(y_val, num_classes=_NUM_CLASSES)

    fastdense.utils.set_random_seed(args.seed)
    with warnings.catch_warnings():
        # Like Keras 3, fastdense may advise `Input((784,))` over `input_shape=`; this
        # workflow keeps the classic tutorial spelling on purpose, so that advice is noise.
        warnings.filterwarnings("ignore", message=".*input_shape", category=UserWarning)
        model = Sequential()
        model.add(Dense(100, activation="sigmoid", input_shape=(784,)))
        model.add(Dense(10, activation="softmax"))
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])

    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train_encoded,
        epochs=args.epochs,
        validation_data=(x_val, y_val_encoded),
        verbose=args.verbose,
    )
    fit_seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_val, y_val_encoded, verbose=0)

    curves = {key: [float(v) for v in values] for key, values in history.history.items()}
    epochs_run = len(curves.get("loss", ())) or args.epochs
    seconds_per_epoch = fit_seconds / epochs_run
    print(f"Validation loss: {float(loss):.4f} - validation accuracy: {float(accuracy):.4f}")
    print(
        f"Training: {len(x_train)} samples, {epochs_run} epoch{'s' if epochs_run != 1 else ''} "
        f"in {fit_seconds:.2f} s "
        f"({seconds_per_epoch:.3f} s per epoch)"
    )

    paths = {}
    if figure_tools is None:
        print(_MATPLOTLIB_NOTE)
    else:
        for key, quantity in (("loss", "Loss"), ("accuracy", "Accuracy")):
            if key not in curves:
                continue
            path = os.path.join(out_dir, f"{key}.png")
            _save_curve(figure_tools, curves[key], curves.get("val_" + key), quantity, path)
            paths[key] = path
        print("Plots written: " + ", ".join(paths.values()))

    return {
        "history": curves,
        "val_loss": float(loss),
        "val_accuracy": float(accuracy),
        "seconds_per_epoch": seconds_per_epoch,
        "fit_seconds": fit_seconds,
        "epochs": epochs_run,
        "train_samples": len(x_train),
        "val_samples": len(x_val),
        "paths": paths,
    }


def cli(argv=None):
    """Command-line entry point: run `main(argv)` and return a process exit status.

    Returns 0 on success, 1 when the dataset cannot be found or downloaded (the reason
    is printed to stderr), 130 on Ctrl-C. Usage errors exit with status 2 via argparse.
    """
    from fastdense.datasets.fashion_mnist import DatasetNotFoundError

    try:
        main(argv)
    except DatasetNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
