"""User-facing errors: each names the file (if any) and the problem in plain words."""

from __future__ import annotations

import errno
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


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


class DiskFullError(CaptureError):
    """The disk (or the user's quota) was full: `path` could not be written."""

    def __init__(self, path: Path | str | None,
                 advice: str = "free some space; what was written before is kept") -> None:
        super().__init__(f"disk full: {advice}", path)


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError saying the disk or the quota is full (ENOSPC, EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS
