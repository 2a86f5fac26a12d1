"""Progress that reads well on a terminal and in a log file.

On a terminal, Keras' live progress bars; when output goes to a file or a pipe (CI, ``nohup``,
``tee``), plain lines: one per training epoch, one per hundred images, no escape codes or
carriage returns.
"""

from __future__ import annotations

import sys

import keras

PLAIN_EVERY = 100  # images per line when output is not a terminal


def interactive() -> bool:
    return sys.stdout.isatty()


def fit_verbose(verbose: int) -> int:
    """``model.fit``'s ``verbose``: 1 (live bar) on a terminal, else 2 (a line per epoch)."""
    return verbose if interactive() or not verbose else 2


class _PlainProgress:
    def __init__(self, total: int, unit: str):
        self.total, self.unit, self.done, self.shown = total, unit, 0, 0

    def add(self, n: int) -> None:
        self.done += n
        if self.done - self.shown >= PLAIN_EVERY or self.done >= self.total:
            self.shown = self.done
            print(f"{self.done}/{self.total} {self.unit}s", flush=True)


def progress_bar(total: int, unit: str = "image"):
    """An object with ``add(n)``: Keras' ``Progbar`` on a terminal, else plain lines."""
    if interactive():
        return keras.utils.Progbar(total, unit_name=unit)
    return _PlainProgress(total, unit)
