"""The dataset card says which quality filters removed what and which purges were applied."""

from __future__ import annotations

from capture.export.card import SessionSummary, render_card

SESSIONS = [SessionSummary(session_id="s1", game="minetest", license="CC-BY-4.0",
                           synthetic_consent=False, episodes=2, frames=600)]


def _card(**kwargs: object) -> str:
    return render_card(name="my-dataset", fps=30, width=64, height=48, max_episode_s=600,
                       sessions=SESSIONS, **kwargs)  # type: ignore[arg-type]


def test_without_filters_or_purges_the_card_says_so() -> None:
    card = _card()
    assert "No quality filter was applied" in card
    assert "No purge has been applied" in card
    assert card.startswith("---\n") and "\n# my-dataset\n" in card


def test_filters_and_purges_are_listed_with_their_numbers() -> None:
    quality = {"episodes_before": 5, "episodes_after": 3, "frames_before": 900,
               "frames_after": 600, "idle_flagged": [{"seconds": 2.5}, {"seconds": 1.0}],
               "removed": {"min_segment_s": {"episodes": 1, "frames": 100, "seconds": 3.3},
                           "black_frozen": {"episodes": 1, "frames": 200, "seconds": 6.7}}}
    purges = [{"utc": "2026-11-30T10:00:00.000000Z", "episodes_removed": 2,
               "frames_removed": 300},
              {"utc": "2026-11-30T11:00:00.000000Z", "episodes_removed": 1,
               "frames_removed": 50}]
    card = _card(quality=quality, purges=purges)
    assert "5 -> 3 episodes, 900 -> 600 frames" in card
    assert "| black_frozen | 1 | 200 | 6.7 |" in card
    assert "Idle spans flagged but kept: 2 (3.5 s)" in card
    assert "Purges applied: 2, the last on 2026-11-30T11:00:00.000000Z" in card
    assert "3 episodes and 350 frames removed in all" in card
