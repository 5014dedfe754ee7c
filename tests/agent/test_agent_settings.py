"""The agent's config file and start-up: documented keys, bad values named, crash recovery."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from capture.agent.agent import Agent
from capture.agent.settings import KEY_DOCS, AgentSettings, documented_config, load_agent_settings
from capture.cli import cli
from capture.errors import CaptureError
from capture.session.manifest import read_manifest
from capture.session.reader import needs_recovery
from tests.factories import gameplay_script
from tests.session.test_bundle import _crashed_session


def test_defaults_without_a_file(tmp_path: Path) -> None:
    assert load_agent_settings(tmp_path / "missing.toml") == AgentSettings()


def test_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[agent]\nbackend = "obs"\nfps = 60\nidle_pause_seconds = 12.5\n'
                    "segment_minutes = 5\nport = 8765\nopen_browser = false\n")
    settings = load_agent_settings(path)
    assert (settings.backend, settings.fps, settings.idle_pause_seconds, settings.segment_minutes,
            settings.port, settings.open_browser) == ("obs", 60, 12.5, 5.0, 8765, False)


@pytest.mark.parametrize("line, key", [
    ('backend = "vlc"', "agent.backend"),
    ("fps = 0", "agent.fps"),
    ('fps = "30"', "agent.fps"),
    ("idle_pause_seconds = -1", "agent.idle_pause_seconds"),
    ("segment_minutes = 600", "agent.segment_minutes"),
    ("port = 70000", "agent.port"),
    ('open_browser = "yes"', "agent.open_browser"),
    ("idle_seconds = 5", "agent.idle_seconds"),
])
def test_bad_values_name_the_file_and_key(tmp_path: Path, line: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[agent]\n{line}\n")
    with pytest.raises(CaptureError) as err:
        load_agent_settings(path)
    assert f"`{key}`" in str(err.value) and str(path) in str(err.value)


def test_bad_config_makes_the_agent_command_fail_plainly(tmp_path, monkeypatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[agent]\nfps = 1000\n")
    monkeypatch.setenv("CAPTURE_CONFIG", str(path))
    result = CliRunner().invoke(cli, ["agent", "--no-browser"])
    assert result.exit_code != 0
    assert "agent.fps" in result.output and str(path) in result.output


def test_documented_config_covers_every_key_and_parses(tmp_path: Path) -> None:
    text = documented_config()
    for key, doc in KEY_DOCS.items():
        assert key in text and doc in text
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert set(tomllib.loads(text)["agent"]) <= set(KEY_DOCS)
    assert load_agent_settings(path) == AgentSettings()


@pytest.mark.x11
def test_agent_recovers_crashed_sessions_on_start(xvfb, capture_home: Path) -> None:
    crashed = _crashed_session(capture_home / "sessions", gameplay_script(seconds=1),
                               extra_logged_frames=2)
    assert needs_recovery(crashed)
    said: list[str] = []
    agent = Agent(AgentSettings(), display=xvfb.display, say=said.append)
    assert agent.recover_crashed() == [crashed]
    assert read_manifest(crashed).status == "recovered"
    assert any("recovered" in line for line in said)
