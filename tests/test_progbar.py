"""Tests of fastdense._progbar: Keras 3's progress-bar format and its cost."""

import io
import time

import pytest

from fastdense import _progbar
from fastdense._progbar import Progbar

BAR = "\u2501" * 20  # a finished 20-character bar


class FakeClock:
    """Stands in for the `time` module inside _progbar; counts clock reads."""

    def __init__(self, t=100.0):
        self.t = t
        self.calls = 0

    def monotonic(self):
        self.calls += 1
        return self.t


class TTYStream(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(_progbar, "time", fake)
    return fake


def run_epoch(bar, clock, steps=1500, first_step=0.5, total=2.0, values=None):
    """Steps 1..steps; step 1 ends at +first_step, the last at +total."""
    values = values or {"accuracy": 0.8123, "loss": 0.5432}
    start = clock.t
    for step in range(1, steps + 1):
        if step == 1:
            clock.t = start + first_step
        else:
            clock.t = start + first_step + (total - first_step) * (step - 1) / (steps - 1)
        bar.update(step, values)


def test_verbose_2_prints_one_keras_line_at_the_end(clock):
    stream = io.StringIO()
    bar = Progbar(1500, verbose=2, stream=stream)
    run_epoch(bar, clock)
    # (2.0 - 0.5) / 1499 s per step after the first one -> 1ms/step.
    assert stream.getvalue() == "1500/1500 - 2s - 1ms/step - accuracy: 0.8123 - loss: 0.5432\n"


def test_verbose_1_not_a_tty_prints_only_the_final_line(clock):
    stream = io.StringIO()
    bar = Progbar(1500, verbose=1, stream=stream)
    values = {"accuracy": 0.8123, "loss": 0.5432}
    for step in range(1, 1500):
        clock.t += 0.1  # far more than `interval`: still nothing printed
        bar.update(step, values)
        assert stream.getvalue() == ""
    clock.t = 100.0 + 2.2
    bar.update(1500, values)
    # 2.2 s elapsed; (2.2 - 0.1) / 1499 s per step -> 1ms/step.
    assert stream.getvalue() == f"1500/1500 {BAR} 2s 1ms/step - accuracy: 0.8123 - loss: 0.5432\n"


def test_finalize_argument_forces_the_final_line(clock):
    stream = io.StringIO()
    bar = Progbar(10, verbose=1, stream=stream)
    clock.t += 1.0
    bar.update(4, [("loss", 0.25)], finalize=True)
    assert stream.getvalue() == f" 4/10 {'━' * 8}{'━' * 12} 1s 250ms/step - loss: 0.2500\n"


@pytest.mark.parametrize(
    "seconds_per_step, shown",
    [(3.0, "3s/step"), (0.0042, "4ms/step"), (0.000042, "42us/step"), (0.0, "0s/step")],
)
def test_time_per_step_unit(clock, seconds_per_step, shown):
    stream = io.StringIO()
    bar = Progbar(4, verbose=2, stream=stream)
    clock.t += seconds_per_step
    bar.update(1)
    clock.t += 3 * seconds_per_step
    bar.update(4)
    assert stream.getvalue().split(" - ")[2] == shown + "\n"


@pytest.mark.parametrize(
    "value, verbose, shown",
    [
        (0.5, 1, "0.5000"),
        (0.0005, 1, "5.0000e-04"),
        (0.0, 1, "0.0000e+00"),
        (-0.25, 1, "-0.2500"),
        # Keras's one-line mode tests the signed value against 1e-3.
        (-0.25, 2, "-2.5000e-01"),
        (12.3456789, 2, "12.3457"),
    ],
)
def test_value_format(clock, value, verbose, shown):
    stream = io.StringIO()
    bar = Progbar(1, verbose=verbose, stream=stream)
    bar.update(1, {"loss": value})
    assert stream.getvalue().endswith(f"- loss: {shown}\n")


def test_values_shown_in_given_order_with_latest_values(clock):
    stream = io.StringIO()
    bar = Progbar(3, verbose=2, stream=stream)
    bar.update(1, {"b": 1.0, "a": 2.0})
    bar.update(2, {"b": 3.0, "a": 4.0})
    bar.update(3, {"b": 5.0, "a": 6.0, "val_a": 7.0})
    assert stream.getvalue().endswith("- b: 5.0000 - a: 6.0000 - val_a: 7.0000\n")


def test_names_keep_the_position_where_they_were_first_drawn(clock):
    stream = TTYStream()
    bar = Progbar(3, verbose=1, stream=stream)
    bar.update(1, {"b": 1.0, "a": 2.0})  # drawn: fixes the order b, a
    bar.update(3, {"a": 6.0, "b": 5.0, "val_a": 7.0})
    assert stream.getvalue().endswith("- b: 5.0000 - a: 6.0000 - val_a: 7.0000\n")


def test_tty_redraws_in_place_at_most_every_interval(clock):
    stream = TTYStream()
    bar = Progbar(100, verbose=1, stream=stream)
    bar.update(1, {"loss": 1.0})
    first = stream.getvalue()
    assert first.startswith("\r") and "\n" not in first
    clock.t += 0.01  # less than the 0.05 s interval: no redraw
    bar.update(2, {"loss": 0.9})
    assert stream.getvalue() == first
    clock.t += 0.05
    bar.update(3, {"loss": 0.8})
    assert stream.getvalue().count("\r") == 2
    clock.t += 0.001  # the final update is always drawn, with a newline
    bar.update(100, {"loss": 0.5})
    assert stream.getvalue().count("\r") == 3
    assert stream.getvalue().endswith("loss: 0.5000\n")


def test_tty_line_shows_eta_colours_and_partial_bar(clock):
    stream = TTYStream()
    bar = Progbar(100, verbose=1, stream=stream)
    clock.t = 100.5
    bar.update(1)
    stream.seek(0)
    stream.truncate()
    clock.t = 100.5 + 24 * 0.01
    bar.update(25, {"loss": 0.75})
    line = stream.getvalue()
    # 10ms/step measured after step 1, 75 steps left -> ETA 0.75 s -> "0s".
    assert line == (
        "\r\x1b[1m 25/100\x1b[0m \x1b[32m" + "━" * 5 + "\x1b[0m\x1b[37m" + "━" * 15
        + "\x1b[0m \x1b[1m0s\x1b[0m 10ms/step - loss: 0.7500"
    )


def test_tty_pads_a_shorter_line_to_erase_the_previous_one(clock):
    stream = TTYStream()
    bar = Progbar(10, verbose=1, stream=stream)
    bar.update(1, {"loss": 123456.0})
    clock.t += 1
    stream.seek(0)
    stream.truncate()
    bar.update(2, {"loss": 1.0})
    # "123456.0000" -> "1.0000": 5 characters shorter, and the time per step
    # went from "0s/step" to "1s/step" (same width).
    assert stream.getvalue().endswith("loss: 1.0000" + " " * 5)


@pytest.mark.parametrize(
    "seconds, shown", [(42.9, "42s"), (125, "2:05"), (3700, "1:01:40")]
)
def test_eta_format(seconds, shown):
    assert _progbar._format_eta(seconds) == shown


def test_unknown_target_and_silent_mode(clock):
    stream = io.StringIO()
    bar = Progbar(None, verbose=1, stream=stream)
    bar.update(7, {"loss": 0.5}, finalize=True)
    assert stream.getvalue() == "      7/Unknown 0s 0s/step - loss: 0.5000\n"
    silent = io.StringIO()
    bar = Progbar(3, verbose=0, stream=silent)
    for step in (1, 2, 3):
        bar.update(step, {"loss": 0.5})
    assert silent.getvalue() == ""


def test_steps_before_the_end_only_read_the_clock_at_step_one(clock):
    bar = Progbar(1500, verbose=1, stream=io.StringIO())
    reads_at_start = clock.calls
    for step in range(1, 1500):
        bar.update(step, {"loss": 0.5})
    assert clock.calls - reads_at_start == 1  # step 1: end of warm-up


def test_update_is_cheap():
    bar = Progbar(10**9, verbose=1, stream=io.StringIO())
    values = {"accuracy": 0.5, "loss": 0.25}
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for step in range(2, 1502):
            bar.update(step, values)
        best = min(best, time.perf_counter() - start)
    assert best < 1e-3


def test_tty_update_between_redraws_is_cheap():
    bar = Progbar(10**9, verbose=1, stream=TTYStream(), interval=3600)
    bar.update(2, {"loss": 0.25})  # first draw; the next ones are throttled
    values = {"loss": 0.25}
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for step in range(3, 1503):
            bar.update(step, values)
        best = min(best, time.perf_counter() - start)
    assert best < 1e-3
