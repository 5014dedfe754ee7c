"""`capture obs doctor` and `capture obs setup` against a real OBS under Xvfb."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from Xlib import X
from Xlib.display import Display

from capture.cli import cli
from capture.video.obs.config import IniFile, SetupRequest, obs_config_dir, plan_setup
from capture.xserver import Xvfb
from tests.obs.harness import ObsInstance, free_port, isolated_settings, obs_available

__all__ = ["isolated_settings"]   # a fixture, used by name below

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")]
OBS_DISPLAY = "painted"
OBS_SIZE = (640, 360)


@pytest.fixture(scope="module")
def painted(xvfb: Xvfb) -> Iterator[str]:
    """The game display with an orange window on it, so captures are not black."""
    display = Display(xvfb.display)
    window = display.screen().root.create_window(
        0, 0, 640, 360, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent,
        background_pixel=0xFF8800)
    window.map()
    display.sync()
    yield xvfb.display
    display.close()




def run(home: Path, *args: str, port: int, password: str) -> Result:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "OBS_WEBSOCKET_PORT": str(port), "OBS_WEBSOCKET_PASSWORD": password}
    return CliRunner().invoke(cli, ["obs", *args], env=env, catch_exceptions=False)


def test_doctor_is_happy_with_a_working_obs(obs: ObsInstance, isolated_settings: Path) -> None:
    result = run(obs.home, "doctor", port=obs.port, password=obs.password)
    assert result.exit_code == 0, result.output
    assert "PROBLEM" not in result.output and "SKIPPED" not in result.output
    for expected in ("OK       OBS is running", "OBS accepted the password",
                     "OBS 29", "recording format is mkv", "OBS records 640x360 at 30 fps",
                     "shows Game display (not black)", "loads the clock script",
                     "profile 'capture' and scene collection 'capture'"):
        assert expected in result.output
    assert obs.password not in result.output


def test_doctor_names_a_wrong_password(obs: ObsInstance, isolated_settings: Path) -> None:
    wrong = "wrong-password-9876"
    result = run(obs.home, "doctor", port=obs.port, password=wrong)
    assert result.exit_code == 1
    assert "PROBLEM  OBS did not accept the connection: OBS refused the password" in result.output
    assert "SKIPPED" in result.output
    assert wrong not in result.output and obs.password not in result.output


def test_doctor_names_a_disabled_websocket(tmp_path: Path, isolated_settings: Path) -> None:
    home = tmp_path / "home"
    config_dir = obs_config_dir({"HOME": str(home)})
    port = free_port()
    plan_setup(config_dir, SetupRequest(port=port, password="pw-abc", record_dir=tmp_path,
                                        obs_version=(29, 0, 2))).apply(include_shared=True)
    global_ini = IniFile.load(config_dir / "global.ini")
    global_ini.set("OBSWebSocket", "ServerEnabled", "false")
    (config_dir / "global.ini").write_text(global_ini.text())
    result = run(home, "doctor", port=port, password="pw-abc")
    assert result.exit_code == 1
    assert "PROBLEM  OBS's websocket server is turned off in its config" in result.output
    assert "fix: run `capture obs setup`" in result.output
    assert "PROBLEM  OBS is not running" in result.output
    assert "pw-abc" not in result.output


def test_setup_on_a_running_obs_says_restart(obs: ObsInstance, isolated_settings: Path,
                                             capture_home: Path) -> None:
    args = ("setup", "--yes", "--capture-display", obs.capture_display, "--size", "640x360",
            "--record-dir", str(obs.record_dir))
    unchanged = run(obs.home, *args, port=obs.port, password=obs.password)
    assert "nothing to change" in unchanged.output, unchanged.output
    assert "OBS is running" in unchanged.output and "no restart needed" in unchanged.output

    changed = run(obs.home, *args, "--fps", "60", port=obs.port, password=obs.password)
    assert changed.exit_code == 0, changed.output
    assert "basic/profiles/capture/basic.ini [Video] FPSInt: 30 -> 60" in changed.output
    assert "must be restarted" in changed.output
    assert obs.password not in unchanged.output + changed.output


def test_setup_without_a_password_says_how_to_give_one(tmp_path: Path,
                                                       isolated_settings: Path) -> None:
    result = run(tmp_path, "setup", "--yes", port=4455, password="")
    assert result.exit_code == 1
    assert "OBS_WEBSOCKET_PASSWORD" in result.output
    assert not (tmp_path / ".config").exists()
