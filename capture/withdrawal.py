"""Withdrawal: record the revocation in the consent ledger, then delete the local sessions."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from capture import consent, paths
from capture.consent.ledger import grant_states
from capture.consent.records import ConsentReceipt, Revocation, game_key
from capture.errors import BadInputError, CaptureError, ConsentError
from capture.session import store
from capture.session.manifest import read_manifest


@dataclass(frozen=True)
class SessionProblem:
    """A session the withdrawal could not check or could not delete, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class WithdrawalResult:
    """What one withdrawal did.

    `revocation` is the ledger entry it appended (None if nothing was still consented, or the
    ledger could not be written: then `ledger_error` says why). `deleted` are the sessions it
    removed; `kept` the player's sessions of games another active grant still covers
    (`kept_games`); `problems` the sessions it could not read (so cannot tell whose they are) or
    could not delete, each with its path and reason.
    """

    player: str
    revocation: Revocation | None
    ledger_error: CaptureError | None = None
    deleted: tuple[Path, ...] = ()
    kept: tuple[Path, ...] = ()
    kept_games: tuple[str, ...] = ()
    problems: tuple[SessionProblem, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def withdrawn(self) -> list[tuple[str, tuple[str, ...]]]:
        """(receipt id, games) for each grant this withdrawal withdrew games from."""
        if self.revocation is None:
            return []
        return [(item.receipt_id, tuple(item.games)) for item in self.revocation.withdrawn]

    @property
    def complete(self) -> bool:
        """True if the ledger recorded it (or had nothing left to revoke) and no session was
        left unread or undeleted."""
        return self.ledger_error is None and not self.problems


@dataclass
class _Scan:
    matches: list[Path] = field(default_factory=list)
    others_interrupted: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    problems: list[SessionProblem] = field(default_factory=list)


def withdraw(player: str, games: Iterable[str] | None = None, receipt_id: str | None = None,
             *, method: str = "cli-scripted", ledger_path: Path | None = None) -> WithdrawalResult:
    """Withdraw `player`'s consent (all of it, some `games`, or one grant) and delete their
    local sessions of the withdrawn games.

    The revocation is appended first; then every known session is looked at, and each one of
    the player for a withdrawn game is deleted. A session that cannot be read or deleted never
    stops the others: it is reported in `problems`. Sessions of a game another active grant of
    the player still covers are kept. A damaged ledger still gets what the player asked for
    deleted (`ledger_error` set), except for a request naming only a grant, whose games are
    then unknown. Running it again retries every deletion.

    Raises ConsentError, before changing anything, if the ledger knows no such player (the
    message lists the players it knows), the receipt is not the player's, or none of the
    player's grants ever named one of `games` (the message lists the games it did name).
    """
    player = player.strip()
    games = [g.strip() for g in games or () if g.strip()]
    ledger_error: CaptureError | None = None
    entries: list[ConsentReceipt | Revocation] = []
    try:
        entries = consent.all_entries(ledger_path=ledger_path)
    except BadInputError as exc:
        ledger_error = exc

    notes: list[str] = []
    revocation: Revocation | None = None
    readable = ledger_error is None
    if ledger_error is None:
        _check_request(player, games, receipt_id, entries)
        try:
            revocation = consent.withdraw(player, games or None, receipt_id, method=method,
                                          ledger_path=ledger_path)
        except BadInputError as exc:  # damaged between the two reads
            ledger_error, readable = exc, False
        except OSError as exc:  # e.g. disk full: the ledger is intact, the entry not written
            full = " (disk full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            ledger_error = CaptureError(f"the withdrawal could not be written to the ledger"
                                        f"{full}: {exc.strerror or exc}", exc.filename)

    if ledger_error is not None and readable:  # not written: delete what was asked for
        receipt = next((e for e in entries_of(player, entries) if e.receipt_id == receipt_id),
                       None)
        to_delete: list[str] | None = games or (list(receipt.games) if receipt else None)
        kept_games: list[str] = []
    elif ledger_error is not None:
        if receipt_id is not None and not games:
            notes.append("the ledger cannot be read, so the games of that grant are unknown: "
                         "no local sessions were deleted (pass --game to delete them)")
            return WithdrawalResult(player, None, ledger_error, notes=tuple(notes))
        to_delete, kept_games = (games or None), []
    else:
        to_delete, kept_games = _games_to_delete(player, games, receipt_id, revocation,
                                                 ledger_path)

    scan = _scan(player, to_delete, kept_games)
    if ledger_error is None and not entries_of(player, entries) and not scan.matches:
        raise _unknown_player(player, entries, scan.problems)
    deleted, problems = _delete(scan.matches)
    problems = scan.problems + problems + _delete(scan.others_interrupted)[1]
    return WithdrawalResult(player, revocation, ledger_error, tuple(deleted), tuple(scan.kept),
                            tuple(kept_games), tuple(problems), tuple(notes))


def entries_of(player: str, entries: Iterable[ConsentReceipt | Revocation]
               ) -> list[ConsentReceipt]:
    """The player's grants, oldest first."""
    return [e for e in entries if isinstance(e, ConsentReceipt) and e.player == player]


def _unknown_player(player: str, entries: list[ConsentReceipt | Revocation],
                    unreadable: list[SessionProblem]) -> ConsentError:
    known = sorted({e.player for e in entries if isinstance(e, ConsentReceipt)})
    listing = ", ".join(repr(p) for p in known) if known else "none yet"
    unknown = (f"; {len(unreadable)} session(s) could not be read, so could not be checked: "
               + ", ".join(str(p.path) for p in unreadable)) if unreadable else ""
    return ConsentError(f"no consent of player {player!r} is on record and no local session is "
                        f"theirs; nothing was withdrawn (players with consent: {listing})"
                        f"{unknown}")


def _check_request(player: str, games: list[str], receipt_id: str | None,
                   entries: list[ConsentReceipt | Revocation]) -> None:
    grants = entries_of(player, entries)
    if not grants:
        return  # decided after looking for local sessions of theirs
    if receipt_id is None and games:
        named = {game_key(g) for r in grants for g in r.games}
        if not any(game_key(g) in named for g in games):
            consented = sorted({g for r in grants for g in r.games}, key=game_key)
            raise ConsentError(
                f"no consent of {player!r} for game {', '.join(map(repr, games))}; their "
                f"consent names {', '.join(consented)}; nothing was withdrawn")


def _games_to_delete(player: str, games: list[str], receipt_id: str | None,
                     revocation: Revocation | None, ledger_path: Path | None
                     ) -> tuple[list[str] | None, list[str]]:
    """(games whose local sessions to delete, None = all; games kept: still consented).

    Sessions of a game another active grant of the player still covers are kept; if nothing
    was revoked this time (already withdrawn), deletion is retried for what was asked.
    """
    if not games and receipt_id is None:
        return None, []
    states = grant_states(consent.all_entries(ledger_path=ledger_path))
    still_consented = {game_key(g) for s in states.values() if s.receipt.player == player
                       for g in s.active_games}
    if revocation is not None:
        asked = [g for item in revocation.withdrawn for g in item.games]
    elif games:
        asked = list(games)
    else:
        asked = list(states[receipt_id].receipt.games) if receipt_id in states else []
    unique = list({game_key(g): g for g in asked}.values())
    kept = [g for g in unique if game_key(g) in still_consented]
    return [g for g in unique if game_key(g) not in still_consented], kept


def whose(session_dir: Path) -> tuple[str, set[str]]:
    """(player, game names as compared) of a session, from its manifest.

    Raises BadInputError naming the problem if the manifest cannot be read or validated: then
    it cannot be told whose session it is.
    """
    manifest = read_manifest(session_dir)
    game = manifest.game
    names = [game.name, *game.window_class, *([game.executable] if game.executable else [])]
    return manifest.player, {game_key(n) for n in names if n.strip()}


def _scan(player: str, to_delete: list[str] | None, kept_games: list[str]) -> _Scan:
    """Sort every known session into: to delete, kept (still consented), or unreadable."""
    wanted = {game_key(g) for g in to_delete} if to_delete is not None else None
    kept_keys = {game_key(g) for g in kept_games}
    scan = _Scan()
    if to_delete == [] and not kept_keys:
        return scan
    try:
        candidates = store.candidate_dirs()
    except (CaptureError, OSError) as exc:
        scan.problems.append(SessionProblem(paths.sessions_dir(),
                                            f"the sessions cannot be listed ({exc})"))
        return scan
    for d in candidates:
        try:
            owner, keys = whose(d)
        except BadInputError as exc:
            scan.problems.append(SessionProblem(
                d, f"{exc.problem}, so it cannot be told whose session it is; it was not "
                   "deleted"))
            continue
        if owner != player:
            continue
        if wanted is None or keys & wanted:
            scan.matches.append(d)
        elif keys & kept_keys:
            scan.kept.append(d)
    for tomb in store.tombstones():  # deletions a crash or an error interrupted: finish them
        try:
            mine = whose(tomb)[0] == player
        except BadInputError:
            mine = False
        (scan.matches if mine else scan.others_interrupted).append(tomb)
    return scan


def _delete(dirs: list[Path]) -> tuple[list[Path], list[SessionProblem]]:
    deleted: list[Path] = []
    problems: list[SessionProblem] = []
    for d in dirs:
        try:
            tomb = d if d.name.endswith(store.TOMBSTONE_SUFFIX) else store.to_tombstone(d)
            shutil.rmtree(tomb)
            deleted.append(d)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.filename is not None:
                reason += f": {exc.filename}"
            problems.append(SessionProblem(d, f"could not be deleted ({reason}); run the "
                                              "withdrawal again once that is fixed"))
    return deleted, problems
