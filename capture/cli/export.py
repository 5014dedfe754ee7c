"""`capture export` and `capture dataset verify`: build a LeRobot v3.0 dataset and check it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from capture.cli._common import resolve_sessions
from capture.cli.dataset_tools import quality_options
from capture.errors import CaptureError
from capture.sizes import parse_size

if TYPE_CHECKING:
    from capture.export.quality import QualityFilters


def _parse_size(value: str) -> tuple[int, int] | None:
    if value == "native":
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}, or 'native'") from None


@click.command("export")
@click.argument("sessions", nargs=-1, required=True, metavar="SESSION...")
@click.option("--out", required=True,
              help="Dataset to create: a directory (must not exist or be empty) or an "
                   "s3://bucket/prefix URL. Exporting into a dataset made here before adds the "
                   "new sessions and re-encodes none of the unchanged ones.")
@click.option("--fps", type=click.IntRange(1, 240), default=None,
              help="Dataset frame rate (default: the sessions' recording rate).")
@click.option("--size", default=None, help="WxH or native [default: native].")
@click.option("--max-episode-s", type=float, default=600.0, show_default=True,
              help="Split sessions into episodes of at most this length.")
@click.option("--codec", type=click.Choice(["h264", "av1"]), default=None,
              help="Video codec: h264 (libx264) or av1 (SVT-AV1, as LeRobot writes) "
                   "[default: h264].")
@click.option("--gop-seconds", type=float, default=None,
              help="Seconds between keyframes of re-encoded episodes [default: 2].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: worker processes; ray: Ray tasks.")
@click.option("--workers", type=click.IntRange(1, 1024), default=None,
              help="Worker processes (local) or CPUs of a local Ray [default: one per CPU].")
@click.option("--ray-address", default=None,
              help="Address of a running Ray cluster (default: start a local one).")
@quality_options
def export_cmd(sessions: tuple[str, ...], out: str, fps: int | None, size: str | None,
               max_episode_s: float, codec: str | None, gop_seconds: float | None,
               engine: str, workers: int | None, ray_address: str | None,
               quality: QualityFilters | None = None) -> None:
    """Export sessions (ids from `capture sessions list`, or directories) as a LeRobot v3.0
    dataset with per-frame actions.

    A SESSION may also be a collector's accepted sessions: collector+http://HOST:PORT/STUDY
    (admin token in $CAPTURE_COLLECTOR_ADMIN_TOKEN; add ?game=G&since=YYYY-MM-DD&until=YYYY-MM-DD
    to narrow) or its store (s3://BUCKET/PREFIX, store+file:///DIR). --out may be an
    s3://BUCKET/PREFIX URL too.
    """
    import tempfile

    from tqdm import tqdm

    from capture.collector.source import downloaded, is_collector_input
    from capture.export import export_dataset, format_report
    from capture.export.engine import EngineOptions
    from capture.session.manifest import read_manifest

    size_wh = _parse_size(size) if size is not None else None
    remote = [s for s in sessions if is_collector_input(s)]
    session_dirs = resolve_sessions(tuple(s for s in sessions if not is_collector_input(s)))
    for session_dir in session_dirs:
        read_manifest(session_dir)  # an unreadable one is named before anything is written
    options = EngineOptions(engine=engine, workers=workers, ray_address=ray_address)
    with tempfile.TemporaryDirectory(prefix="capture-collected-") as tmp, \
            downloaded(remote, Path(tmp), progress=lambda m: click.echo(m, err=True)) as got:
        with tqdm(desc="exporting", unit=" frames", file=sys.stderr, disable=None) as bar:
            def progress(frames_done: int) -> None:
                bar.update(frames_done - bar.n)

            report = export_dataset([*session_dirs, *got.session_dirs], out, fps=fps,
                                    size=size_wh, max_episode_s=max_episode_s,
                                    progress=progress, codec=codec, gop_seconds=gop_seconds,
                                    engine=options,
                                    consent_status=got.consent_status if remote else None,
                                    quality=quality)
        for register in got.register:  # the collector lists it for purging after withdrawals
            register(Path(out.split("?", 1)[0]).name, [str(d) for d in got.session_dirs])
    click.echo(format_report(report))


@click.group()
def dataset() -> None:
    """Check datasets and purge withdrawn episodes from them."""


@dataset.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also check every episode's consent is active in this consent ledger.")
@click.option("--collector", default=None, metavar="URL",
              help="Also check every episode's consent is active at this collector "
                   "(http://HOST:PORT, its admin token in CAPTURE_COLLECTOR_ADMIN_TOKEN).")
def dataset_verify(path: Path, ledger: Path | None, collector: str | None) -> None:
    """Check a dataset against LeRobot's loading rules, every file's SHA-256 and (with --ledger
    or --collector) every episode's consent; exit 1 if anything is wrong."""
    from capture.export.verify import ConsentStatus, verify_dataset

    status: ConsentStatus | None = None
    if ledger is not None:
        from capture.consent import receipt_status

        def status(receipt: str, game: str) -> str:
            return receipt_status(receipt, game=game, ledger_path=ledger)
    elif collector is not None:
        status = _collector_consent(collector)
    report = verify_dataset(path, consent_status=status)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


def _collector_consent(url: str) -> Callable[[str, str], str]:
    """(receipt, game) -> status from a collector's registry (the admin token as for export)."""
    from capture.collector.server import ADMIN_TOKEN_ENV, stored_admin_token
    from capture.uploader.http import call, client

    token = stored_admin_token()
    if not token:
        raise CaptureError(f"checking consent at a collector needs its admin token: set "
                           f"{ADMIN_TOKEN_ENV}")
    http = client(url.removeprefix("collector+").rstrip("/"), token)

    def status(receipt: str, game: str) -> str:
        found = call(http, "GET", f"/v1/admin/receipts/{receipt}").json()
        if found["status"] == "unknown":
            return "unknown"
        return ("active" if game.strip().casefold() in
                {g.casefold() for g in found["active_games"]} else "revoked")

    return status
