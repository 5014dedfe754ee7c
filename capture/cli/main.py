"""The `capture` group: registers every command and turns every failure into one plain line."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from capture import __version__
from capture.errors import CaptureError, DiskFullError, is_disk_full

EXIT_BUG = 70        # EX_SOFTWARE: an unexpected error, i.e. a bug in capture
EXIT_OS_ERROR = 74   # EX_IOERR: the operating system refused a read or write (disk full, ...)
DEBUG_VARIABLE = "CAPTURE_DEBUG"


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def _x_display_problem(exc: BaseException) -> str | None:
    """Plain words for python-xlib's "cannot open the display" errors, else None."""
    if not type(exc).__module__.startswith("Xlib"):
        return None
    try:
        from Xlib import error as xerror
    except ImportError:
        return None
    if isinstance(exc, xerror.DisplayNameError):
        return f"{exc.args[0]!r} is not an X display name (like :0); check --display or $DISPLAY"
    if isinstance(exc, xerror.DisplayConnectionError):
        name, reason = [*exc.args, "", ""][:2]
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        detail = f" ({reason.strip()})" if reason.strip() else ""
        return (f"cannot connect to X display {name!r}{detail}: is an X server running there? "
                "check --display or $DISPLAY")
    if isinstance(exc, xerror.XError | xerror.ConnectionClosedError):
        return f"the X server failed: {exc}"
    return None


def _os_error_line(exc: OSError) -> str:
    if is_disk_full(exc):
        return str(DiskFullError(exc.filename, "free some space and run the command again"))
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename is not None else reason


class _Group(click.Group):
    """Ends every command in one plain line on stderr and an exit code, never a traceback.

    CaptureError: its message and exit code. OSError: the file and the reason ("disk full"
    for ENOSPC), exit 74. The X server unreachable: which display, exit 1. Anything else is a
    bug: one line saying so, exit 70 (set CAPTURE_DEBUG=1 to see the traceback instead).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except CaptureError as exc:
            _fail(str(exc), EXIT_OS_ERROR if isinstance(exc, DiskFullError) else exc.exit_code)
        except OSError as exc:
            if _debugging():
                raise
            _fail(_os_error_line(exc), EXIT_OS_ERROR)
        except Exception as exc:
            if _debugging():
                raise
            x_problem = _x_display_problem(exc)
            if x_problem is not None:
                _fail(x_problem, 1)
            _fail(f"unexpected {type(exc).__name__}: {exc}. This is a bug in capture; please "
                  f"report it (run again with {DEBUG_VARIABLE}=1 to see where it happened)",
                  EXIT_BUG)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capture")
def cli() -> None:
    """Record gameplay of opted-in players and export frame-aligned video + action datasets.

    \b
    Players:          capture consent grant ..., then capture record --game G
    Dataset builders: capture export SESSION... --out DATASET, then capture dataset verify DATASET
    Try it:           capture demo

    A SESSION is a session id from `capture sessions list` (or a unique start of one) or a
    session directory. All state lives in $CAPTURE_HOME (default: your user data directory).
    """


def _register() -> None:
    from capture.cli.agent import agent
    from capture.cli.collector import collector, enroll, upload
    from capture.cli.consent import consent
    from capture.cli.demo import demo
    from capture.cli.export import dataset, export_cmd
    from capture.cli.obs import obs
    from capture.cli.record import record
    from capture.cli.sessions import sessions

    for command in (consent, record, sessions, export_cmd, dataset, agent, obs, demo,
                    collector, enroll, upload):
        cli.add_command(command)


_register()


def main() -> None:
    cli()
