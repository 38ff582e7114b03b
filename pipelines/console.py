"""Terminal output shared by the commands: messages and progress on stderr (data goes to stdout),
quiet when stderr is not a terminal or with ``-q``, and no colour with ``NO_COLOR``."""

from __future__ import annotations

import logging
import sys
import warnings

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

err = Console(stderr=True, highlight=False, soft_wrap=True)


def quiet_libraries() -> None:
    """Silence the ONNX exporter's and torch's chatter (warnings about optional packages)."""
    for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")


def say(message: str, quiet: bool = False) -> None:
    if not quiet:
        err.print(message)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


class StageProgress:
    """The engine's :class:`~sanitizer.heal_and_select.Progress` drawn as a rich progress bar,
    one task per stage; silent when stderr is not a terminal or ``quiet`` is set."""

    def __init__(self, quiet: bool = False):
        self.enabled = not quiet and sys.stderr.isatty()
        self.progress = Progress(TextColumn("{task.description:>8}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                                 transient=True, disable=not self.enabled)
        self.task = None

    def __enter__(self) -> "StageProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def stage(self, name: str, total: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(name, total=total)

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
