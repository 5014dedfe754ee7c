"""`capture sessions list | show | delete | recover`: the player's recordings, by id or path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from capture.cli._common import resolve_sessions
from capture.errors import CaptureError


@click.group()
def sessions() -> None:
    """See, check, delete and recover your recorded sessions.

    A SESSION is an id from `capture sessions list`, a unique start of one, or a directory.
    """


@sessions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
def sessions_list(as_json: bool) -> None:
    """List every session: id, game, start, duration and status (damaged ones too)."""
    from capture.session import store

    if as_json:
        click.echo(json.dumps(store.list_play_sessions(), indent=2))
        return
    rows = [s.to_dict() for s in store.list_sessions()]
    if not rows:
        click.echo("no sessions")
        return
    for r in rows:
        dur = f"{r['duration_s']:.1f} s" if r["duration_s"] is not None else "-"
        extra = f"  ({r['problem']})" if r["problem"] else ""
        click.echo(f"{r['id']}  {r['game'] or '?':<20} {r['start'] or '?':<28} {dur:>9}  "
                   f"{r['status']}{extra}")


@sessions.command("show")
@click.argument("session")
def sessions_show(session: str) -> None:
    """Show a session's manifest."""
    from capture.session.manifest import read_manifest

    [session_dir] = resolve_sessions((session,))
    click.echo(json.dumps(read_manifest(session_dir).to_dict(), indent=2))


@sessions.command("delete")
@click.argument("session", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask.")
def sessions_delete(session: tuple[str, ...], yes: bool) -> None:
    """Delete sessions and everything in them.

    Only capture's own sessions are deleted: those in $CAPTURE_HOME/sessions and those recorded
    elsewhere with `capture record --out`, each with a valid manifest. A damaged session in
    $CAPTURE_HOME/sessions (its manifest unreadable) can be deleted too, by its id from
    `capture sessions list`.
    """
    from capture.session import store
    from capture.session.manifest import read_manifest

    dirs = resolve_sessions(session)
    damaged = []
    for d in dirs:
        try:
            read_manifest(d)
        except CaptureError:
            damaged.append(d)
    if not yes:
        note = f" ({len(damaged)} of them damaged)" if damaged else ""
        click.confirm(f"Delete {len(dirs)} session(s){note} for good?", abort=True)
    for d in dirs:
        store.delete_session(d)
        click.echo(f"deleted {d}" + (" (damaged)" if d in damaged else ""))


@sessions.command("recover")
@click.argument("session", nargs=-1)
def sessions_recover(session: tuple[str, ...]) -> None:
    """Finalise sessions whose recorder crashed (all such sessions if none is named).

    A session that cannot be recovered is reported and the others are still recovered; the
    exit code is then 1.
    """
    from capture.session import store, writer

    dirs = (resolve_sessions(session) if session
            else [d for d in store.session_dirs() if _needs_recovery(d)])
    if not dirs:
        click.echo("no session needs recovery")
        return
    failed = 0
    for d in dirs:
        try:
            m = writer.recover(d)
        except CaptureError as exc:  # carry on with the others
            failed += 1
            click.echo(f"error: {exc}", err=True)
            continue
        rec, qa = m.recovery, m.qa
        assert rec is not None and qa is not None
        click.echo(f"recovered {d}: {qa.frames} frames "
                   f"({rec.frames_logged} logged, {rec.frames_decodable} decodable), "
                   f"{qa.input_total} input events")
    if failed:
        click.echo(f"error: {failed} of {len(dirs)} session(s) could not be recovered", err=True)
        sys.exit(1)


def _needs_recovery(session_dir: Path) -> bool:
    """A crashed recording (a session whose manifest cannot be read is not one)."""
    from capture.session.reader import needs_recovery

    try:
        return needs_recovery(session_dir)
    except CaptureError:
        return False
