"""OBS config files (setup is idempotent and leaves the player's own files alone) and settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capture.cli import cli
from capture.errors import CaptureError
from capture.video.obs import settings as obs_settings
from capture.video.obs.config import (
    PLUGIN_JSON_SINCE,
    IniFile,
    SetupRequest,
    clock_script_path,
    installed_obs_version,
    iter_scripts,
    obs_config_dir,
    plan_setup,
)
from capture.xserver import Xvfb
from tests.obs.harness import ObsInstance, isolated_settings, obs_available

__all__ = ["isolated_settings"]   # a fixture, used by name below

PASSWORD = "pw-for-tests-5678"
OUR_FILES = {"global.ini", "basic/profiles/capture/basic.ini", "basic/scenes/capture.json"}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def run_setup(home: Path, *args: str, xdg: Path | None = None) -> Result:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg) if xdg else None,
           "OBS_WEBSOCKET_PASSWORD": PASSWORD}
    return CliRunner().invoke(cli, ["obs", "setup", *args], env=env, catch_exceptions=False)


@pytest.fixture
def home(tmp_path: Path, capture_home: Path, isolated_settings: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_fresh_home_gets_exactly_our_files_and_second_run_changes_nothing(home: Path) -> None:
    first = run_setup(home, "--yes", "--fps", "60", "--size", "800x600")
    assert first.exit_code == 0, first.output
    config_dir = home / ".config" / "obs-studio"
    files = snapshot(config_dir)
    version = installed_obs_version()
    plugin_json = {"plugin_config/obs-websocket/config.json"}
    assert set(files) == OUR_FILES | (
        plugin_json if version is None or version[:2] >= PLUGIN_JSON_SINCE else set())
    assert "[OBSWebSocket] ServerEnabled: (unset) -> true" in first.output
    assert "OBS is not running" in first.output
    assert PASSWORD not in first.output
    assert PASSWORD in files["global.ini"].decode()    # OBS keeps it there, in plain text
    profile = IniFile(files["basic/profiles/capture/basic.ini"].decode())
    assert (profile.get("Video", "FPSInt"), profile.get("Video", "OutputCX")) == ("60", "800")
    assert profile.get("SimpleOutput", "RecFormat2") == "mkv"
    collection = json.loads(files["basic/scenes/capture.json"])
    assert list(iter_scripts(collection)) == [clock_script_path()]

    second = run_setup(home, "--yes", "--fps", "60", "--size", "800x600")
    assert second.exit_code == 0, second.output
    assert "nothing to change" in second.output
    assert snapshot(config_dir) == files


def test_player_files_stay_untouched_and_their_scene_is_copied(home: Path) -> None:
    config_dir = home / ".config" / "obs-studio"
    theirs = {
        "global.ini": "\ufeff[General]\r\nLastVersion=486539266\r\nFirstRun=true\r\n\r\n[Basic]\r\n"
                      "Profile=Streaming\r\nProfileDir=Streaming\r\nSceneCollection=Mine\r\n"
                      "SceneCollectionFile=Mine\r\nWeirdCase=KeepMe\r\n",
        "basic/profiles/Streaming/basic.ini": "[General]\nName=Streaming\n\n[Video]\n"
                                              "BaseCX=1920\nBaseCY=1080\n",
        "basic/scenes/Mine.json": json.dumps({
            "name": "Mine", "current_scene": "Game", "current_program_scene": "Game",
            "scene_order": [{"name": "Game"}, {"name": "Chatting"}],
            "sources": [
                {"id": "xcomposite_input", "name": "Game window",
                 "settings": {"capture_window": "123\r\nGame\r\ngame"}},
                {"id": "image_source", "name": "Webcam frame", "settings": {"file": "/x.png"}},
                {"id": "browser_source", "name": "Chat", "settings": {"url": "https://x"}},
                {"id": "scene", "name": "Game", "settings": {"items": [
                    {"name": "Game window", "id": 1}, {"name": "Overlay", "id": 2}]}},
                {"id": "scene", "name": "Chatting", "settings": {"items": [
                    {"name": "Chat", "id": 1}]}},
            ],
            "groups": [{"id": "group", "name": "Overlay", "settings": {"items": [
                {"name": "Webcam frame", "id": 1}]}}],
            "modules": {"scripts-tool": [{"path": "/their/script.lua", "settings": {}}]},
        }, indent=4),
    }
    for name, text in theirs.items():
        (config_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (config_dir / name).write_bytes(text.encode())
    before = snapshot(config_dir)

    result = run_setup(home, "--yes")
    assert result.exit_code == 0, result.output
    assert "scene 'Game' copied from collection 'Mine'" in result.output
    after = snapshot(config_dir)
    for name in ("basic/profiles/Streaming/basic.ini", "basic/scenes/Mine.json"):
        assert after[name] == before[name]
    ours = json.loads(after["basic/scenes/capture.json"])
    assert ours["current_program_scene"] == "Game"
    assert sorted(s["name"] for s in ours["sources"]) == ["Game", "Game window", "Webcam frame"]
    assert [g["name"] for g in ours["groups"]] == ["Overlay"]
    assert list(iter_scripts(ours)) == [clock_script_path()]
    profile = IniFile(after["basic/profiles/capture/basic.ini"].decode())
    assert profile.get("Video", "BaseCX") == "1920"        # the player's canvas size
    global_ini = after["global.ini"].decode("utf-8")
    assert global_ini.startswith("\ufeff[General]\r\n") and "\r\nWeirdCase=KeepMe\r\n" in global_ini
    assert "SceneCollectionFile=capture\r\n" in global_ini
    assert "Profile: Streaming -> capture" in result.output

    again = run_setup(home, "--yes")
    assert "nothing to change" in again.output and snapshot(config_dir) == after


def test_without_agreement_global_ini_is_left_alone(home: Path) -> None:
    result = run_setup(home)    # CliRunner's stdin is not a terminal: no question, no change
    assert result.exit_code == 0, result.output
    assert "left OBS's global settings (global.ini) alone" in result.output
    config_dir = home / ".config" / "obs-studio"
    assert {"basic/profiles/capture/basic.ini", "basic/scenes/capture.json"} == set(
        snapshot(config_dir))


def test_xdg_config_home_is_honoured(home: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    result = run_setup(home, "--yes", xdg=xdg)
    assert result.exit_code == 0, result.output
    assert (xdg / "obs-studio" / "global.ini").exists()
    assert not (home / ".config").exists()
    assert obs_config_dir({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}) == Path("/x/obs-studio")
    assert obs_config_dir({"HOME": "/h"}) == Path("/h/.config/obs-studio")


@pytest.mark.parametrize(("version", "in_ini", "in_json"), [
    ((29, 0, 2), True, False), ((30, 2, 0), False, True), (None, True, True)])
def test_websocket_settings_go_where_that_obs_reads_them(
        tmp_path: Path, version: tuple[int, int, int] | None, in_ini: bool, in_json: bool) -> None:
    request = SetupRequest(port=4460, password=PASSWORD, record_dir=tmp_path / "rec",
                           obs_version=version)
    plan_setup(tmp_path, request).apply(include_shared=True)
    assert (IniFile.load(tmp_path / "global.ini").get("OBSWebSocket", "ServerPort")
            == ("4460" if in_ini else None))
    plugin = tmp_path / "plugin_config" / "obs-websocket" / "config.json"
    assert plugin.exists() == in_json
    if in_json:
        assert json.loads(plugin.read_text())["server_port"] == 4460
    assert not plan_setup(tmp_path, request).changes


def test_ini_edits_keep_everything_else() -> None:
    ini = IniFile("\ufeff; comment\r\n[A]\r\nKey=1\r\nodd line\r\n\r\n[B]\r\nx = y\r\n")
    ini.set("A", "New", "2")
    ini.set("B", "x", "z")
    ini.set("C", "CamelCase", "3")
    assert ini.text() == ("\ufeff; comment\r\n[A]\r\nKey=1\r\nodd line\r\nNew=2\r\n\r\n[B]\r\n"
                          "x=z\r\n\r\n[C]\r\nCamelCase=3\r\n")
    assert ini.get("A", "key") is None and ini.get("C", "CamelCase") == "3"


@pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")
def test_nothing_to_change_after_obs_rewrote_its_files(tmp_path: Path, xvfb: Xvfb) -> None:
    instance = ObsInstance(tmp_path / "obs", xvfb.display)
    with instance:
        pass     # OBS saves the collection and global.ini as it starts and when switching
    request = SetupRequest(port=instance.port, password=instance.password,
                           record_dir=instance.record_dir, fps=instance.fps, size=instance.size,
                           capture_display=xvfb.display, obs_version=(29, 0, 2))
    assert [c.describe(instance.config_dir) for c in
            plan_setup(instance.config_dir, request).changes] == []


# --- settings: command line > environment > config file > defaults -----------------------------
def test_settings_precedence(isolated_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert obs_settings.resolve() == obs_settings.ObsSettings("127.0.0.1", 4455, None)
    isolated_settings.write_text('[obs]\nhost = "filehost"\nport = 1111\npassword = "filepw"\n')
    assert obs_settings.resolve() == obs_settings.ObsSettings("filehost", 1111, "filepw")
    monkeypatch.setenv("OBS_WEBSOCKET_HOST", "envhost")
    monkeypatch.setenv("OBS_WEBSOCKET_PORT", "2222")
    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", "envpw")
    assert obs_settings.resolve() == obs_settings.ObsSettings("envhost", 2222, "envpw")
    resolved = obs_settings.resolve("clihost", 3333, "clipw")
    assert resolved == obs_settings.ObsSettings("clihost", 3333, "clipw")
    assert "clipw" not in repr(resolved) and "clipw" not in str(resolved.public_dict())


@pytest.mark.parametrize(("toml", "message"), [
    ('[obs]\nport = "4455"\n', "`obs.port` must be an integer 1-65535"),
    ("[obs]\nport = 70000\n", "`obs.port` must be an integer 1-65535"),
    ("[obs]\nhost = 5\n", "`obs.host` must be a string"),
    ('[obs]\npasword = "x"\n', "unknown key `obs.pasword`"),
    ("[obs\n", "not valid TOML"),
])
def test_bad_config_value_names_file_and_key(isolated_settings: Path, toml: str,
                                             message: str) -> None:
    isolated_settings.write_text(toml)
    with pytest.raises(CaptureError, match=message) as caught:
        obs_settings.resolve()
    assert caught.value.path == isolated_settings


def test_bad_port_variable_is_named(isolated_settings: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBS_WEBSOCKET_PORT", "http")
    with pytest.raises(CaptureError, match="OBS_WEBSOCKET_PORT must be an integer"):
        obs_settings.resolve()
