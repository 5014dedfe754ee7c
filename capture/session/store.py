"""The player's local sessions: where they are, listing, deleting, and deleting on revocation."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture import formats, paths
from capture.errors import BadInputError, CaptureError
from capture.session.manifest import Manifest, read_manifest
from capture.session.reader import needs_recovery


def register(session_dir: Path) -> None:
    """Remember a session recorded outside the data dir, so list/delete/revoke can find it."""
    session_dir = session_dir.resolve()
    if session_dir.parent == paths.sessions_dir().resolve():
        return
    index = paths.session_index_path()
    index.parent.mkdir(parents=True, exist_ok=True)
    with open(index, "a", encoding="utf-8") as f:
        f.write(json.dumps({"path": str(session_dir)}) + "\n")


def session_dirs() -> list[Path]:
    """Every known session directory that still exists, oldest first."""
    found: dict[Path, None] = {}
    root = paths.sessions_dir()
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / formats.MANIFEST).exists():
                found[d.resolve()] = None
    index = paths.session_index_path()
    if index.exists():
        for line in index.read_text(encoding="utf-8").splitlines():
            try:
                d = Path(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue  # a damaged index line only hides a session, never breaks listing
            if (d / formats.MANIFEST).exists():
                found[d.resolve()] = None
    return sorted(found, key=lambda p: p.name)


@dataclass
class SessionSummary:
    path: Path
    manifest: Manifest | None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        qa = m.qa if m is not None else None
        return {
            "id": m.session_id if m else self.path.name,
            "path": str(self.path),
            "game": m.game.name if m else None,
            "player": m.player if m else None,
            "start": m.clock.start.utc if m else None,
            "duration_s": qa.duration_s if qa else None,
            "frames": qa.frames if qa else None,
            "status": m.status if m else "unreadable",
            "receipt_id": m.consent.receipt_id if m else None,
            "problem": self.problem,
        }


def list_play_sessions() -> list[dict[str, Any]]:
    """Sessions as the player sees them: the agent's segments of one play session grouped.

    Each entry: id, game, start (UTC), duration_s, status, segments (each with its own id,
    path, start, duration, status and record-time checks), and checks (every failed check).
    """
    groups: dict[str, list[SessionSummary]] = {}
    for summary in list_sessions():
        run = summary.manifest.run if summary.manifest else None
        groups.setdefault(run.id if run else summary.path.name, []).append(summary)
    out = []
    for run_id, members in groups.items():
        members.sort(key=lambda s: s.manifest.run.segment if s.manifest and s.manifest.run
                     else 0)
        segments = []
        for member in members:
            row = member.to_dict()
            qa = member.manifest.qa if member.manifest else None
            row["checks"] = [c.to_dict() for c in qa.checks] if qa else []
            segments.append(row)
        statuses = {s["status"] for s in segments}
        out.append({
            "id": run_id,
            "game": segments[0]["game"],
            "start": segments[0]["start"],
            "duration_s": round(sum(s["duration_s"] or 0 for s in segments), 3),
            "status": next((st for st in ("unreadable", "recording", "incomplete", "recovered")
                            if st in statuses), "complete"),
            "segments": segments,
            "checks": [dict(c, segment=s["id"]) for s in segments for c in s["checks"]
                       if not c["ok"]],
        })
    return out


def list_sessions() -> list[SessionSummary]:
    out = []
    for d in session_dirs():
        try:
            manifest = read_manifest(d)
            problem = "needs recovery" if needs_recovery(d) else None
            out.append(SessionSummary(d, manifest, problem))
        except BadInputError as exc:
            out.append(SessionSummary(d, None, str(exc)))
    return out


def resolve(ref: str) -> Path:
    """A session directory from a path or a session id (or a unique prefix of one)."""
    p = Path(ref)
    if (p / formats.MANIFEST).exists():
        return p
    matches = [d for d in session_dirs() if d.name == ref or d.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CaptureError(f"no session called {ref!r} (see `capture sessions list`)")
    raise CaptureError(f"{ref!r} matches {len(matches)} sessions; give more of the id")


def delete_session(session_dir: Path) -> None:
    if not (session_dir / formats.MANIFEST).exists():
        raise CaptureError("refusing to delete: not a session directory", session_dir)
    shutil.rmtree(session_dir)


def delete_sessions_of(player: str, games: list[str] | None) -> list[Path]:
    """Delete the local sessions of `player` (for `games` only, if given); return their paths."""
    wanted = {g.lower() for g in games} if games else None
    deleted = []
    for d in session_dirs():
        try:
            manifest = json.loads((d / formats.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if manifest.get("player") != player:
            continue
        game = manifest.get("game", {})
        names = {str(game.get("name", "")).lower()}
        names |= {c.lower() for c in game.get("window_class", [])}
        if game.get("executable"):
            names.add(str(game["executable"]).lower())
        if wanted is None or names & wanted:
            shutil.rmtree(d)
            deleted.append(d)
    return deleted
