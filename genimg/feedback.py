"""What genimg says while it works: the phases of a command and the progress of long loops.

Library code reports through the `genimg` logger and never prints. The CLI shows that logger on
stderr (`show_on_stderr`): plain `genimg: …` lines, also when stderr is not a terminal (CI logs,
Prefect workers), and a progress bar for long loops on a terminal. The retrain flow also ships it
to Prefect's run logs (PREFECT_LOGGING_EXTRA_LOGGERS). Used as a library, genimg stays silent
unless the caller attaches a handler to the `genimg` logger; the Python API (genimg.api) shows them
on stderr too, unless `genimg.show_progress(False)`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from genimg.errors import redact_credentials

LOGGER = logging.getLogger("genimg")
PROGRESS_EVERY_SECONDS = 10.0  # periodic progress lines when no bar can be drawn

ProgressUpdate = Callable[[int], None]  # called with the number of units done so far


class StderrHandler(logging.Handler):
    """Writes to `sys.stderr` as it is when a record comes (a progress bar swaps it for a proxy
    that prints above the bar; a handler holding the original stream would garble the bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(redact_credentials(self.format(record)) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


class Settings:
    interactive = False  # a terminal is attached: long loops draw a bar


def show_on_stderr() -> None:
    """Show genimg's phase and progress lines on stderr (the CLI calls this once)."""
    if not any(isinstance(handler, StderrHandler) for handler in LOGGER.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("genimg: %(message)s"))
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    # Shown here, so not also by handlers on the root logger: Prefect installs a console handler
    # there (bound to the stderr of its time, which a test runner may have closed since).
    LOGGER.propagate = False
    # logging.config.dictConfig (Prefect and MLflow call it) disables every logger that exists
    # by then unless told otherwise, genimg's included.
    LOGGER.disabled = False
    Settings.interactive = sys.stderr.isatty()


def stop_showing() -> None:
    """Undo `show_on_stderr`: genimg silent again (what a library user may ask for)."""
    for handler in [h for h in LOGGER.handlers if isinstance(h, StderrHandler)]:
        LOGGER.removeHandler(handler)
    LOGGER.propagate = True
    Settings.interactive = False


def say(message: str, *args: Any) -> None:
    LOGGER.info(message, *args)


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def rate(per_second: float, unit: str) -> str:
    """'1234 img/s', '12.5 steps/s', '0.4 img/s', '0.03 img/s': slow rates keep two figures."""
    text = (
        f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.3g}" if per_second >= 0.01 else f"{per_second:.1g}"
    )
    return f"{text} {unit}/s"


def rate_and_time_left(done: int, total: int, elapsed: float, unit: str) -> str:
    """'3.2 steps/s, 1.5 min left' from the units done so far in `elapsed` seconds."""
    if done <= 0 or elapsed <= 0:
        return "starting"
    per_second = done / elapsed
    return f"{rate(per_second, unit or 'it')}, {seconds((total - done) / per_second)} left"


@contextmanager
def phase(what: str) -> Iterator[None]:
    """A step that may take a while: says what it starts, and when it is done, how long it took."""
    say("%s …", what)
    started = time.perf_counter()
    yield
    say("%s: done in %s", what, seconds(time.perf_counter() - started))


@contextmanager
def progress(what: str, total: int, unit: str = "") -> Iterator[ProgressUpdate]:
    """Progress of a loop of `total` units: a bar on a terminal, else a line every
    PROGRESS_EVERY_SECONDS (and none for a loop that ends sooner)."""
    if Settings.interactive and LOGGER.isEnabledFor(logging.INFO):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("genimg: {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        bar_started = time.perf_counter()
        with bar:
            task = bar.add_task(what, total=total, rate="")
            yield lambda done: bar.update(
                task,
                completed=done,
                rate=rate(done / max(time.perf_counter() - bar_started, 1e-9), unit or "it") if done else "",
            )
        return
    started = last = time.perf_counter()
    suffix = f" {unit}" if unit else ""

    def update(done: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_SECONDS and done < total:
            last = now
            say(
                "%s: %d/%d%s (%s; %s)",
                what,
                done,
                total,
                suffix,
                seconds(now - started),
                rate_and_time_left(done, total, now - started, unit),
            )

    yield update


@contextmanager
def progress_callback(what: str) -> Iterator[Callable[[int, int], None]]:
    """`progress` for loops that learn their total as they go: a (done, total) callback."""
    with ExitStack() as stack:
        updates: list[ProgressUpdate] = []

        def report(done: int, total: int) -> None:
            if not updates:
                updates.append(stack.enter_context(progress(what, total)))
            updates[0](done)

        yield report


def format_losses(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("step", "images_per_second"))


LIVE_REDRAW_SECONDS = 0.2  # a terminal's progress line is redrawn at most this often


class TrainingProgress:
    """Training progress: a live line on a terminal (step, img/s, time left, losses), else a plain
    line every PROGRESS_EVERY_SECONDS. Driven by time, not by log_every: `tick` comes after every
    step where the steps run in this process, `update` with the losses at log steps (from Ray's
    workers too). The rate is the one measured where the steps run (metrics may reach this
    process in batches)."""

    def __init__(self, total_steps: int | None = None) -> None:
        self.live = Settings.interactive
        self.total_steps = total_steps
        self.shown = False
        self.last_line = self.last_draw = time.perf_counter()
        self.first_tick: tuple[int, float] | None = None
        self.losses = ""

    def update(self, step: int, metrics: dict[str, float]) -> None:
        self.losses = format_losses(metrics)
        self.show(step, metrics.get("images_per_second"))

    def tick(self, step: int, images_per_second: float) -> None:
        now = time.perf_counter()
        if self.first_tick is None:
            self.first_tick = (step, now)
        if (self.live and now - self.last_draw >= LIVE_REDRAW_SECONDS) or (
            not self.live and now - self.last_line >= PROGRESS_EVERY_SECONDS
        ):
            self.show(step, images_per_second or None)

    def time_left(self, step: int) -> str:
        if self.total_steps is None or self.first_tick is None or step <= self.first_tick[0]:
            return ""
        first_step, first_time = self.first_tick
        per_step = (time.perf_counter() - first_time) / (step - first_step)
        return f", {seconds((self.total_steps - step) * per_step)} left"

    def show(self, step: int, images_per_second: float | None) -> None:
        text = (
            f"step {step}{f'/{self.total_steps}' if self.total_steps else ''}"
            + (f"  {rate(images_per_second, 'img')}{self.time_left(step)}" if images_per_second else "")
            + (f"  {self.losses}" if self.losses else "")
        )
        now = time.perf_counter()
        if self.live:
            self.last_draw = now
            sys.stderr.write(f"\r\033[K{text}")
            sys.stderr.flush()
            self.shown = True
        elif now - self.last_line >= PROGRESS_EVERY_SECONDS:
            self.last_line = now
            say("%s", text)

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False


__all__ = [
    "LOGGER",
    "TrainingProgress",
    "phase",
    "progress",
    "progress_callback",
    "say",
    "show_on_stderr",
    "stop_showing",
]
