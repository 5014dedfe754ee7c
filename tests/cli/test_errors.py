"""Every CLI path ends in one plain line and an exit code: X display, disk full, bugs."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from capture import consent
from capture.cli import cli
from capture.cli.main import EXIT_BUG, EXIT_OS_ERROR


def capture(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    return subprocess.run([str(bin_dir / "capture"), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CAPTURE_HOME": str(home), **env})


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_an_x_error_that_reaches_the_group_is_one_plain_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The last resort for python-xlib's errors (the X code turns the usual ones into
    CaptureError itself; tests/agent/test_unreachable_display.py runs those end to end)."""
    from Xlib.error import DisplayConnectionError

    def connect() -> None:  # what python-xlib raises when no X server listens on :4398
        raise DisplayConnectionError(":4398", "[Errno 111] Connection refused")

    monkeypatch.delenv("CAPTURE_DEBUG", raising=False)
    cli.add_command(click.Command("connect", callback=connect))
    try:
        result = CliRunner().invoke(cli, ["connect"])
    finally:
        cli.commands.pop("connect")
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith("error: cannot connect to X display ':4398'")


@pytest.fixture
def broken_command() -> Iterator[str]:
    """A command of the real group that fails the way a bug would (a test-only command)."""
    @click.command("boom")
    def boom() -> None:
        {}["missing"]

    cli.add_command(boom)
    try:
        yield "boom"
    finally:
        cli.commands.pop("boom")


def test_an_unexpected_error_says_it_is_a_bug(broken_command: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPTURE_DEBUG", raising=False)
    result = CliRunner().invoke(cli, [broken_command])
    assert result.exit_code == EXIT_BUG
    line = one_line(result.stderr)
    assert line.startswith("error: unexpected KeyError: 'missing'. This is a bug in capture")
    assert "CAPTURE_DEBUG=1" in line

    monkeypatch.setenv("CAPTURE_DEBUG", "1")
    debug = CliRunner().invoke(cli, [broken_command])
    assert isinstance(debug.exception, KeyError)  # the traceback is not swallowed


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real file system that fills up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_names_the_file_and_leaves_the_ledger_readable(small_disk: Path) -> None:
    home = small_disk / "home"
    grant = ["consent", "grant", "--player", "alice", "--scope", "video", "--yes"]
    assert capture(*grant, "--game", "minetest", home=home).returncode == 0
    filler = fill(small_disk)
    # a ~6 KB entry: longer than the free end of the ledger's last page
    many = [arg for i in range(30) for arg in ("--game", f"game-{i:02d}-" + "x" * 170)]
    full = capture(*grant, *many, home=home)
    assert full.returncode == EXIT_OS_ERROR
    line = one_line(full.stderr)
    assert line.startswith("error: ") and "disk full" in line
    assert str(home / "consent" / "ledger.jsonl") in line
    shown = capture("consent", "show", "--json", home=home)
    assert shown.returncode == 0, shown.stderr  # no torn line: the ledger still reads
    filler.unlink()
    assert capture(*grant, *many, home=home).returncode == 0


def test_a_withdrawal_on_a_full_disk_still_deletes_and_says_why_it_was_not_recorded(
        small_disk: Path) -> None:
    from tests.factories import SessionScript, build_session, frame_times

    home = small_disk / "home"
    # 30 long game names make the revocation's ledger line (~6 KB) longer than the free end of
    # the ledger's last page, so on the full disk it cannot be written (not even in part).
    games = ["minetest", *(f"game-{i:02d}-" + "x" * 170 for i in range(29))]
    grant = ["consent", "grant", "--player", "alice", "--scope", "video", "--yes"]
    grant += [arg for game in games for arg in ("--game", game)]
    assert capture(*grant, home=home).returncode == 0
    times, _ = frame_times(3, 30)
    session = build_session(home / "sessions", SessionScript(
        capture_times_ns=times, player="alice", game="minetest", width=32, height=24))
    ledger_before = (home / "consent" / "ledger.jsonl").read_bytes()
    filler = fill(small_disk)
    result = capture("consent", "revoke", "--player", "alice", "--yes", home=home)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "could not be written to the ledger (disk full)" in last
    assert not session.exists() and "Deleted 1 local session(s)" in result.stdout
    assert (home / "consent" / "ledger.jsonl").read_bytes() == ledger_before  # no torn line
    filler.unlink()
    again = capture("consent", "revoke", "--player", "alice", "--yes", home=home)
    assert again.returncode == 0, again.stderr
    assert consent.all_entries(ledger_path=home / "consent" / "ledger.jsonl")[-1].kind == "revoke"
