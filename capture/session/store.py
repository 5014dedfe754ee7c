"""The player's local sessions: where they are, listing, resolving ids, and deleting them safely."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture import formats, paths
from capture.errors import BadInputError, CaptureError
from capture.session.manifest import Manifest, read_manifest
from capture.session.reader import needs_recovery

TOMBSTONE_SUFFIX = ".deleting"  # a session renamed to ".<name>.deleting" is being deleted


def register(session_dir: Path) -> None:
    """Remember a session recorded outside the data dir, so list/delete/revoke can find it."""
    session_dir = session_dir.resolve()
    if session_dir.parent == paths.sessions_dir().resolve():
        return
    index = paths.session_index_path()
    index.parent.mkdir(parents=True, exist_ok=True)
    with open(index, "a", encoding="utf-8") as f:
        f.write(json.dumps({"path": str(session_dir)}) + "\n")


def _indexed_dirs() -> list[Path]:
    """Directories the session index names (a damaged line only hides a session)."""
    index = paths.session_index_path()
    try:
        lines = index.read_bytes().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CaptureError(f"the session index cannot be read ({exc.strerror})", index) from None
    out = []
    for line in lines:
        try:
            out.append(Path(json.loads(line)["path"]).resolve())
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _has_manifest(path: Path) -> bool:
    try:
        return (path / formats.MANIFEST).exists()
    except OSError:
        return True  # the directory cannot be searched: it still counts, as an unreadable session


def candidate_dirs() -> list[Path]:
    """Every directory that is, or may be, a session: each one in the sessions root (with or
    without a readable manifest), and each indexed one that holds a manifest. Oldest first."""
    found: dict[Path, None] = {}
    root = paths.sessions_dir()
    if _is_dir(root):
        for d in sorted(root.iterdir()):
            if not d.name.startswith(".") and _is_dir(d) and not d.is_symlink():
                found[d.resolve()] = None
    for d in _indexed_dirs():
        if _is_dir(d) and _has_manifest(d):
            found[d] = None
    return sorted(found, key=lambda p: p.name)


def session_dirs() -> list[Path]:
    """Every known session directory that still holds a manifest.json, oldest first."""
    return [d for d in candidate_dirs() if _has_manifest(d)]


def is_known_location(session_dir: Path) -> bool:
    """True for a directory directly in the sessions root, or one the session index names."""
    resolved = session_dir.resolve()
    if resolved.parent == paths.sessions_dir().resolve():
        return True
    return resolved in set(_indexed_dirs())


def in_sessions_root(session_dir: Path) -> bool:
    return session_dir.resolve().parent == paths.sessions_dir().resolve()


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
    """Every candidate session; an unreadable one has manifest None and says why in `problem`."""
    out = []
    for d in candidate_dirs():
        try:
            manifest = read_manifest(d)
            problem = "needs recovery" if needs_recovery(d) else None
            out.append(SessionSummary(d, manifest, problem))
        except BadInputError as exc:
            out.append(SessionSummary(d, None, exc.problem))
    return out


def resolve(ref: str | Path) -> Path:
    """A session directory from a path, a session id, or a unique prefix of an id.

    An existing directory given as a path must hold a manifest.json; an id is looked up among
    the known sessions (also the unreadable ones, so that they can be deleted).
    """
    text = str(ref)
    p = Path(text)
    looks_like_path = os.sep in text or text in (".", "..")
    if looks_like_path or (_is_dir(p) and _has_manifest(p)):
        if not _is_dir(p):
            raise CaptureError("no such session directory", p)
        if not _has_manifest(p):
            raise CaptureError("not a session directory (it has no manifest.json)", p)
        return p
    known = candidate_dirs()
    exact = [d for d in known if d.name == text]
    matches = exact or ([d for d in known if d.name.startswith(text)] if text else [])
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CaptureError(f"no session called {text!r} (see `capture sessions list`)")
    raise CaptureError(f"{text!r} matches {len(matches)} sessions; give more of the id")


def delete_session(session_dir: Path, *, while_recording: bool = False) -> None:
    """Delete a session directory, but only one that is provably a session of ours.

    It must lie in a known place (directly in the sessions root, or named by the session index)
    and hold a manifest that validates against schemas/manifest.v1.schema.json. A session in
    the sessions root whose manifest is unreadable may still be deleted (so that damaged
    recordings can be removed); one outside it needs a valid manifest. A session still being
    recorded is refused unless `while_recording`. The directory is first renamed to a tombstone
    (one atomic step, so a kill leaves the whole session or none of it), then removed.
    """
    if not _is_dir(session_dir):
        raise CaptureError("refusing to delete: not a session directory", session_dir)
    if not is_known_location(session_dir):
        raise CaptureError(
            f"refusing to delete: not one of capture's sessions (those are in "
            f"{paths.sessions_dir()} or were recorded with --out)", session_dir)
    try:
        manifest: Manifest | None = read_manifest(session_dir)
    except BadInputError as exc:
        if not in_sessions_root(session_dir):
            raise CaptureError(f"refusing to delete: its manifest cannot be checked "
                               f"({exc.problem})", session_dir) from None
        manifest = None
    if (manifest is not None and manifest.status == "recording" and not while_recording
            and not needs_recovery(session_dir)):
        raise CaptureError("refusing to delete: this session is still being recorded; delete "
                           "it once recording stops", session_dir)
    remove_tree(session_dir)


def remove_tree(session_dir: Path) -> None:
    """Rename to a tombstone, then remove it; raises OSError if any of it stays on disk."""
    shutil.rmtree(to_tombstone(session_dir))


def to_tombstone(session_dir: Path) -> Path:
    """Take a session out of every listing in one atomic rename; returns the tombstone."""
    tomb = session_dir.with_name(f".{session_dir.name}{TOMBSTONE_SUFFIX}")
    if tomb.exists():
        shutil.rmtree(tomb)
    os.rename(session_dir, tomb)
    return tomb


def tombstones() -> list[Path]:
    """Sessions whose deletion was interrupted (renamed, not yet removed)."""
    out = []
    parents = {paths.sessions_dir(), *(d.parent for d in _indexed_dirs())}
    for parent in parents:
        if _is_dir(parent):
            out += [d for d in parent.iterdir()
                    if d.name.startswith(".") and d.name.endswith(TOMBSTONE_SUFFIX) and _is_dir(d)]
    return sorted(out)
