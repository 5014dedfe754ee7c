"""`capture record`: record a consented game's window and the player's input into a session."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from capture import video
from capture.cli._common import parse_record_scope, say, stop_on_signals
from capture.cli.obs import obs_connection_options, obs_settings_from
from capture.consent.records import SCOPE_KINDS


@click.command()
@click.option("--game", required=True, help="Executable name or X11 window class of the game.")
@click.option("--backend", type=click.Choice(video.backend_names()), default="builtin",
              show_default=True, help="Video backend.")
@click.option("--fps", type=click.IntRange(1, 240), default=30, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds (default: until Ctrl-C or the game exits).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Parent directory for the session (default: $CAPTURE_HOME/sessions).")
@click.option("--scope", default="video,keyboard,mouse", show_default=True,
              help=f"Kinds of data to record, from {', '.join(SCOPE_KINDS)}; your consent must "
                   "cover all of them.")
@click.option("--player", default=None, help="Whose consent to use, if several players have one.")
@click.option("--display", default=None, help="X display (default: $DISPLAY).")
@click.option("--wait", "wait_s", type=float, default=None,
              help="Give up if the game has no window after this many seconds.")
@obs_connection_options
def record(game: str, backend: str, fps: int, duration: float | None, out: Path | None,
           scope: str, player: str | None, display: str | None, wait_s: float | None,
           **obs_options: Any) -> None:
    """Record the focused window of GAME with your input, under your consent.

    Waits for the game's window, records video and input only while it has focus, and stops
    after --duration, on Ctrl-C / SIGTERM, or when the game exits. It then prints what was
    recorded and every record-time check that failed; the last line printed is the session
    directory. The exit code is 1 if the recording is incomplete (the recorder failed).
    """
    from capture.session.recorder import RecordOptions
    from capture.session.recorder import record as run_record

    kinds = parse_record_scope(scope)
    obs_settings = obs_settings_from(obs_options) if backend == "obs" else None
    opts = RecordOptions(game=game, backend=backend, fps=fps, duration_s=duration, out=out,
                         scope=kinds, player=player, display=display,
                         wait_timeout_s=wait_s, video_options=obs_settings)
    session_dir = run_record(opts, stop=stop_on_signals(), say=say)
    from capture.session.manifest import read_manifest

    manifest = read_manifest(session_dir)
    for line in session_summary(session_dir):
        say(line)
    click.echo(str(session_dir))
    if manifest.status == "incomplete":
        sys.exit(1)


def session_summary(session_dir: Path) -> list[str]:
    """What a finished recording holds, and each of its record-time checks that failed."""
    from capture.session.check_words import check_line, input_count
    from capture.session.manifest import QA, read_manifest

    m = read_manifest(session_dir)
    qa = m.qa or QA()
    failed = qa.failed_checks
    status = m.status + (f", {len(failed)} check(s) failed" if failed else "")
    lines = [
        f"{status}: {qa.frames} frames in {qa.duration_s:.1f} s "
        f"({qa.fps_achieved:.1f} fps achieved, {qa.dropped_frames} dropped, "
        f"{qa.repeated_frames} repeated), focused {qa.focused_s:.1f} s, inputs {input_count(qa)}"]
    if m.error:
        lines.append(f"error: {m.error}")
    lines += [f"check failed: {check_line(c.name, c.ok, c.detail)}" for c in failed]
    if not qa.frames:
        lines.append("warning: the game never had focus, so nothing was captured; this session "
                     "cannot be exported (delete it with `capture sessions delete "
                     f"{session_dir.name}`)")
    return lines
