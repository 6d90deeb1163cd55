"""Keras-style progress bar.

`update()` is called once per step (or once per chunk of steps) by the
training loop, so its path that draws nothing does only a few attribute
operations and at most one `time.monotonic()` call. All formatting happens in
`_draw`, which runs at most once every `interval` seconds on a terminal and
only once per epoch (at the final update) anywhere else.
"""

import math
import sys
import time

_BAR_CHAR = "\u2501"  # "━"
_BOLD = "\x1b[1m"
_GREEN = "\x1b[32m"
_WHITE = "\x1b[37m"
_RESET = "\x1b[0m"


def _format_step_time(seconds_per_unit, unit_name):
    """Formats a per-unit duration as Keras does: `2s/step`, `3ms/step`, `41us/step`."""
    if seconds_per_unit >= 1 or seconds_per_unit == 0:
        return f" {seconds_per_unit:.0f}s/{unit_name}"
    if seconds_per_unit >= 1e-3:
        return f" {seconds_per_unit * 1e3:.0f}ms/{unit_name}"
    return f" {seconds_per_unit * 1e6:.0f}us/{unit_name}"


def _format_eta(seconds):
    if seconds > 3600:
        return "%d:%02d:%02d" % (seconds // 3600, (seconds % 3600) // 60, seconds % 60)
    if seconds > 60:
        return "%d:%02d" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def _is_dynamic(stream):
    """Whether `stream` can redraw a line in place with a carriage return."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError, OSError):
        pass
    # Jupyter/Colab: not a TTY, but the front end handles `\r` and colours.
    return "ipykernel" in sys.modules and stream is sys.stdout


class Progbar:
    """Displays a progress bar in Keras 3's format.

    With `verbose=1` on a terminal the bar is redrawn in place, at most once
    every `interval` seconds, showing the estimated time left:

    `  37/1500 ━━━━━━━━━━━━━━━━━━━━ 3s 2ms/step - accuracy: 0.5122 - loss: 1.3012`

    and, once finished, the elapsed time:

    `1500/1500 ━━━━━━━━━━━━━━━━━━━━ 2s 1ms/step - accuracy: 0.8123 - loss: 0.5432`

    When the stream is not a terminal (log files, CI, captured output) nothing
    is printed until the final update, which prints that last line once.
    `verbose=2` prints only one line at the final update:

    `1500/1500 - 2s - 1ms/step - accuracy: 0.8123 - loss: 0.5432`

    Values are displayed as given (they are expected to be running means
    already, so nothing is averaged here), from the latest update before each
    drawn line; a name keeps the position where it was first drawn.

    Args:
        target: Total number of steps expected, or `None` if unknown.
        width: Width of the bar, in characters. Defaults to `20`.
        verbose: `0` (silent), `1` (bar) or `2` (one line at the end).
            Defaults to `1`.
        interval: Minimum time between two redraws on a terminal, in
            seconds. Defaults to `0.05`.
        unit_name: Name of a step in the time-per-step display. Defaults to
            `"step"`.
        stream: Text stream to write to. Defaults to `None`, meaning
            `sys.stdout` at the time of each write.

    Example:

    >>> bar = Progbar(3, verbose=2)
    >>> for step in range(1, 4):
    ...     bar.update(step, [("loss", 0.5)])  # doctest: +SKIP
    3/3 - 0s - 1ms/step - loss: 0.5000
    """

    def __init__(
        self,
        target,
        width=20,
        verbose=1,
        interval=0.05,
        unit_name="step",
        stream=None,
    ):
        self.target = target  # property: also sets _finalize_at
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.stream = stream
        self._dynamic = _is_dynamic(stream if stream is not None else sys.stdout)
        # Only a live bar needs to look at the clock before the final update.
        self._live = verbose == 1 and self._dynamic
        self._values = {}
        self._pending = None
        self._seen_so_far = 0
        self._start = time.monotonic()
        self._last_update = -math.inf
        self._time_after_first_step = None
        self._prev_width = 0

    @property
    def target(self):
        """Total number of steps, or `None` if unknown."""
        return self._target

    @target.setter
    def target(self, value):
        self._target = value
        self._finalize_at = math.inf if value is None else value

    def update(self, current, values=None, finalize=None):
        """Records progress and redraws the bar if it is due.

        Args:
            current: Number of steps done so far (1-based index of the
                current step).
            values: Dict or list of `(name, value)` pairs to display next to
                the bar, e.g. running means of the loss and metrics. It is
                read when the next line is drawn, not copied.
            finalize: Whether this is the last update for the bar. Defaults
                to `current >= target`.
        """
        # Hot path: runs every step, so it only stores references; the
        # values are merged and formatted when a line is actually drawn.
        self._seen_so_far = current
        if values is not None:
            self._pending = values
        if finalize is None:
            finalize = current >= self._finalize_at
        if not finalize:
            if current == 1:
                # The first step is often slow (warm-up); the time per step
                # shown later is measured from its end.
                self._time_after_first_step = time.monotonic()
            if not self._live:
                return
            now = time.monotonic()
            if now - self._last_update < self.interval:
                return
        else:
            now = time.monotonic()
            if current == 1 and self._time_after_first_step is None:
                self._time_after_first_step = now
        if self._pending is not None:
            self._values.update(self._pending)
            self._pending = None
        self._draw(current, now, finalize)
        self._last_update = now

    def add(self, n, values=None):
        """Advances the bar by `n` steps (see `update`)."""
        self.update(self._seen_so_far + n, values)

    def _time_per_unit(self, current, now):
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            return (now - self._time_after_first_step) / (current - 1)
        return (now - self._start) / current

    def _draw(self, current, now, finalize):
        if self.verbose == 1:
            message = self._line_verbose_1(current, now, finalize)
        elif self.verbose == 2 and finalize and self.target:
            message = self._line_verbose_2(current, now)
        else:
            return
        stream = self.stream if self.stream is not None else sys.stdout
        if stream is None:  # e.g. pythonw: no console at all
            return
        stream.write(message)
        stream.flush()

    def _line_verbose_1(self, current, now, finalize):
        dynamic = self._dynamic
        target = self.target
        if target is not None and target > 0:
            digits = int(math.log10(target)) + 1
            count = f"{current:{digits}d}/{target}"
            done = min(max(int(self.width * (current / target)), 0), self.width)
            bar_done = _BAR_CHAR * done
            bar_todo = _BAR_CHAR * (self.width - done)
            if dynamic:
                head = f"{_BOLD}{count}{_RESET} "
                if bar_done:
                    head += f"{_GREEN}{bar_done}{_RESET}"
                if bar_todo:
                    head += f"{_WHITE}{bar_todo}{_RESET}"
            else:
                head = f"{count} {bar_done}{bar_todo}"
            visible = len(count) + 1 + self.width
        else:
            head = "%7d/Unknown" % current
            visible = len(head)

        time_per_unit = self._time_per_unit(current, now)
        if target is not None and target > 0 and not finalize:
            clock = _format_eta(time_per_unit * (target - current))
        else:
            clock = f"{now - self._start:.0f}s"
        tail = _format_step_time(time_per_unit, self.unit_name)
        for name, value in self._values.items():
            tail += f" - {name}: {_format_value(value, use_abs=True)}"
        visible += 1 + len(clock) + len(tail)
        if dynamic:
            line = f"\r{head} {_BOLD}{clock}{_RESET}{tail}"
            if self._prev_width > visible:
                line += " " * (self._prev_width - visible)
            self._prev_width = visible
            return line + "\n" if finalize else line
        return f"{head} {clock}{tail}\n"

    def _line_verbose_2(self, current, now):
        digits = int(math.log10(self.target)) + 1
        line = f"{current:{digits}d}/{self.target} - {now - self._start:.0f}s -"
        line += _format_step_time(self._time_per_unit(current, now), self.unit_name)
        for name, value in self._values.items():
            # Keras's one-line mode compares the signed value with 1e-3, so
            # negative values are shown in exponent form there; match it.
            line += f" - {name}: {_format_value(value, use_abs=False)}"
        return line + "\n"


def _format_value(value, use_abs):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return f"{value}"
    magnitude = abs(value) if use_abs else value
    return f"{value:.4f}" if magnitude > 1e-3 else f"{value:.4e}"
