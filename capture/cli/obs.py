"""`capture obs setup | doctor` and the --obs-* options: make OBS ready, say what is wrong."""

from __future__ import annotations

import base64
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from capture.errors import CaptureError
from capture.sizes import parse_size
from capture.video.obs import config as obs_config
from capture.video.obs.client import ObsClient, ObsError
from capture.video.obs.settings import PASSWORD_VARIABLE, ObsSettings, resolve

F = TypeVar("F", bound=Callable[..., Any])


def obs_connection_options(command: F) -> F:
    """Add --obs-host/--obs-port/--obs-password; resolve them with `obs_settings_from(kwargs)`."""
    for option in reversed([
        click.option("--obs-host", default=None, metavar="HOST",
                     help="OBS websocket host [env OBS_WEBSOCKET_HOST, config obs.host; "
                          "default 127.0.0.1]."),
        click.option("--obs-port", type=click.IntRange(1, 65535), default=None,
                     help="OBS websocket port [env OBS_WEBSOCKET_PORT, config obs.port; "
                          "default 4455]."),
        click.option("--obs-password", default=None, metavar="PASSWORD",
                     help="OBS websocket password [env OBS_WEBSOCKET_PASSWORD, config "
                          "obs.password]; prefer those two: the command line is visible to "
                          "other users."),
    ]):
        command = option(command)
    return command


def obs_settings_from(options: dict[str, Any]) -> ObsSettings:
    """Pops the three connection options from a command's keyword arguments and resolves them."""
    return resolve(options.pop("obs_host", None), options.pop("obs_port", None),
                   options.pop("obs_password", None))


def _parse_size(_ctx: click.Context, _param: click.Parameter,
                value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def obs() -> None:
    """Use OBS Studio to record video: set it up, and check it."""


@obs.command()
@obs_connection_options
@click.option("--fps", type=click.IntRange(1, 240), default=30, show_default=True,
              help="Frame rate OBS records at.")
@click.option("--size", callback=_parse_size, default=None, metavar="WxH",
              help="Canvas and recording size (default: your current OBS canvas, else the "
                   "captured display's size).")
@click.option("--record-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where OBS writes recordings (default: $CAPTURE_HOME/obs-recordings).")
@click.option("--capture-display", default=None, metavar=":N",
              help="Capture this whole X display instead of your current OBS scene.")
@click.option("--yes", is_flag=True, help="Change OBS's global settings without asking.")
def setup(fps: int, size: tuple[int, int] | None, record_dir: Path | None,
          capture_display: str | None, yes: bool, **connection: Any) -> None:
    """Give OBS a websocket server, a `capture` profile and a `capture` scene collection.

    The collection shows what your current OBS scene shows (or --capture-display) and loads
    capture's clock script. Other profiles and collections are never touched; switching OBS to
    ours, and changing its websocket settings, happens only if you agree (or pass --yes).
    Running it again changes nothing.
    """
    from capture.paths import data_dir

    settings = obs_settings_from(connection)
    if not settings.password:
        raise CaptureError("choose a password for OBS's websocket server and give it with "
                           f"{PASSWORD_VARIABLE}=..., `password` in the [obs] table of "
                           "capture's config file, or --obs-password (capture needs the same "
                           "password to connect)")
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"note: setup edits the OBS config of this computer, not of {settings.host}")
    config_dir = obs_config.obs_config_dir()
    version = obs_config.installed_obs_version()
    request = obs_config.SetupRequest(
        port=settings.port, password=settings.password, fps=fps, size=size,
        record_dir=(record_dir or data_dir() / "obs-recordings").absolute(),
        capture_display=capture_display, obs_version=version)
    plan = obs_config.plan_setup(config_dir, request)
    found = ("OBS " + ".".join(map(str, version)) if version
             else "OBS not found: writing the settings of every OBS version")
    click.echo(f"OBS config: {config_dir} ({found})")
    click.echo(f"capture shows: {plan.capture_summary}")
    running = obs_config.running_obs_pids(config_dir)
    if not plan.changes:
        click.echo(f"nothing to change: OBS is set up for capture (websocket port "
                   f"{settings.port}, profile '{obs_config.PROFILE}', scene collection "
                   f"'{obs_config.COLLECTION}').")
        click.echo(_running_text(running, changed=False))
        return
    for change in plan.changes:
        click.echo(f"  {change.describe(config_dir)}")
    include_shared = yes or not plan.needs_agreement or (sys.stdin.isatty() and click.confirm(
        "Turn on OBS's websocket server with these settings and switch OBS to the "
        f"'{obs_config.PROFILE}' profile and scene collection?", default=True))
    applied = plan.apply(include_shared=include_shared)
    click.echo(f"changed {len(applied)} setting(s) in {len({c.path for c in applied})} file(s).")
    if not include_shared:
        click.echo("left OBS's global settings (global.ini) alone: capture cannot reach OBS "
                   "until they match; run this again and agree, or pass --yes.")
    click.echo(_running_text(running, changed=bool(applied)))


def _running_text(pids: list[int], *, changed: bool) -> str:
    if not pids:
        return ("OBS is not running: the changes take effect when you start OBS." if changed
                else "OBS is not running.")
    which = ", ".join(map(str, pids))
    if not changed:
        return f"OBS is running (pid {which}); no restart needed."
    return (f"OBS is running (pid {which}): it must be restarted for the changes to take "
            "effect. Quit OBS, run this command again (OBS rewrites global.ini when it "
            "quits), then start OBS.")


# --- doctor -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Check:
    ok: bool | None          # None = could not check (an earlier problem explains why)
    text: str
    fix: str = ""

    def line(self) -> str:
        label = {True: "OK", False: "PROBLEM", None: "SKIPPED"}[self.ok]
        hint = f"\n         fix: {self.fix}" if self.fix and self.ok is False else ""
        return f"{label:<8} {self.text}{hint}"


@obs.command()
@obs_connection_options
def doctor(**connection: Any) -> None:
    """Check that OBS can record for capture; exit 1 if anything is wrong."""
    settings = obs_settings_from(connection)
    problems = 0
    for check in diagnose(settings, obs_config.obs_config_dir()):
        click.echo(check.line())
        problems += check.ok is False
    click.echo("all good" if not problems else f"{problems} problem(s)")
    if problems:
        sys.exit(1)


def diagnose(settings: ObsSettings, config_dir: Path) -> list[Check]:
    """Every check of `capture obs doctor`, in order."""
    checks = _file_checks(settings, config_dir)
    pids = obs_config.running_obs_pids(config_dir)
    checks.append(Check(True, f"OBS is running (pid {', '.join(map(str, pids))})") if pids else
                  Check(False, "OBS is not running (for this config directory)",
                        "start OBS (`obs`), then run this again"))
    where = f"{settings.host}:{settings.port}"
    try:
        with socket.create_connection((settings.host, settings.port), timeout=3.0):
            pass
        checks.append(Check(True, f"websocket port {where} is reachable"))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        checks.append(Check(False, f"websocket port {where} is not reachable ({reason})",
                            "start OBS and run `capture obs setup` so its websocket server "
                            "listens on this port"))
        return [*checks, *_skipped("needs the websocket")]
    try:
        client = ObsClient(settings.host, settings.port, settings.password).connect()
    except ObsError as exc:
        problem, _, hint = str(exc).partition(" — ")
        checks.append(Check(False, f"OBS did not accept the connection: {problem}",
                            hint or "run `capture obs setup`, then restart OBS"))
        return [*checks, *_skipped("needs the websocket")]
    with client:
        checks.append(Check(True, "OBS accepted the password"))
        checks += _live_checks(client)
    return checks


def _skipped(reason: str) -> list[Check]:
    return [Check(None, f"{what} ({reason})") for what in (
        "OBS version", "current profile and scene collection", "recording format",
        "output resolution and frame rate", "capture source")]


def _file_checks(settings: ObsSettings, config_dir: Path) -> list[Check]:
    if not config_dir.is_dir():
        return [Check(False, f"no OBS config found at {config_dir}",
                      "start OBS once, or run `capture obs setup`")]
    checks = [Check(True, f"OBS config found: {config_dir}")]
    global_ini = obs_config.IniFile.load(config_dir / "global.ini")
    enabled = global_ini.get("OBSWebSocket", "ServerEnabled")
    port = global_ini.get("OBSWebSocket", "ServerPort")
    plugin_json = config_dir / "plugin_config" / "obs-websocket" / "config.json"
    if enabled is None and plugin_json.exists():
        document = obs_config.load_json(plugin_json) or {}
        enabled = str(document.get("server_enabled", "")).lower()
        port = str(document.get("server_port", ""))
    if enabled != "true":
        checks.append(Check(False, "OBS's websocket server is turned off in its config",
                            "run `capture obs setup` (or OBS: Tools > WebSocket Server Settings)"))
    elif port != str(settings.port):
        checks.append(Check(False, f"OBS's websocket server is set to port {port}, capture uses "
                                   f"{settings.port}",
                            f"run `capture obs setup --obs-port {settings.port}` or use "
                            f"--obs-port {port}"))
    else:
        checks.append(Check(True, f"OBS's websocket server is on in its config (port {port})"))
    collection = obs_config.load_json(
        config_dir / "basic" / "scenes" / f"{obs_config.COLLECTION}.json")
    scripts = list(obs_config.iter_scripts(collection or {}))
    clock = [p for p in scripts if p.name == obs_config.clock_script_path().name]
    if collection is None:
        checks.append(Check(False, "capture's scene collection is missing",
                            "run `capture obs setup`"))
    elif not clock:
        checks.append(Check(False, "capture's scene collection does not load the clock script",
                            "run `capture obs setup`"))
    elif not clock[0].is_file():
        checks.append(Check(False, f"the clock script {clock[0]} does not exist",
                            "run `capture obs setup` again (capture was moved or reinstalled)"))
    else:
        checks.append(Check(True, f"capture's scene collection loads the clock script {clock[0]}"))
    return checks


def _live_checks(client: ObsClient) -> list[Check]:
    checks = []
    version = client.version()
    checks.append(Check(True, f"OBS {version.get('obsVersion')} with obs-websocket "
                              f"{version.get('obsWebSocketVersion')}"))
    profile = client.call("GetProfileList").get("currentProfileName")
    collection = client.call("GetSceneCollectionList").get("currentSceneCollectionName")
    ours = profile == obs_config.PROFILE and collection == obs_config.COLLECTION
    checks.append(Check(ours, f"OBS uses profile '{profile}' and scene collection '{collection}'",
                        "run `capture obs setup`, then restart OBS (or pick profile and scene "
                        f"collection '{obs_config.PROFILE}' in OBS's menus)"))
    checks.append(_format_check(client))
    video = client.video_settings()
    fps = video.get("fpsNumerator", 0) / max(1, video.get("fpsDenominator", 1))
    checks.append(Check(True, f"OBS records {video.get('outputWidth')}x{video.get('outputHeight')} "
                              f"at {fps:g} fps"))
    checks.append(_source_check(client))
    return checks


def _format_check(client: ObsClient) -> Check:
    def parameter(category: str, name: str) -> str:
        value = client.call("GetProfileParameter", parameterCategory=category,
                            parameterName=name)
        return str(value.get("parameterValue") or value.get("defaultParameterValue") or "")

    category = "AdvOut" if parameter("Output", "Mode") == "Advanced" else "SimpleOutput"
    fmt = parameter(category, "RecFormat2") or parameter(category, "RecFormat")
    return Check(fmt == "mkv", f"recording format is {fmt or 'unknown'}",
                 "run `capture obs setup` (MKV survives a crash; capture expects it)")


def _source_check(client: ObsClient) -> Check:
    scene = client.call("GetCurrentProgramScene").get("currentProgramSceneName", "")
    items = client.call("GetSceneItemList", sceneName=scene).get("sceneItems", [])
    shown = [i.get("sourceName") for i in items if i.get("sceneItemEnabled")]
    if not shown:
        return Check(False, f"scene '{scene}' shows no source",
                     "run `capture obs setup` (or add the game's window to the scene)")
    shot = client.call("GetSourceScreenshot", sourceName=scene, imageFormat="ppm",
                       imageWidth=160)
    if _is_black(shot.get("imageData", "")):
        return Check(False, f"scene '{scene}' ({', '.join(map(str, shown))}) is all black",
                     "start the game, or check the captured display/window in OBS")
    return Check(True, f"scene '{scene}' shows {', '.join(map(str, shown))} (not black)")


def _is_black(data_url: str) -> bool:
    """True if a base64 binary PPM (P6, as OBS's screenshot sends it) has no bright pixel."""
    image = base64.b64decode(data_url.partition(",")[2] or data_url)
    fields = image.split(maxsplit=4)       # b"P6", width, height, maxval, pixels
    if len(fields) < 5 or fields[0] != b"P6":
        return True
    return max(fields[4], default=0) <= 16
