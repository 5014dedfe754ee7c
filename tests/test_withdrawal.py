"""The withdrawal service on real sessions and a real ledger, damaged in every way we know of."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from capture import consent, formats
from capture.errors import ConsentError
from capture.session import store
from capture.session.manifest import read_manifest, write_manifest
from capture.session.reader import open_session
from capture.withdrawal import withdraw
from tests.factories import SessionScript, build_session, frame_times
from tests.killpoints import run_killed_at

DAMAGES: dict[str, Callable[[Path], None]] = {
    "json list": lambda d: (d / formats.MANIFEST).write_text("[]"),
    "not UTF-8": lambda d: (d / formats.MANIFEST).write_bytes(
        b'{"player": "alice", "game": {"name": "minet\xffest"}}'),
    "truncated": lambda d: (d / formats.MANIFEST).write_text(
        (d / formats.MANIFEST).read_text()[:150]),
    "missing": lambda d: (d / formats.MANIFEST).unlink(),
    "a directory": lambda d: ((d / formats.MANIFEST).unlink(), (d / formats.MANIFEST).mkdir()),
    "says nothing": lambda d: (d / formats.MANIFEST).write_text('{"name": "x"}'),
    # An OS-level read failure that root cannot override (ELOOP):
    "unreadable": lambda d: ((d / formats.MANIFEST).unlink(),
                             (d / formats.MANIFEST).symlink_to(formats.MANIFEST)),
}


def _chattr(path: Path, flag: str) -> bool:
    """Set or clear the immutable attribute (root cannot delete such a file either)."""
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    return subprocess.run([chattr, flag, str(path)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    times, _ = frame_times(3, 30)
    return build_session(tmp_path_factory.mktemp("template"),
                         SessionScript(capture_times_ns=times, game="minetest"))


@pytest.fixture
def sessions(template: Path, capture_home: Path) -> Iterator[Callable[..., Path]]:
    """sessions(player, game, root=None) -> a copy of the template with that player and game."""
    made: list[Path] = []
    serial = iter(range(1, 10_000))

    def make(player: str, game: str, root: Path | None = None) -> Path:
        n = next(serial)
        session_id = f"20250301T1200{n % 60:02d}Z-{game}-{n:06x}"
        target = (root or capture_home / "sessions") / session_id
        shutil.copytree(template, target)
        manifest = read_manifest(target)
        write_manifest(target, manifest.updated(session_id=session_id, player=player,
                                                game=replace(manifest.game, name=game)))
        if root is not None:
            store.register(target)
        made.append(target)
        return target

    yield make
    for root in {d.parent for d in made}:  # undo chattr so the files can be cleaned up
        for f in root.rglob(formats.VIDEO):
            _chattr(f, "-i")


@pytest.mark.parametrize("seed", range(6))
def test_withdrawal_deletes_every_readable_session_and_reports_each_damaged_one(
        seed: int, sessions: Callable[..., Path], capture_home: Path, tmp_path: Path) -> None:
    rng = random.Random(seed)
    consent.grant("alice", ["minetest", "quake"], ["video"])
    consent.grant("alice", ["tetris"], ["video"])
    consent.grant("bob", ["minetest"], ["video"])
    elsewhere = tmp_path / "recorded-with-out"
    mine = [sessions("alice", rng.choice(["minetest", "quake"]),
                     root=elsewhere if rng.random() < 0.3 else None)
            for _ in range(rng.randint(3, 6))]
    kept = [sessions("alice", "tetris")]  # tetris is not withdrawn below
    others = [sessions("bob", "minetest") for _ in range(2)]
    count = len(DAMAGES) if seed == 0 else rng.randint(2, len(DAMAGES))
    kinds = rng.sample(sorted(DAMAGES), k=count)
    damaged = {}
    for kind in kinds:
        d = sessions(rng.choice(["alice", "bob"]), "minetest")
        DAMAGES[kind](d)
        damaged[d] = kind
    stuck = None
    if seed % 2 == 0 and len(mine) > 1:
        stuck = mine.pop()  # a file in it cannot be deleted, even by root
        if not _chattr(stuck / formats.VIDEO, "+i"):
            mine.append(stuck)
            stuck = None

    result = withdraw("alice", ["minetest", "quake"])

    assert result.revocation is not None
    assert {g for _, games in result.withdrawn for g in games} == {"minetest", "quake"}
    assert sorted(result.deleted) == sorted(mine)
    assert not any(d.exists() for d in mine)
    assert all(d.exists() for d in [*kept, *others, *damaged])
    reported = {p.path: p.reason for p in result.problems}
    for d, kind in damaged.items():
        assert d in reported, f"damaged ({kind}) session not reported"
        assert "not deleted" in reported[d] or "cannot be told" in reported[d]
    assert stuck is not None or seed % 2 or not shutil.which("chattr")
    if stuck is not None:
        assert stuck in reported and "could not be deleted" in reported[stuck]
        assert not stuck.exists()  # renamed to a tombstone: out of every listing
    assert set(reported) == set(damaged) | ({stuck} if stuck else set())
    assert not result.complete

    retry = withdraw("alice", ["minetest", "quake"])  # runs to the end, records nothing new
    assert retry.revocation is None and retry.ledger_error is None
    assert {p.path for p in retry.problems} >= set(damaged)
    assert len(consent.all_entries()) == 4

    for d in damaged:
        store.delete_session(d) if store.in_sessions_root(d) else shutil.rmtree(d)
    if stuck is not None:
        for f in stuck.parent.rglob(formats.VIDEO):
            _chattr(f, "-i")
    final = withdraw("alice", ["minetest", "quake"])
    assert final.complete, final.problems
    assert store.tombstones() == []
    assert all(d.exists() for d in [*kept, *others])


def test_a_session_directory_the_user_cannot_read_is_reported(
        sessions: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as an unprivileged user, a session directory it cannot read is reported, not fatal."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the withdrawal as another user")
    home = Path(tempfile.mkdtemp(prefix="capture-withdrawal-"))
    try:
        os.chmod(home, 0o755)
        monkeypatch.setenv("CAPTURE_HOME", str(home))
        consent.grant("alice", ["minetest"], ["video"])
        good = sessions("alice", "minetest", root=home / "sessions")
        locked = sessions("alice", "minetest", root=home / "sessions")
        subprocess.run(["chown", "-R", "nobody", str(home)], check=True)
        subprocess.run(["chown", "-R", "root", str(locked)], check=True)
        os.chmod(locked, 0o700)
        script = ("from capture.withdrawal import withdraw; r = withdraw('alice'); "
                  "print(len(r.deleted)); [print(p.path, '|', p.reason) for p in r.problems]")
        try:
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                 user="nobody", cwd=home,
                                 env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        except PermissionError as exc:  # e.g. the interpreter lives under /root (mode 700)
            pytest.skip(f"user nobody cannot run this Python here ({exc})")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "1", out.stdout
        assert not good.exists() and locked.exists()
        assert lines[1].startswith(f"{locked} | ") and "Permission denied" in lines[1]
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_withdrawal_killed_at_every_file_operation_leaves_whole_sessions(
        sessions: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the withdrawal right before each of its file operations in turn (ledger append,
    head file, each rename and removal): the ledger always reads, every session is either whole
    (its files match the manifest's hashes) or out of every listing, and running the withdrawal
    again deletes the rest and leaves no tombstone."""
    point, killed = 0, 0
    while True:
        point += 1
        home = tmp_path / f"home-{point}"  # a fresh data dir for each kill point
        monkeypatch.setenv("CAPTURE_HOME", str(home))
        player = "alice"
        consent.grant(player, ["minetest"], ["video"])
        consent.grant("bob", ["minetest"], ["video"])
        mine = [sessions(player, "minetest", root=home / "sessions") for _ in range(3)]
        others = [sessions("bob", "minetest", root=home / "sessions")]
        entries_before = len(consent.all_entries())
        outcome = run_killed_at(point, lambda p=player: withdraw(p), tmp_path)
        assert outcome.error is None, outcome.error
        entries = consent.all_entries()  # the ledger reads: no torn entry
        assert len(entries) in (entries_before, entries_before + 1)
        left = [d for d in mine if d.exists()]
        for d in left:
            open_session(d)  # whole: every file there and matching its hash
        assert set(store.session_dirs()) >= {*left, *others}
        if len(entries) == entries_before:  # killed before the revocation was recorded
            assert left == mine, f"kill point {point}: deleted before the ledger said so"
        retry = withdraw(player)
        assert retry.complete and not any(d.exists() for d in mine), (point, retry)
        assert store.tombstones() == [] and all(d.exists() for d in others)
        assert consent.all_entries()[-1].kind == "revoke"
        if not outcome.killed:
            break
        killed += 1
    assert killed >= 3 * 3, f"only {killed} kill points: the deletions were not all visited"


def test_an_unknown_player_is_refused_naming_players_and_unreadable_sessions(
        sessions: Callable[..., Path], capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    damaged = sessions("alice", "minetest")
    (damaged / formats.MANIFEST).write_text("[]")
    with pytest.raises(ConsentError) as refused:
        withdraw("alcie")
    message = str(refused.value)
    assert "'alcie'" in message and "players with consent: 'alice'" in message
    assert f"could not be checked: {damaged}" in message
    assert len(consent.all_entries()) == 1 and damaged.exists()


def test_an_unknown_player_with_local_sessions_gets_them_deleted(
        sessions: Callable[..., Path], capture_home: Path) -> None:
    """Sessions of a player the ledger does not know (e.g. a ledger from elsewhere) are theirs
    to delete: the withdrawal deletes them and records nothing."""
    orphan = sessions("carol", "minetest")
    result = withdraw("carol")
    assert result.revocation is None and result.deleted == (orphan,) and not orphan.exists()
    assert consent.all_entries() == []
