"""`capture collector ...` (serve, study, invite, sessions), `capture enroll`, `capture upload`."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from capture.errors import CaptureError

DEFAULT_URL = "http://127.0.0.1:8470"


def _admin(url: str) -> Any:
    from capture.collector.server import ADMIN_TOKEN_ENV, stored_admin_token
    from capture.uploader.http import client

    token = stored_admin_token()
    if not token:
        raise CaptureError(f"no admin token: set {ADMIN_TOKEN_ENV} (the collector printed it at "
                           "its first start)")
    return client(url, token)


def _call(url: str, method: str, path: str, **kwargs: Any) -> Any:
    from capture.uploader.http import call

    with _admin(url) as http:
        return call(http, method, path, **kwargs).json()


_url_option = click.option("--url", default=lambda: os.environ.get("CAPTURE_COLLECTOR_URL",
                                                                   DEFAULT_URL),
                           show_default=f"$CAPTURE_COLLECTOR_URL or {DEFAULT_URL}",
                           help="The running collector (admin token: "
                                "$CAPTURE_COLLECTOR_ADMIN_TOKEN or the one it kept).")


@click.group("collector")
def collector() -> None:
    """Run a collector and manage its studies (for dataset builders)."""


@collector.command("serve")
@click.option("--db", "db_url", help="Database URL (default: SQLite under "
                                     "$CAPTURE_HOME/collector), e.g. postgresql://u@host/db.")
@click.option("--store", "store_url", help="Where bundles go (default: a directory under "
                                           "$CAPTURE_HOME/collector): a path or "
                                           "s3://bucket/prefix.")
@click.option("--s3-endpoint", help="S3 endpoint URL for a non-AWS store (or $AWS_ENDPOINT_URL).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8470, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve HTTPS with this certificate (PEM) ...")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="... and this private key.")
@click.option("--max-bundle-mb", type=click.IntRange(1), default=16 * 1024, show_default=True,
              help="Largest bundle accepted.")
@click.option("--quota-mb", type=click.IntRange(1), default=200 * 1024, show_default=True,
              help="Most bytes stored per player.")
def serve_command(db_url: str | None, store_url: str | None, s3_endpoint: str | None, host: str,
                  port: int, tls_cert: Path | None, tls_key: Path | None, max_bundle_mb: int,
                  quota_mb: int) -> None:
    """Serve the collector API until Ctrl-C; prints its base URL on a line of its own."""
    from capture.collector.server import ServeOptions, serve
    from capture.collector.service import Limits

    options = ServeOptions(db_url=db_url, store_url=store_url, s3_endpoint=s3_endpoint,
                           host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
                           limits=Limits(max_bundle_bytes=max_bundle_mb << 20,
                                         quota_bytes=quota_mb << 20))
    serve(options, say=lambda m: click.echo(m, err=True))


@collector.group("study")
def study() -> None:
    """Publish what a study asks players for."""


def _study_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.strip().lower()).strip("-._")[:64]
    if not slug:
        raise click.BadParameter(f"{name!r} has no letters or digits to name the study by")
    return slug


@study.command("create")
@_url_option
@click.option("--name", required=True, help="The study's name (players see it).")
@click.option("--terms", "terms_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The terms text players are shown and consent to (UTF-8).")
@click.option("--terms-version", default="1", show_default=True, help="Version of the terms.")
@click.option("--game", "games", multiple=True, required=True,
              help="A game to record (executable or window class; repeat for more).")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="Kinds of data, comma-separated: video,keyboard,mouse,gamepad,audio.")
@click.option("--purpose", "purposes", multiple=True, required=True,
              help="A purpose of the collection (repeat for more).")
@click.option("--licence", "--license", "licence", required=True,
              help="Licence of the collected data (SPDX id).")
@click.option("--retention-days", type=click.IntRange(1, 36500), default=365,
              show_default=True, help="How long collected bundles are kept.")
@click.option("--controller-name", help="Who is responsible for the data (default: the study).")
@click.option("--controller-contact", help="How players reach them (default: the collector URL).")
def study_create(url: str, name: str, terms_file: Path, terms_version: str,
                 games: tuple[str, ...], scopes: tuple[str, ...], purposes: tuple[str, ...],
                 licence: str, retention_days: int, controller_name: str | None,
                 controller_contact: str | None) -> None:
    """Publish a study: its terms (version, SHA-256), games, kinds, purposes, licence."""
    from capture.consent import parse_scope

    try:
        terms = terms_file.read_bytes().decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise CaptureError("the terms file is not UTF-8 text", terms_file) from None
    body = {"id": _study_id(name), "name": name, "terms_text": terms,
            "terms_version": terms_version, "games": list(games),
            "scope": list(parse_scope(scopes)), "purposes": list(purposes), "licence": licence,
            "controller_name": controller_name or f"{name} (dataset builder)",
            "controller_contact": controller_contact or url, "retention_days": retention_days}
    made = _call(url, "POST", "/v1/studies", json=body)
    click.echo(f"study {made['id']}: terms {made['terms_version']} "
               f"(sha256 {made['terms_sha256']}), games {', '.join(made['games'])}, "
               f"kinds {', '.join(made['scope'])}, licence {made['licence']}")
    click.echo(made["id"])


@collector.command("invite")
@_url_option
@click.option("--study", "study_id", required=True, help="The study to invite a player to.")
def invite(url: str, study_id: str) -> None:
    """Make a one-time enrollment code (printed as the last line)."""
    made = _call(url, "POST", f"/v1/studies/{_study_id(study_id)}/invites")
    click.echo(f"one-time code for study {made['study']}, valid until {made['expires_at']}; "
               f"the player runs: capture enroll {url} CODE", err=True)
    click.echo(made["code"])


@collector.command("sessions")
@_url_option
@click.option("--study", "study_id", help="Only this study's sessions.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
def sessions(url: str, study_id: str | None, as_json: bool) -> None:
    """List accepted sessions."""
    params = {"study": _study_id(study_id)} if study_id else {}
    rows = _call(url, "GET", "/v1/admin/sessions", params=params)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no accepted sessions")
    for r in rows:
        click.echo(f"{r['session_id']}  {r['study']}  {r['game']}  {r['player_id']}  "
                   f"{r['total_bytes']} bytes  accepted {r['accepted_at']}")


@collector.command("purges")
@_url_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
def purges(url: str, as_json: bool) -> None:
    """Datasets holding sessions whose consent was withdrawn (to purge)."""
    rows = _call(url, "GET", "/v1/admin/purges")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no dataset needs purging")
    for r in rows:
        click.echo(f"{r['dataset_name']}: remove session {r['session_id']} "
                   f"(withdrawn, registry entry {r['registry_seq']})")


# --- the player's side ----------------------------------------------------------------------
@click.command("enroll")
@click.argument("url")
@click.argument("code")
@click.option("--player", help="Your pseudonym for this study (never a real name is needed).")
@click.option("--yes", is_flag=True, help="Consent without asking (the terms are still shown).")
def enroll(url: str, code: str, player: str | None, yes: bool) -> None:
    """Join a collector's study with an invite code: shows its exact terms, asks, records your
    consent in your ledger, and keeps this device's upload token."""
    from capture.uploader.enrollment import check_terms, fetch_study
    from capture.uploader.enrollment import enroll as run_enroll

    study_info = fetch_study(url, code)
    check_terms(study_info)
    click.echo(f"Study {study_info['name']!r} at {url}\n")
    click.echo(study_info["terms_text"].rstrip("\n"))
    click.echo("")
    rows = [("games", ", ".join(study_info["games"]) + " (only while focused)"),
            ("recorded", ", ".join(study_info["scope"])),
            *[("purpose", p) for p in study_info["purposes"]],
            ("licence", study_info["licence"]),
            ("controller", f"{study_info['controller']['name']}; contact: "
                           f"{study_info['controller']['contact']}"),
            ("kept for", f"{study_info['retention_days']} days"),
            ("terms", f"{study_info['terms_version']} (sha256 {study_info['terms_sha256']})")]
    for label, value in rows:
        lines = textwrap.wrap(value, 80) or [""]
        for i, line in enumerate(lines):
            click.echo(f"  {label if i == 0 else '':<11} {line}")
    if player is None:
        if yes:
            raise click.UsageError("with --yes, give your pseudonym with --player")
        player = click.prompt("Your pseudonym for this study")
    if not yes and not click.confirm("Do you consent to this?", default=False):
        click.echo("Nothing was recorded: consent was not given.")
        raise click.exceptions.Exit(1)
    enrolled, receipt = run_enroll(url, code, study_info, player,
                                   method="cli-scripted" if yes else "cli-interactive")
    click.echo(f"Consent recorded: receipt {receipt.receipt_id} (study {enrolled.study}); "
               f"you are {enrolled.pseudonym!r} to the collector.")
    click.echo("Withdraw any time: capture consent revoke --player "
               f"{shlex.quote(enrolled.pseudonym)} --receipt {receipt.receipt_id}")


@click.command("upload")
@click.argument("sessions_", metavar="[SESSION]...", nargs=-1)
@click.option("--wait", is_flag=True,
              help="Keep retrying while the collector is unreachable, until each is done.")
@click.option("--chunk-kib", type=click.IntRange(1, 16 * 1024), default=4096, show_default=True,
              help="Size of each checksummed chunk.")
def upload(sessions_: tuple[str, ...], wait: bool, chunk_kib: int) -> None:
    """Upload queued sessions (or the named ones, by id or path) to their collector.

    Exits 0 when every one is accepted; otherwise prints each rejection's reason and exits 1.
    """
    from tqdm import tqdm

    from capture.session import store
    from capture.uploader.outbox import flush_outbox
    from capture.uploader.uploader import queued_sessions, upload_sessions

    for delivery in flush_outbox():
        click.echo(f"withdrawal {delivery.revocation_id}: {delivery.status} "
                   f"({delivery.detail})", err=True)
    dirs = [store.resolve(s) for s in sessions_] if sessions_ else queued_sessions()
    if not dirs:
        click.echo("nothing to upload")
        return
    with tqdm(desc="uploading", unit="B", unit_scale=True, file=sys.stderr, disable=None,
              total=0) as bar:
        def total(size: int, confirmed: int) -> None:
            bar.total = (bar.total or 0) + size
            bar.update(confirmed)

        def advance(sent: int) -> None:
            bar.update(sent)

        results = upload_sessions(dirs, wait=wait, chunk_size=chunk_kib << 10,
                                  say=lambda m: bar.write(m, file=sys.stderr),
                                  progress=advance, total=total)
    failed = 0
    for r in results:
        reason = f": {r.reason}" if r.reason else ""
        click.echo(f"{r.session_id}: {r.status}{reason}")
        failed += r.status != "accepted"
    if failed:
        sys.exit(1)
