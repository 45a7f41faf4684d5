"""A dependency-free progress bar for long operator commands.

It draws on stderr only when stderr is a terminal, so piped output and ``--json``
stay clean, and redraws at most ten times a second so it never costs throughput.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self, label: str, total: int | None, *, stream: TextIO | None = None, width: int = 30
    ) -> None:
        self.label = label
        self.total = total
        self.width = width
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._started = time.perf_counter()
        self._last_draw = 0.0
        self._done = 0

    @property
    def shown(self) -> bool:
        """Whether the bar is drawn (stderr is a terminal): work only it needs can be skipped."""
        return self._enabled

    def update(self, done: int) -> None:
        self._done = done
        now = time.perf_counter()
        if self._enabled and now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def close(self) -> None:
        if self._enabled:
            self._draw(time.perf_counter())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        if self.total:
            filled = int(self.width * min(self._done / self.total, 1.0))
            bar = "#" * filled + "-" * (self.width - filled)
            text = f"\r{self.label} [{bar}] {self._done}/{self.total} {rate:,.0f}/s"
        else:
            text = f"\r{self.label} {self._done} {rate:,.0f}/s"
        self._stream.write(text)
        self._stream.flush()
