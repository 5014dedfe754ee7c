"""`capture collector serve` on its own: the base URL line, the admin token kept once, the
device token kept 0600 on the player's side and only as a hash on the collector's."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import sqlalchemy as sa

from capture.collector import db
from tests.collector.conftest import Collector, create_study, enroll, run_capture


def _serve_once(home: Path) -> tuple[str, str]:
    """Start a collector without the admin token in the environment; return (url, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "CAPTURE_COLLECTOR_ADMIN_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "capture", "collector", "serve", "--port",
                             "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "CAPTURE_HOME": str(home)})
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    proc.terminate()
    _out, err = proc.communicate(timeout=20)
    assert line and line[0].startswith("http://127.0.0.1:"), err
    return line[0].strip(), err


def test_admin_token_is_generated_once_kept_0600_and_used_by_admin_commands(
        tmp_path: Path) -> None:
    home = tmp_path / "builder"
    url, err = _serve_once(home)
    token_file = home / "collector" / "admin-token"
    token = token_file.read_text().strip()
    assert len(token) >= 32 and token in err
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    _url, err_again = _serve_once(home)
    assert token not in err_again and token_file.read_text().strip() == token
    # an admin command on this machine finds the kept token without the env var
    env = {k: v for k, v in os.environ.items() if k != "CAPTURE_COLLECTOR_ADMIN_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "capture", "collector", "serve", "--port",
                             "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**env, "CAPTURE_HOME": str(home)})
    try:
        url = proc.stdout.readline().strip()
        listed = subprocess.run([sys.executable, "-m", "capture", "collector", "sessions",
                                 "--url", url], capture_output=True, text=True, timeout=60,
                                env={**env, "CAPTURE_HOME": str(home)})
        assert listed.returncode == 0 and listed.stdout.strip() == "no accepted sessions"
        wrong = subprocess.run([sys.executable, "-m", "capture", "collector", "sessions",
                                "--url", url], capture_output=True, text=True, timeout=60,
                               env={**env, "CAPTURE_HOME": str(home),
                                    "CAPTURE_COLLECTOR_ADMIN_TOKEN": "nope"})
        assert wrong.returncode != 0 and "the admin token is wrong" in wrong.stderr
        assert "Traceback" not in wrong.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_device_token_is_kept_0600_and_only_its_hash_on_the_collector(
        tmp_path: Path, builder_home: Path, collectors: list[Collector]) -> None:
    collector = Collector(builder_home).start()
    collectors.append(collector)
    study = create_study(builder_home, collector.url)
    alice = enroll(builder_home, collector.url, study, tmp_path / "alice", "alice")
    [record] = (alice.home / "enrollments").glob("*.json")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    engine = db.make_engine(db.default_url(builder_home / "collector"))
    with engine.connect() as conn:
        [player] = conn.execute(sa.select(db.players)).all()
    engine.dispose()
    assert player.token_hash == hashlib.sha256(alice.token.encode()).hexdigest()
    assert player.pseudonym == "alice"
    for path in (builder_home / "collector").rglob("*"):
        if path.is_file():
            assert alice.token.encode() not in path.read_bytes(), path
    # the local grant names the study and its terms; the ledger still verifies
    shown = run_capture(alice.home, "consent", "show", "--json").stdout
    assert f'"id": "{study}"' in shown and collector.url in shown
