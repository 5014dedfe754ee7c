"""User-facing errors: each names the file (if any) and the problem in plain words."""

from __future__ import annotations

from pathlib import Path


class CaptureError(Exception):
    """An error the CLI prints as one plain sentence and exits non-zero for."""

    exit_code = 1

    def __init__(self, problem: str, path: Path | str | None = None) -> None:
        self.problem = problem
        self.path = Path(path) if path is not None else None
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" if self.path is not None else self.problem


class ConsentError(CaptureError):
    """No valid consent covers what was asked for."""

    exit_code = 3


class BadInputError(CaptureError):
    """A file we read is corrupt, truncated, malformed or of the wrong version."""

    exit_code = 4
