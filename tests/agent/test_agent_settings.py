"""The agent's config file and start-up: documented keys, bad values named, crash recovery."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from capture import paths
from capture.agent.agent import Agent
from capture.agent.settings import KEY_DOCS, AgentSettings, documented_config, load_agent_settings
from capture.cli import cli
from capture.config import config_tables
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


@pytest.mark.parametrize("text, words", [
    ("[agnet]\nfps = 30\n", "unknown table [agnet]"),
    ("[agent]\nfps = 30\n[collector.s3]\nbucket = 'x'\n", "unknown table [collector]"),
    ("fps = 30\n[agent]\n", "`fps` is outside any table"),
])
def test_unknown_tables_are_refused(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(CaptureError) as err:
        load_agent_settings(path)
    assert words in str(err.value) and str(path) in str(err.value)
    assert all(f"[{t}]" in str(err.value) for t in config_tables())


def test_every_known_table_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("".join(f"[{t}]\n" for t in config_tables()))
    assert load_agent_settings(path) == AgentSettings()


def test_non_utf8_config_is_a_plain_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[agent]\nbackend = "builtin"\n# caf\xe9 in latin-1\n')
    with pytest.raises(CaptureError) as err:
        load_agent_settings(path)
    assert str(path) in str(err.value) and "not UTF-8" in str(err.value)
    assert "line 3" in str(err.value)
    monkeypatch.setenv("CAPTURE_CONFIG", str(path))
    result = CliRunner().invoke(cli, ["agent", "--print-config"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "not UTF-8" in result.output and str(path) in result.output


@pytest.mark.parametrize("text, words", [
    ("[agent]\nfps = 1000\n", "agent.fps"),
    ("[agnet]\n", "unknown table [agnet]"),
    ("[obs]\nport = 0\n", "obs.port"),
    ("[agent\n", "not valid TOML"),
])
def test_print_config_checks_the_file_first(tmp_path: Path, monkeypatch, text: str,
                                            words: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("CAPTURE_CONFIG", str(path))
    result = CliRunner().invoke(cli, ["agent", "--print-config"])
    assert result.exit_code != 0, result.output
    assert words in result.output and str(path) in result.output
    assert "[agent]\n# video backend" not in result.output, "no defaults printed for a bad file"
    path.write_text("[agent]\nfps = 60\n[obs]\nport = 4455\n")
    result = CliRunner().invoke(cli, ["agent", "--print-config"])
    assert result.exit_code == 0 and "checked, no problems" in result.output


def test_start_up_recovery_carries_on_past_sessions_it_cannot_read(capture_home: Path) -> None:
    root = capture_home / "sessions"
    ids = [f"20250301T12000{i}Z-factorygame-00000{i}" for i in range(4)]
    bad_bytes, bad_journal, unreadable, good = (
        _crashed_session(root, gameplay_script(seconds=1, session_id=i), extra_logged_frames=1)
        for i in ids)
    manifest = bad_bytes / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"recording"', b'"recording\xff"', 1)
                         .replace(b'"game": "', b'"game": "\xe9', 1))
    with open(bad_journal / "events.jsonl", "r+b") as f:  # damage inside, not a cut-off tail
        f.seek(5)
        f.write(b"\xff\xfe{{{")
    (unreadable / "frames.jsonl").unlink()
    (unreadable / "frames.jsonl").mkdir()  # reading it fails with an OSError
    said: list[str] = []
    agent = Agent(AgentSettings(), display=":99", say=said.append)
    assert agent.recover_crashed() == [good]
    assert read_manifest(good).status == "recovered"
    warnings = [line for line in said if line.startswith("warning")]
    assert any(str(bad_journal) in w for w in warnings), said
    assert any(str(unreadable) in w for w in warnings), said
    assert not any("Traceback" in line for line in said)
    assert (bad_journal / "events.jsonl").exists() and bad_bytes.exists(), "nothing deleted"


def test_start_up_recovery_survives_an_unreadable_index(capture_home: Path) -> None:
    index = paths.session_index_path()
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(b'{"path": "/x\xff"}\n')
    said: list[str] = []
    recovered = Agent(AgentSettings(), display=":99", say=said.append).recover_crashed()
    assert recovered == [] or said == [], said  # skipped with a warning, or read past
    assert all(line.startswith("warning") for line in said)
