"""OBS Studio's own config files: find them and make OBS ready for capture, idempotently."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PROFILE = "capture"                 # profile name and directory under basic/profiles
COLLECTION = "capture"              # scene collection name and file name under basic/scenes
DISPLAY_SCENE = "Capture"           # scene we create when capturing a whole display
DISPLAY_SOURCE = "Game display"
DEFAULT_SIZE = (1280, 720)
PLUGIN_JSON_SINCE = (30, 2)         # obs-websocket 5.5 moved its settings out of global.ini
Version = tuple[int, int, int]


def clock_script_path() -> Path:
    """The OBS script that logs a host-clock time per rendered frame (loaded via scripts-tool)."""
    return Path(__file__).with_name("obs_clock_script.py")


def obs_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/obs-studio`, else `$HOME/.config/obs-studio` (where OBS looks on Linux)."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME") or Path.home()) / ".config"
    return base / "obs-studio"


def installed_obs_version() -> Version | None:
    """The version `obs --version` prints, or None if OBS is missing or says something else."""
    exe = shutil.which("obs")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def running_obs_pids(config_dir: Path) -> list[int]:
    """OBS processes that use `config_dir` (or whose environment we cannot read)."""
    pids = []
    for proc in psutil.process_iter(["name", "environ"]):
        if proc.info["name"] not in ("obs", "obs64", "obs.exe", "obs64.exe"):
            continue
        env = proc.info["environ"]
        if env is None or obs_config_dir(env).resolve() == config_dir.resolve():
            pids.append(proc.pid)
    return pids


# --- a line-preserving INI editor -----------------------------------------------------------
class IniFile:
    """An INI file edited in place: unknown lines, key case, a UTF-8 BOM and line ends survive."""

    def __init__(self, text: str = "") -> None:
        self.bom = text.startswith("\ufeff")
        text = text.removeprefix("\ufeff")
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.lines = text.splitlines()

    @classmethod
    def load(cls, path: Path) -> IniFile:
        return cls(path.read_bytes().decode("utf-8", errors="replace")) if path.exists() else cls()

    def text(self) -> str:
        body = self.newline.join(self.lines) + (self.newline if self.lines else "")
        return ("\ufeff" if self.bom else "") + body

    def _section_span(self, section: str) -> tuple[int, int] | None:
        start = None
        for index, line in enumerate(self.lines):
            stripped = line.strip()
            if stripped.startswith("[") and stripped.endswith("]"):
                if start is not None:
                    return start, index
                if stripped[1:-1].strip() == section:
                    start = index + 1
        return (start, len(self.lines)) if start is not None else None

    def _find(self, section: str, key: str) -> int | None:
        span = self._section_span(section)
        if span is None:
            return None
        for index in range(*span):
            name, sep, _ = self.lines[index].partition("=")
            if sep and name.strip() == key:
                return index
        return None

    def get(self, section: str, key: str) -> str | None:
        index = self._find(section, key)
        return None if index is None else self.lines[index].partition("=")[2].strip()

    def set(self, section: str, key: str, value: str) -> None:
        index = self._find(section, key)
        if index is not None:
            self.lines[index] = f"{key}={value}"
            return
        span = self._section_span(section)
        if span is None:
            if self.lines and self.lines[-1].strip():
                self.lines.append("")
            self.lines += [f"[{section}]", f"{key}={value}"]
            return
        end = span[1]
        while end > span[0] and not self.lines[end - 1].strip():
            end -= 1
        self.lines.insert(end, f"{key}={value}")


# --- what setup wants, and what it would change ------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetupRequest:
    """What `capture obs setup` was asked for; None means "keep or derive"."""

    port: int
    password: str
    record_dir: Path
    fps: int = 30
    size: tuple[int, int] | None = None
    capture_display: str | None = None
    obs_version: Version | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One setting (or one file's scene) that setup changes; `shared` = OBS-wide file."""

    path: Path
    key: str
    old: str | None
    new: str
    shared: bool = False
    secret: bool = False

    def describe(self, root: Path) -> str:
        def show(value: str | None) -> str:
            if value is None:
                return "(unset)"
            return "********" if self.secret and value else value

        name = self.path.relative_to(root) if self.path.is_relative_to(root) else self.path
        return f"{name} {self.key}: {show(self.old)} -> {show(self.new)}"


@dataclass
class SetupPlan:
    """The changes setup would make; `apply()` writes them (all, or only capture's own files)."""

    config_dir: Path
    scene: str
    capture_summary: str
    changes: list[Change] = field(default_factory=list)
    contents: dict[Path, bytes] = field(default_factory=dict)
    shared_paths: set[Path] = field(default_factory=set)
    record_dir: Path | None = None

    @property
    def needs_agreement(self) -> bool:
        return any(change.shared for change in self.changes)

    def apply(self, *, include_shared: bool) -> list[Change]:
        """Write the changed files (atomically); returns the changes written."""
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
        for path, content in self.contents.items():
            if path in self.shared_paths and not include_shared:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.capture-tmp")
            temporary.write_bytes(content)
            if path.exists():
                shutil.copymode(path, temporary)
            os.replace(temporary, path)
        return [c for c in self.changes if include_shared or not c.shared]


def plan_setup(config_dir: Path, request: SetupRequest) -> SetupPlan:
    """Compare OBS's files with what capture needs; nothing is written until `apply()`."""
    global_path = config_dir / "global.ini"
    global_ini = IniFile.load(global_path)
    size = request.size or _player_size(config_dir, global_ini, request.capture_display)
    collection, scene, summary = _desired_collection(config_dir, global_ini, request, size)
    plan = SetupPlan(config_dir=config_dir, scene=scene, capture_summary=summary,
                     record_dir=request.record_dir)
    _plan_ini(plan, global_path, global_ini, _global_settings(request), shared=True)
    profile_path = config_dir / "basic" / "profiles" / PROFILE / "basic.ini"
    _plan_ini(plan, profile_path, IniFile.load(profile_path), _profile_settings(request, size),
              shared=False)
    _plan_collection(plan, config_dir / "basic" / "scenes" / f"{COLLECTION}.json", collection)
    if request.obs_version is None or request.obs_version[:2] >= PLUGIN_JSON_SINCE:
        _plan_websocket_json(plan, request)
    return plan


def _global_settings(request: SetupRequest) -> dict[tuple[str, str], tuple[str, bool]]:
    """(section, key) -> (value, only_if_missing) for global.ini."""
    wanted: dict[tuple[str, str], tuple[str, bool]] = {
        # FirstRun=true means "the first run is done": no auto-configuration wizard, which
        # would otherwise rewrite the video settings of the profile it opens (ours).
        ("General", "FirstRun"): ("true", True),
    }
    if request.obs_version is not None:
        major, minor, patch = request.obs_version
        # LastVersion stops the "what's new" dialog; OBS packs it as major<<24 | minor<<16 | patch.
        wanted["General", "LastVersion"] = (str(major << 24 | minor << 16 | patch), True)
    wanted |= {
        ("Basic", "Profile"): (PROFILE, False),
        ("Basic", "ProfileDir"): (PROFILE, False),
        ("Basic", "SceneCollection"): (COLLECTION, False),
        ("Basic", "SceneCollectionFile"): (COLLECTION, False),
    }
    if request.obs_version is None or request.obs_version[:2] < PLUGIN_JSON_SINCE:
        wanted.update({
            ("OBSWebSocket", "FirstLoad"): ("false", False),
            ("OBSWebSocket", "ServerEnabled"): ("true", False),
            ("OBSWebSocket", "ServerPort"): (str(request.port), False),
            ("OBSWebSocket", "AlertsEnabled"): ("false", False),
            ("OBSWebSocket", "AuthRequired"): ("true", False),
            ("OBSWebSocket", "ServerPassword"): (request.password, False),
        })
    return wanted


def _profile_settings(request: SetupRequest,
                      size: tuple[int, int]) -> dict[tuple[str, str], tuple[str, bool]]:
    width, height = (str(v) for v in size)
    return {key: (value, False) for key, value in {
        ("General", "Name"): PROFILE,
        ("Video", "BaseCX"): width, ("Video", "BaseCY"): height,
        ("Video", "OutputCX"): width, ("Video", "OutputCY"): height,
        ("Video", "FPSType"): "1", ("Video", "FPSInt"): str(request.fps),
        ("Output", "Mode"): "Simple",
        ("SimpleOutput", "FilePath"): str(request.record_dir),
        ("SimpleOutput", "RecFormat"): "mkv",       # OBS 29.0
        ("SimpleOutput", "RecFormat2"): "mkv",      # OBS 29.1 and later
        ("SimpleOutput", "RecEncoder"): "x264",
        ("SimpleOutput", "RecQuality"): "Small",
        ("SimpleOutput", "RecRB"): "false",
    }.items()}


def _plan_ini(plan: SetupPlan, path: Path, ini: IniFile,
              wanted: Mapping[tuple[str, str], tuple[str, bool]], *, shared: bool) -> None:
    before = ini.text()
    for (section, key), (value, only_if_missing) in wanted.items():
        old = ini.get(section, key)
        if old == value or (only_if_missing and old is not None):
            continue
        ini.set(section, key, value)
        plan.changes.append(Change(path, f"[{section}] {key}", old, value, shared=shared,
                                   secret=key == "ServerPassword"))
    if ini.text() != before or not path.exists():
        plan.contents[path] = ini.text().encode("utf-8")
        if shared:
            plan.shared_paths.add(path)


def _plan_websocket_json(plan: SetupPlan, request: SetupRequest) -> None:
    path = plan.config_dir / "plugin_config" / "obs-websocket" / "config.json"
    try:
        current = json.loads(path.read_text(encoding="utf-8-sig")) if path.exists() else {}
    except ValueError:
        current = {}
    wanted = {"first_load": False, "server_enabled": True, "server_port": request.port,
              "alerts_enabled": False, "auth_required": True,
              "server_password": request.password}
    updated = dict(current)
    for key, value in wanted.items():
        if current.get(key) != value:
            old = None if key not in current else json.dumps(current[key])
            plan.changes.append(Change(path, key, old, json.dumps(value), shared=True,
                                       secret=key == "server_password"))
            updated[key] = value
    if updated != current or not path.exists():
        plan.contents[path] = (json.dumps(updated, indent=4) + "\n").encode("utf-8")
        plan.shared_paths.add(path)


# --- scene collections --------------------------------------------------------------------------
def load_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def player_collection_path(config_dir: Path, global_ini: IniFile | None = None) -> Path | None:
    """The scene collection OBS opens next (global.ini [Basic] SceneCollectionFile)."""
    global_ini = global_ini or IniFile.load(config_dir / "global.ini")
    name = global_ini.get("Basic", "SceneCollectionFile")
    return config_dir / "basic" / "scenes" / f"{name}.json" if name else None


def _desired_collection(config_dir: Path, global_ini: IniFile, request: SetupRequest,
                        size: tuple[int, int]) -> tuple[dict[str, Any], str, str]:
    """Our collection document, its scene and a one-line summary of what it captures."""
    if request.capture_display is not None:
        source = _display_source(request.capture_display)
        return (_collection(DISPLAY_SCENE, [source], [], size),
                DISPLAY_SCENE, f"display {request.capture_display} (screen 0)")
    player_path = player_collection_path(config_dir, global_ini)
    player = load_json(player_path) if player_path else None
    if player is not None and player_path is not None and player_path.stem == COLLECTION:
        scene = str(player.get("current_program_scene") or player.get("current_scene") or "")
        summary = f"scene '{scene}' (kept from capture's collection)"
        return _with_clock_script(player), scene, summary
    if player is not None and player_path is not None:
        copied = _copy_current_scene(player)
        if copied is not None:
            scene, sources, groups = copied
            names = ", ".join(s["name"] for s in sources if s.get("id") != "scene") or "nothing"
            return (_collection(scene, sources, groups, size, scene_included=True), scene,
                    f"scene '{scene}' copied from collection '{player_path.stem}' ({names})")
    return (_collection(DISPLAY_SCENE, [_display_source(None)], [], size), DISPLAY_SCENE,
            "screen 0 of the display OBS runs on (no current OBS scene found)")


def _display_source(display: str | None) -> dict[str, Any]:
    settings: dict[str, Any] = {"screen": 0}
    if display is not None:
        # xshm_input ignores "server" unless "advanced" is on (OBS 29 linux-capture/xshm-input.c)
        settings = {"advanced": True, "server": display, "screen": 0}
    return {"id": "xshm_input", "versioned_id": "xshm_input", "name": DISPLAY_SOURCE,
            "enabled": True, "settings": settings}


def _collection(scene: str, sources: list[dict[str, Any]], groups: list[dict[str, Any]],
                size: tuple[int, int], *, scene_included: bool = False) -> dict[str, Any]:
    if not scene_included:
        items = [{"name": s["name"], "id": n, "visible": True, "locked": False, "rot": 0.0,
                  "pos": {"x": 0.0, "y": 0.0}, "scale": {"x": 1.0, "y": 1.0}, "align": 5,
                  "bounds_type": 2, "bounds_align": 0,   # scale to fit inside the canvas
                  "bounds": {"x": float(size[0]), "y": float(size[1])}}
                 for n, s in enumerate(sources, start=1)]
        sources = [*sources, {"id": "scene", "versioned_id": "scene", "name": scene,
                              "enabled": True, "settings": {"id_counter": len(items),
                                                            "custom_size": False,
                                                            "items": items}}]
    return {
        "name": COLLECTION, "current_scene": scene, "current_program_scene": scene,
        "scene_order": [{"name": scene}], "sources": sources, "groups": groups,
        "transitions": [],
        "modules": {"scripts-tool": [{"path": str(clock_script_path()), "settings": {}}]},
    }


def _with_clock_script(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with our clock script among its scripts (a copy if it had to be added)."""
    if clock_script_path() in iter_scripts(document):
        return document
    modules = dict(document.get("modules") or {})
    modules["scripts-tool"] = [*modules.get("scripts-tool", []),
                               {"path": str(clock_script_path()), "settings": {}}]
    return {**document, "modules": modules}


def _copy_current_scene(
        player: dict[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The player's program scene with every source and group it shows, nested ones included."""
    scene = player.get("current_program_scene") or player.get("current_scene")
    sources = {s.get("name"): s for s in player.get("sources", []) if isinstance(s, dict)}
    groups = {g.get("name"): g for g in player.get("groups", []) if isinstance(g, dict)}
    if scene not in sources:
        return None
    wanted: list[str] = []
    pending: list[str] = [str(scene)]
    while pending:
        name = pending.pop()
        if name in wanted or (name not in sources and name not in groups):
            continue
        wanted.append(name)
        container = sources.get(name) or groups[name]
        pending += [str(item["name"]) for item in container.get("settings", {}).get("items", [])
                    if item.get("name") is not None]
    kept_sources = [s for n, s in sources.items() if n in wanted]
    kept_groups = [g for n, g in groups.items() if n in wanted]
    return str(scene), kept_sources, kept_groups


def _captured(document: dict[str, Any]) -> tuple[Any, ...]:
    """What a collection records and runs, ignoring the fields OBS adds when it saves."""
    scene = document.get("current_program_scene") or document.get("current_scene")
    copied = _copy_current_scene(document)
    shown = sorted(json.dumps(_identity(s), sort_keys=True)
                   for s in ([*copied[1], *copied[2]] if copied else []))
    scripts = tuple(sorted(map(str, iter_scripts(document))))
    return document.get("name"), scene, tuple(shown), scripts


def _identity(source: dict[str, Any]) -> list[Any]:
    """A source's name, kind and settings; for scenes and groups only the names they show."""
    settings = source.get("settings") or {}
    if source.get("id") in ("scene", "group"):
        return [source.get("name"), source.get("id"),
                [item.get("name") for item in settings.get("items", [])]]
    return [source.get("name"), source.get("id"), settings]


def _plan_collection(plan: SetupPlan, path: Path, desired: dict[str, Any]) -> None:
    existing = load_json(path) if path.exists() else None
    if existing is not None and _captured(existing) == _captured(desired):
        return
    old = "(missing)" if not path.exists() else ("(unreadable)" if existing is None
                                                   else _summary(existing))
    plan.changes.append(Change(path, "capture", old, _summary(desired)))
    plan.contents[path] = (json.dumps(desired, indent=4) + "\n").encode("utf-8")


def _summary(document: dict[str, Any]) -> str:
    copied = _copy_current_scene(document)
    scene = document.get("current_program_scene") or document.get("current_scene")
    if copied is None:
        return f"scene '{scene}' (not found)"
    shown = [f"{s.get('name')} ({s.get('id')}{_where(s)})" for s in copied[1]
             if s.get("id") != "scene"]
    scripts = [path.name for path in iter_scripts(document)]
    return (f"scene '{scene}' showing {', '.join(shown) or 'nothing'}; "
            f"scripts {', '.join(scripts) or 'none'}")


def _where(source: dict[str, Any]) -> str:
    server = source.get("settings", {}).get("server")
    return f" {server}" if server else ""


def _player_size(config_dir: Path, global_ini: IniFile,
                 capture_display: str | None) -> tuple[int, int]:
    """The player's canvas size, else the captured display's size, else DEFAULT_SIZE."""
    profile_dir = global_ini.get("Basic", "ProfileDir")
    if profile_dir:
        profile = IniFile.load(config_dir / "basic" / "profiles" / profile_dir / "basic.ini")
        width, height = profile.get("Video", "BaseCX"), profile.get("Video", "BaseCY")
        if width and height and width.isdigit() and height.isdigit():
            return int(width), int(height)
    if capture_display is not None:
        try:
            from Xlib.display import Display

            connection = Display(capture_display)
            screen = connection.screen()
            size = int(screen.width_in_pixels), int(screen.height_in_pixels)
            connection.close()
            return size
        except Exception:   # no X library or server: fall back to the default size
            pass
    return DEFAULT_SIZE


def iter_scripts(document: Mapping[str, Any]) -> Iterator[Path]:
    """The scripts a scene collection makes OBS load at start."""
    for module in document.get("modules", {}).get("scripts-tool", []):
        if isinstance(module, dict) and module.get("path"):
            yield Path(str(module["path"]))
