"""The record-time checks in a player's words, and the one input count the card and check share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capture.session.checks import active_inputs
from capture.session.manifest import QA


@dataclass(frozen=True)
class CheckWords:
    """How one check reads to a player: a title, and a sentence for a pass and for a failure."""

    title: str
    passed: str
    failed: str


CHECK_WORDS: dict[str, CheckWords] = {
    "length": CheckWords(
        "Length", "The segment is long enough to use.",
        "The segment is too short to use: it needs at least 5 seconds of play."),
    "fps": CheckWords(
        "Frame rate", "The video kept up with the game.",
        "The video fell behind: it has fewer pictures per second than asked for."),
    "dropped_frames": CheckWords(
        "Dropped frames", "Almost no pictures were lost.",
        "Too many pictures were lost, perhaps because the computer was busy."),
    "game_visible": CheckWords(
        "Game visible", "The game can be seen in the video.",
        "Much of the video is black or one colour: the game may not have been captured."),
    "input_activity": CheckWords(
        "Input activity", "Your keyboard, mouse or gamepad input was recorded.",
        "No keyboard, mouse or gamepad input was recorded."),
}


def check_title(name: str) -> str:
    """A check's name in words ("dropped_frames" -> "Dropped frames"), also for unknown ones."""
    words = CHECK_WORDS.get(name)
    if words is not None:
        return words.title
    return name.replace("_", " ").strip().capitalize() or "Check"


def check_sentence(name: str, ok: bool) -> str:
    """A plain sentence saying what the check's result means; "" for a check we do not know."""
    words = CHECK_WORDS.get(name)
    if words is None:
        return ""
    return words.passed if ok else words.failed


def check_line(name: str, ok: bool, detail: str) -> str:
    """One line for a terminal: "Dropped frames: Too many pictures were lost... (3 dropped)"."""
    sentence = check_sentence(name, ok)
    text = f"{check_title(name)}: {sentence}" if sentence else check_title(name)
    return f"{text} ({detail})" if detail else text


def input_count(qa: QA) -> int:
    """The segment's input count as the player sees it: the value its input-activity check
    recorded (computed once, when the segment was finalised); the same count for a segment
    recorded before that check existed."""
    for check in qa.checks:
        if check.name == "input_activity" and isinstance(check.value, int):
            return check.value
    return active_inputs(qa)


def describe_check(check: dict[str, Any]) -> dict[str, str]:
    """A check as the page shows it: {"name", "title", "sentence", "level", "detail"}.

    Takes a check as capture.session.checks writes it ({"name", "ok", "value", "detail"}): a
    failed check is a warning; an explicit "level" ("ok", "warning", "error") is kept.
    """
    name = str(check.get("name") or "check")
    level = check.get("level")
    if level not in ("ok", "warning", "error"):
        level = "ok" if check.get("ok") is True else "warning"
    return {"name": name, "title": check_title(name),
            "sentence": check_sentence(name, level == "ok"), "level": str(level),
            "detail": str(check.get("detail") or "")}
