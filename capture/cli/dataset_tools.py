"""`capture dataset purge`, `capture report` and the export's quality filter options."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from capture.cli.collector import DEFAULT_URL
from capture.clock import utc_iso
from capture.errors import CaptureError


@click.command("purge")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--receipt", "receipts", multiple=True, metavar="ID",
              help="Remove every episode recorded under this consent receipt (repeatable).")
@click.option("--player", "players", multiple=True, metavar="PSEUDONYM",
              help="Remove every episode of this player pseudonym (the `player` column; "
                   "repeatable).")
@click.option("--from-collector", is_flag=True,
              help="Remove every session the collector lists for this dataset because its "
                   "consent was withdrawn (`capture collector purges`).")
@click.option("--url", default=lambda: os.environ.get("CAPTURE_COLLECTOR_URL", DEFAULT_URL),
              show_default=f"$CAPTURE_COLLECTOR_URL or {DEFAULT_URL}",
              help="With --from-collector: the collector (admin token: "
                   "$CAPTURE_COLLECTOR_ADMIN_TOKEN or the one it kept).")
@click.option("--revocations", type=click.Path(path_type=Path, dir_okay=False),
              help="With --from-collector, instead of asking it: a JSON list of revoked "
                   "receipt ids (or of {receipt_id, revoked_utc}); those revoked since the "
                   "last such purge are applied.")
@click.option("--yes", is_flag=True, help="Do not ask before changing the dataset (scripts).")
def purge_cmd(dataset: Path, receipts: tuple[str, ...], players: tuple[str, ...],
              from_collector: bool, url: str, revocations: Path | None, yes: bool) -> None:
    """Remove withdrawn episodes (frames, events, video) from a built dataset.

    The dataset is re-indexed and its statistics, episode table, info.json and card are
    rewritten. The new dataset is built next to the old one and swapped in with one rename, so
    an interruption leaves either the old or the new dataset. Each purge is appended to
    meta/purge-log.jsonl (counts and receipt ids, never names).
    """
    from capture.export import purge

    chosen = [bool(receipts), bool(players), from_collector]
    listed: list[str] = []   # sessions the collector asked to purge
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of --receipt, --player or --from-collector")
    if from_collector and revocations is not None:
        plan = purge.purge_from_revocations(dataset, revocations)
    elif from_collector:
        listed = collector_purges(url, dataset)
        plan = purge.plan_purge(dataset, sessions=listed, reason="collector",
                                collector_checked_utc=utc_iso())
    elif receipts:
        plan = purge.plan_purge(dataset, receipts=receipts, reason="receipt")
    else:
        plan = purge.plan_purge(dataset, players=players, reason="player")
    click.echo(plan.describe())
    if plan.empty:
        removed = purge.cleanup_leftovers(plan.dataset)
        if removed:
            click.echo(f"removed {len(removed)} leftover(s) of an interrupted purge")
        if listed:   # none of them is in the dataset (any more): tell the collector
            click.echo(report_purged(url, dataset, listed))
        return
    if not yes and not click.confirm("Rewrite the dataset without them?", default=False):
        click.echo("nothing changed")
        sys.exit(1)
    result = purge.apply_purge(plan, progress=lambda step: click.echo(f"  {step}", err=True))
    click.echo(result.summary())
    if listed:
        click.echo(report_purged(url, dataset, listed))


def collector_purges(url: str, dataset: Path) -> list[str]:
    """Sessions the collector at `url` lists for purging from this dataset (exports from a
    collector register the dataset under its directory name)."""
    from capture.uploader.http import call, client

    with client(url, _admin_token()) as http:
        rows = call(http, "GET", "/v1/admin/purges").json()
    name = dataset.resolve().name
    return list(dict.fromkeys(str(r["session_id"]) for r in rows if r["dataset_name"] == name))


def report_purged(url: str, dataset: Path, sessions: list[str]) -> str:
    """Tell the collector the dataset no longer holds `sessions`; what to say about it."""
    from capture.uploader.http import call, client

    with client(url, _admin_token()) as http:
        marked = call(http, "POST", "/v1/admin/purges/done",
                      json={"dataset_name": dataset.resolve().name,
                            "session_ids": sessions}).json()["marked"]
    return f"the collector marked {marked} pending purge(s) of this dataset done"


def _admin_token() -> str:
    from capture.collector.server import ADMIN_TOKEN_ENV, stored_admin_token

    token = stored_admin_token()
    if not token:
        raise CaptureError(f"no admin token: set {ADMIN_TOKEN_ENV} (the collector printed it at "
                           "its first start)")
    return token


@click.command("report")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="HTML file to write (default: DATASET-report.html next to the dataset).")
@click.option("--doctor", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="lerobot-doctor findings as JSON (default: DATASET/meta/doctor.json if "
                   "present).")
def report_cmd(dataset: Path, out: Path | None, doctor: Path | None) -> None:
    """Write one self-contained HTML report of a dataset (opens offline in a browser)."""
    from capture.export.report import write_report

    path = write_report(dataset, out, doctor=doctor)
    click.echo(f"report: {path}")


def quality_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the export's quality filter options; the command receives them as `quality`."""
    options = [
        click.option("--min-segment-s", type=click.FloatRange(min=0), default=None,
                     help="Drop segments (continuous runs between pauses) shorter than this "
                          "(s)."),
        click.option("--max-segment-s", type=click.FloatRange(min=0), default=None,
                     help="Drop segments longer than this (s)."),
        click.option("--idle-s", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Spans of at least this many seconds without input are idle."),
        click.option("--idle", "idle_mode", type=click.Choice(["trim", "flag"]), default="flag",
                     show_default=True, help="Cut idle spans out (trim) or only list them."),
        click.option("--drop-black-frozen", is_flag=True,
                     help="Drop episodes whose sampled frames are mostly black or frozen."),
        click.option("--min-fps-ratio", type=click.FloatRange(0, 1), default=None,
                     help="Drop episodes whose source frames arrived at less than this "
                          "fraction of the recording rate."),
        click.option("--max-drop-ratio", type=click.FloatRange(0, 1), default=None,
                     help="Drop episodes where more than this fraction of frames were dropped "
                          "or repeated."),
        click.option("--require-checks", is_flag=True,
                     help="Drop sessions whose record-time checks failed."),
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from capture.export.quality import QualityFilters

        try:
            kwargs["quality"] = QualityFilters(
                min_segment_s=kwargs.pop("min_segment_s"),
                max_segment_s=kwargs.pop("max_segment_s"),
                idle_s=kwargs.pop("idle_s"), idle_mode=kwargs.pop("idle_mode"),
                drop_black_frozen=kwargs.pop("drop_black_frozen"),
                min_fps_ratio=kwargs.pop("min_fps_ratio"),
                max_drop_ratio=kwargs.pop("max_drop_ratio"),
                require_checks=kwargs.pop("require_checks"))
        except ValueError as exc:
            raise CaptureError(str(exc)) from None
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
