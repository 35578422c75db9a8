"""Where ``smtpwire-send`` writes: results and the transcript on stdout, errors
and the progress bar on stderr, nothing at all with ``-q``.

The split lets a script keep the transcript (``> log``) while a person still
sees what went wrong, and ``-q`` leaves the exit status as the only answer.
"""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

__all__ = ["PROG", "Output", "Progress"]

PROG: Final = "smtpwire-send"
BAR_WIDTH: Final = 30
REDRAW_EVERY: Final = 0.1  # seconds: a terminal redrawn per message would slow a fast run


class Output:
    def __init__(
        self, verbosity: int, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.verbosity = verbosity
        self.stdout = sys.stdout if stdout is None else stdout
        self.stderr = sys.stderr if stderr is None else stderr

    @property
    def transcript(self) -> bool:
        return self.verbosity >= 1

    @property
    def message_data(self) -> bool:
        """-vv: the message's own lines in the transcript too."""
        return self.verbosity >= 2

    def result(self, line: str) -> None:
        if self.verbosity >= 0:
            print(line, file=self.stdout)

    def wire(self, line: str) -> None:
        if self.transcript:
            print(line, file=self.stdout)

    def error(self, line: str) -> None:
        """One line on stderr, named after the program, as a shell user expects."""
        if self.verbosity >= 0:
            self.stdout.flush()  # so a transcript before it reads in order on a terminal
            print(f"{PROG}: {line}", file=self.stderr)

    def warning(self, line: str) -> None:
        self.error(f"warning: {line}")

    def progress(self, total: int) -> Progress | None:
        """A progress bar, only for a person watching (stderr a terminal)."""
        if self.verbosity < 0 or not self.stderr.isatty():
            return None
        return Progress(total, self.stderr)


class Progress:
    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self._drawn_at = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self._drawn_at < REDRAW_EVERY:
            return
        self._drawn_at = now
        filled = BAR_WIDTH * done // self.total
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {done}/{self.total}")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
