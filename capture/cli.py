"""The `capture` command line: consent, record, sessions, export, dataset checks, demo."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from capture import __version__, video
from capture.errors import CaptureError, DiskFullError, is_disk_full
from capture.sizes import parse_size
from capture.video.obs.commands import obs_connection_options, obs_settings_from

SCOPE_KINDS = ("video", "keyboard", "mouse", "gamepad", "audio")


class _Group(click.Group):
    """Prints CaptureError as one plain line on stderr and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CaptureError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            problem = DiskFullError(exc.filename, "free some space and run the command again")
            click.echo(f"error: {problem}", err=True)
            sys.exit(problem.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capture")
def cli() -> None:
    """Record gameplay of opted-in players and export frame-aligned video + action datasets.

    \b
    Players:          capture consent grant ..., then capture record --game G
    Dataset builders: capture export SESSION... --out DATASET, then capture dataset verify DATASET
    Try it:           capture demo

    All state lives in $CAPTURE_HOME (default: your user data directory).
    """


def _add_consent() -> None:
    from capture.consent.commands import consent

    cli.add_command(consent)


_add_consent()


def _add_obs() -> None:
    from capture.video.obs.commands import obs

    cli.add_command(obs)


_add_obs()


def _parse_scope(value: str) -> frozenset[str]:
    kinds = [k.strip().lower() for k in value.split(",") if k.strip()]
    bad = [k for k in kinds if k not in SCOPE_KINDS]
    if bad or not kinds:
        raise click.BadParameter(f"unknown kind(s) {bad or value!r}; choose from "
                                 + ", ".join(SCOPE_KINDS))
    return frozenset(kinds)


def stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM, so recordings finalise cleanly."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        click.echo(f"\n{signal.Signals(signum).name}: stopping and finalising ...", err=True)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@cli.command()
@click.option("--game", required=True, help="Executable name or X11 window class of the game.")
@click.option("--backend", type=click.Choice(video.backend_names()), default="builtin",
              show_default=True, help="Video backend.")
@click.option("--fps", type=click.IntRange(1, 240), default=30, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds (default: until Ctrl-C or the game exits).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Parent directory for the session (default: $CAPTURE_HOME/sessions).")
@click.option("--scope", default="video,keyboard,mouse", show_default=True,
              help="Kinds of data to record; your consent must cover all of them.")
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
    after --duration, on Ctrl-C / SIGTERM, or when the game exits. The last line printed is the
    session directory.
    """
    from capture.session.recorder import RecordOptions
    from capture.session.recorder import record as run_record

    obs_settings = obs_settings_from(obs_options) if backend == "obs" else None
    opts = RecordOptions(game=game, backend=backend, fps=fps, duration_s=duration, out=out,
                         scope=_parse_scope(scope), player=player, display=display,
                         wait_timeout_s=wait_s, video_options=obs_settings)
    session_dir = run_record(opts, stop=stop_on_signals(),
                             say=lambda msg: click.echo(msg, err=True))
    status = _print_session_summary(session_dir)
    click.echo(str(session_dir))
    if status == "incomplete":
        sys.exit(1)


def _print_session_summary(session_dir: Path) -> str:
    from capture.session.manifest import QA, read_manifest

    m = read_manifest(session_dir)
    qa = m.qa or QA()
    click.echo(
        f"{m.status}: {qa.frames} frames in {qa.duration_s:.1f} s "
        f"({qa.fps_achieved:.1f} fps achieved, {qa.dropped_frames} dropped, "
        f"{qa.repeated_frames} repeated), focused {qa.focused_s:.1f} s, "
        f"inputs {qa.input_total}", err=True)
    if m.error:
        click.echo(f"error: {m.error}", err=True)
    for check in qa.failed_checks:
        click.echo(f"check failed: {check.name}: {check.detail}", err=True)
    if not qa.frames:
        click.echo("warning: the game never had focus, so nothing was captured; this session "
                   "cannot be exported (delete it with `capture sessions delete`)", err=True)


# --- sessions -----------------------------------------------------------------------------------
@cli.group()
def sessions() -> None:
    """See, check, delete and recover your recorded sessions."""


@sessions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
def sessions_list(as_json: bool) -> None:
    """List every session with its game, start, duration and status."""
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
    """Show a session's manifest (by id or path)."""
    from capture.session import store
    from capture.session.manifest import read_manifest

    click.echo(json.dumps(read_manifest(store.resolve(session)).to_dict(), indent=2))


@sessions.command("delete")
@click.argument("session", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask.")
def sessions_delete(session: tuple[str, ...], yes: bool) -> None:
    """Delete sessions (by id or path) and everything in them."""
    from capture.session import store

    dirs = [store.resolve(s) for s in session]
    if not yes:
        click.confirm(f"Delete {len(dirs)} session(s) for good?", abort=True)
    for d in dirs:
        store.delete_session(d)
        click.echo(f"deleted {d}")


@sessions.command("recover")
@click.argument("session", nargs=-1)
def sessions_recover(session: tuple[str, ...]) -> None:
    """Finalise sessions whose recorder crashed (all such sessions if none is named)."""
    from capture.session import store, writer
    from capture.session.reader import needs_recovery

    dirs = ([store.resolve(s) for s in session] if session
            else [d for d in store.session_dirs() if needs_recovery(d)])
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
        sys.exit(1)


# --- export and datasets ------------------------------------------------------------------------
def _parse_size(value: str) -> tuple[int, int] | None:
    if value == "native":
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}, or 'native'") from None


@cli.command("export")
@click.argument("session_dirs", nargs=-1, required=True)
@click.option("--out", required=True,
              help="Dataset to create: a directory (must not exist or be empty) or an "
                   "s3://bucket/prefix URL. Re-running into the same dataset adds new sessions "
                   "and skips unchanged ones.")
@click.option("--fps", type=click.IntRange(1, 240), default=None,
              help="Dataset frame rate (default: the sessions' recording rate).")
@click.option("--size", default="native", show_default=True, help="WxH or native.")
@click.option("--max-episode-s", type=float, default=600.0, show_default=True,
              help="Split sessions into episodes of at most this length.")
@click.option("--codec", type=click.Choice(["h264", "av1"]), default="h264", show_default=True,
              help="Video codec (av1: SVT-AV1, as LeRobot writes by default).")
@click.option("--gop-seconds", type=float, default=2.0, show_default=True,
              help="Seconds between keyframes of re-encoded episodes.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: worker processes; ray: Ray tasks.")
@click.option("--workers", type=click.IntRange(1, 1024), default=None,
              help="Worker processes (local) or CPUs of a local Ray (default: one per CPU).")
@click.option("--ray-address", default=None,
              help="Address of a running Ray cluster (default: start a local one).")
def export_cmd(session_dirs: tuple[str, ...], out: str, fps: int | None, size: str,
               max_episode_s: float, codec: str, gop_seconds: float, engine: str,
               workers: int | None, ray_address: str | None) -> None:
    """Export sessions (directories or s3:// URLs) as a LeRobot v3.0 dataset with per-frame
    actions."""
    from tqdm import tqdm

    from capture.export import export_dataset, format_report
    from capture.export.engine import EngineOptions

    size_wh = _parse_size(size)
    options = EngineOptions(engine=engine, workers=workers, ray_address=ray_address)
    with tqdm(desc="exporting", unit=" frames", file=sys.stderr, disable=None) as bar:
        def progress(frames_done: int) -> None:
            bar.update(frames_done - bar.n)

        report = export_dataset(list(session_dirs), out, fps=fps, size=size_wh,
                                max_episode_s=max_episode_s, progress=progress, codec=codec,
                                gop_seconds=gop_seconds, engine=options)
    click.echo(format_report(report))


@cli.group()
def dataset() -> None:
    """Check datasets."""


@dataset.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def dataset_verify(path: Path) -> None:
    """Check a dataset against LeRobot's loading rules; exit 1 if anything is wrong."""
    from capture.export.verify import verify_dataset

    report = verify_dataset(path)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


# --- agent --------------------------------------------------------------------------------------
@cli.command()
@click.option("--backend", type=click.Choice(video.backend_names()), default=None,
              help="Video backend (default: [agent] backend in the config file, else builtin).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port of the local page on 127.0.0.1 (default: any free port).")
@click.option("--no-browser", is_flag=True, help="Do not open the page in the browser.")
@click.option("--display", default=None, help="X display to watch (default: $DISPLAY).")
@obs_connection_options
@click.option("--print-config", is_flag=True,
              help="Print a config file with every agent setting documented, and exit.")
def agent(backend: str | None, port: int | None, no_browser: bool, display: str | None,
          print_config: bool, **obs_options: Any) -> None:
    """Run the desktop agent: records consented games only while you play them.

    It waits for a game you consented to, records it while its window has focus (pausing when
    another window has focus or after a while without input), splits long play into segments,
    checks each segment right after it is recorded, and stops when the game exits. It serves a
    page on 127.0.0.1 (a one-time sign-in address is printed on a line of its own; press Enter
    for a new one) to give or withdraw consent and to see, check and delete recordings. Stop it
    with Ctrl-C.
    """
    from dataclasses import replace

    from capture.agent.settings import documented_config, load_agent_settings

    if print_config:
        click.echo(documented_config(), nl=False)
        return
    from capture.agent.agent import Agent
    from capture.agent.web import WebServer

    settings = load_agent_settings()
    settings = replace(settings, backend=backend or settings.backend,
                       port=settings.port if port is None else port,
                       open_browser=settings.open_browser and not no_browser,
                       display=display or settings.display)
    obs_settings = obs_settings_from(obs_options) if settings.backend == "obs" else None
    say = lambda message: click.echo(message, err=True)  # noqa: E731
    the_agent = Agent(settings, say=say, video_options=obs_settings)
    server = WebServer(the_agent, port=settings.port)
    server.start()
    try:
        click.echo(server.login_url())
        say(f"Open the address above (it works once, within a minute); then {server.url} "
            "is the page. Press Enter here for a new address.")
        server.hand_out_login_urls(sys.stdin, click.echo)
        if settings.open_browser:
            server.open_browser()
        the_agent.run(stop_on_signals())
    finally:
        server.stop()


# --- demo ---------------------------------------------------------------------------------------
@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("capture-demo"), show_default=True,
              help="Where the demo puts its data dir, session and dataset.")
@click.option("--duration", type=float, default=20.0, show_default=True)
@click.option("--display", default=None,
              help="Use this X display instead of starting a private Xvfb.")
def demo(out: Path, duration: float, display: str | None) -> None:
    """Record a bundled game driven by a scripted player, export and verify a dataset.

    Runs on a private Xvfb (so it never moves your own mouse) under a demo consent that is
    marked synthetic, in its own data dir under --out.
    """
    from capture.demo.run import run_demo

    run_demo(out, duration_s=duration, display=display, say=lambda m: click.echo(m, err=True))


def main() -> None:
    cli()
