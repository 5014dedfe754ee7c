"""`capture consent ...`: grant, show and revoke consent from the command line."""

from __future__ import annotations

import functools
import json
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from capture import paths
from capture.errors import BadInputError, CaptureError

from . import all_entries, grant, parse_scope, withdraw
from .ledger import GrantState, grant_states
from .records import (
    DEFAULT_CONTROLLER_CONTACT,
    DEFAULT_CONTROLLER_NAME,
    DEFAULT_JURISDICTION,
    DEFAULT_LICENSE,
    DEFAULT_PURPOSES,
    SCOPE_KINDS,
    ConsentReceipt,
    Controller,
    Revocation,
    game_key,
    human_time,
)
from .terms import SCOPE_DESCRIPTIONS, TERMS_VERSION, terms_sha256, terms_text

P = ParamSpec("P")
R = TypeVar("R")


def _reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a CaptureError as `error: <message>` on stderr and exit with its exit code."""
    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CaptureError as err:
            _fail(err)
    return wrapper


def _fail(err: CaptureError) -> NoReturn:
    click.echo(f"error: {err}", err=True)
    raise click.exceptions.Exit(err.exit_code)


@click.group("consent")
def consent() -> None:
    """Give, see and withdraw consent to record gameplay."""


# --- grant ------------------------------------------------------------------------------------
@consent.command("grant")
@click.option("--player", help="The player's name or pseudonym, as the local ledger will show it.")
@click.option("--game", "games", multiple=True,
              help="A game to record: executable name or window class (repeat for more).")
@click.option("--scope", "scopes", multiple=True,
              help=f"What to record, comma-separated, from: {','.join(SCOPE_KINDS)}.")
@click.option("--purpose", "purposes", multiple=True,
              help="A purpose of the recording (repeat for more; default: model research).")
@click.option("--license", "license_", default=DEFAULT_LICENSE, show_default=True,
              help="Licence of the recorded data (SPDX id).")
@click.option("--controller-name", default=DEFAULT_CONTROLLER_NAME, show_default=True,
              help="Who is responsible for the recorded data.")
@click.option("--controller-contact", default=DEFAULT_CONTROLLER_CONTACT, show_default=True,
              help="How to reach the controller.")
@click.option("--jurisdiction", default=DEFAULT_JURISDICTION, show_default=True,
              help="The jurisdiction whose law applies to this consent.")
@click.option("--yes", is_flag=True,
              help="Do not show the terms or ask: every choice must be on the command line.")
@_reports_errors
def grant_command(player: str | None, games: tuple[str, ...], scopes: tuple[str, ...],
                  purposes: tuple[str, ...], license_: str, controller_name: str,
                  controller_contact: str, jurisdiction: str, yes: bool) -> None:
    """Record a player's consent to record some games (shows the terms and asks first)."""
    scope = parse_scope(scopes)
    controller = Controller(name=controller_name.strip() or DEFAULT_CONTROLLER_NAME,
                            contact=controller_contact.strip() or DEFAULT_CONTROLLER_CONTACT)
    if yes:
        missing = [flag for flag, value in
                   (("--player", player), ("--game", games), ("--scope", scope)) if not value]
        if missing:
            raise click.UsageError(
                f"with --yes every choice must be on the command line; missing: "
                f"{', '.join(missing)}")
    else:
        click.echo(terms_text())
        player = player or click.prompt("Player name or pseudonym")
        games = games or _prompt_games()
        scope = scope or _prompt_scope()
        click.echo(_summary(player, games, scope, purposes, license_, controller, jurisdiction))
        if not click.confirm("Do you consent to this?", default=False):
            click.echo("Nothing was recorded: consent was not given.")
            raise click.exceptions.Exit(1)
    assert player is not None
    receipt = grant(player, list(games), list(scope), purposes=list(purposes) or None,
                    license=license_, method="cli-scripted" if yes else "cli-interactive",
                    controller=controller, jurisdiction=jurisdiction)
    click.echo(f"Consent recorded: receipt {receipt.receipt_id}")
    click.echo(f"Withdraw it any time: capture consent revoke --player {_quoted(receipt.player)}")


def _prompt_games() -> tuple[str, ...]:
    while True:
        answer = click.prompt("Games to record (comma-separated executable names or window "
                              "classes)")
        games = tuple(g.strip() for g in answer.split(",") if g.strip())
        if games:
            return games


def _prompt_scope() -> tuple[str, ...]:
    while True:
        answer = click.prompt(f"What to record (comma-separated, from {', '.join(SCOPE_KINDS)})")
        try:
            scope = parse_scope([answer])
        except CaptureError as err:
            click.echo(f"error: {err}", err=True)
            continue
        if scope:
            return scope


def _summary(player: str, games: Iterable[str], scope: tuple[str, ...],
             purposes: tuple[str, ...], license_: str, controller: Controller,
             jurisdiction: str) -> str:
    width = max(len(k) for k in SCOPE_KINDS)
    recorded = [f"{k:<{width}}  {SCOPE_DESCRIPTIONS[k]}" for k in scope]
    not_recorded = [k for k in SCOPE_KINDS if k not in scope] or ["(everything listed is)"]
    rows = [
        ("player", [f"{player} (datasets show a keyed pseudonym instead)"]),
        ("games", [f"{', '.join(games)} (only while focused)"]),
        ("recorded", recorded),
        ("not recorded", [", ".join(not_recorded)]),
        ("purpose", [line for p in purposes or DEFAULT_PURPOSES for line in textwrap.wrap(p, 80)]),
        ("licence", [license_]),
        ("controller", [f"{controller.name}; contact: {controller.contact}"]),
        ("jurisdiction", [jurisdiction]),
        ("stored in", [str(paths.data_dir())]),
        ("terms", [f"{TERMS_VERSION} (sha256 {terms_sha256()})"]),
    ]
    lines = ["", "You are about to consent to this:"]
    for label, values in rows:
        for index, value in enumerate(values):
            lines.append(f"  {label if index == 0 else '':<13} {value}")
    return "\n".join(lines) + "\n"


# --- show -------------------------------------------------------------------------------------
@consent.command("show")
@click.option("--player", help="Only this player's grants and revocations.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_reports_errors
def show_command(player: str | None, as_json: bool) -> None:
    """List consent grants (with their current status) and revocations."""
    entries = [e for e in all_entries() if player is None or e.player == player]
    states = grant_states(entries)
    if as_json:
        click.echo(json.dumps(_as_json(entries, states), indent=2))
        return
    if not entries:
        click.echo("No consent recorded" + (f" for player {player!r}." if player else "."))
        return
    for entry in entries:
        if isinstance(entry, ConsentReceipt):
            click.echo(_describe_grant(states[entry.receipt_id]))
        else:
            click.echo(_describe_revocation(entry))


def _as_json(entries: list[ConsentReceipt | Revocation],
             states: dict[str, GrantState]) -> dict[str, Any]:
    grants = [{**s.receipt.model_dump(mode="json"), "status": s.status,
               "active_games": list(s.active_games)} for s in states.values()]
    revocations = [e.model_dump(mode="json") for e in entries if isinstance(e, Revocation)]
    return {"grants": grants, "revocations": revocations}


def _describe_grant(state: GrantState) -> str:
    receipt = state.receipt
    games = [f"{g} (withdrawn {human_time(state.withdrawn_by[game_key(g)].timestamp)})"
             if game_key(g) in state.withdrawn_by else g for g in receipt.games]
    synthetic = ", synthetic" if receipt.synthetic else ""
    return "\n".join([
        f"grant {receipt.receipt_id} [{state.status}]",
        f"  player:   {receipt.player}",
        f"  games:    {', '.join(games)}",
        f"  scope:    {', '.join(receipt.scope)}",
        f"  granted:  {human_time(receipt.timestamp)} ({receipt.method}{synthetic}), terms "
        f"{receipt.terms_version}",
        f"  licence:  {receipt.license}",
    ])


def _describe_revocation(revocation: Revocation) -> str:
    lines = [f"revoke {revocation.receipt_id} on {human_time(revocation.timestamp)} by "
             f"{revocation.player} ({revocation.method})"]
    lines += [f"  withdrew {', '.join(item.games)} from grant {item.receipt_id}"
              for item in revocation.withdrawn]
    return "\n".join(lines)


# --- revoke -----------------------------------------------------------------------------------
@consent.command("revoke")
@click.option("--player", required=True, help="Whose consent to withdraw.")
@click.option("--game", "games", multiple=True,
              help="Withdraw only for this game (repeat for more; default: all games).")
@click.option("--receipt", "receipt_id", help="Withdraw only this grant.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_reports_errors
def revoke_command(player: str, games: tuple[str, ...], receipt_id: str | None,
                   yes: bool) -> None:
    """Withdraw consent, then delete the player's local recordings of those games."""
    player = player.strip()
    what = _request_text(games, receipt_id)
    if not yes and not click.confirm(
            f"Withdraw {player!r}'s consent {what} and delete their local recordings of it?",
            default=False):
        click.echo("Nothing was changed.")
        raise click.exceptions.Exit(1)
    try:
        revocation = withdraw(player, list(games) or None, receipt_id,
                              method="cli-scripted" if yes else "cli-interactive")
    except BadInputError as ledger_damage:
        _delete_despite_damaged_ledger(player, games, receipt_id, ledger_damage)
    if revocation is None:
        click.echo(f"No active consent of {player!r} {what}; nothing new was revoked.")
    else:
        click.echo(f"Revoked {len(revocation.withdrawn)} grant(s):")
        for item in revocation.withdrawn:
            click.echo(f"  {item.receipt_id}: {', '.join(item.games)}")
        from capture.uploader.outbox import notify_and_describe  # to capture/withdrawal.py at merge

        for line in notify_and_describe(revocation):
            click.echo(line)
    to_delete, kept = _games_to_delete(player, games, receipt_id, revocation)
    if kept:
        click.echo(f"Kept local sessions of {', '.join(kept)}: another active grant of "
                   f"{player!r} still covers them.")
    if to_delete == []:
        return
    deleted = _delete_sessions(player, to_delete)
    listing = "".join(f"\n  {p}" for p in deleted)
    click.echo(f"Deleted {len(deleted)} local session(s){':' if deleted else '.'}{listing}")
    click.echo("They can no longer be exported; datasets built from now on leave them out.")


def _request_text(games: tuple[str, ...], receipt_id: str | None) -> str:
    scope = f"for {', '.join(games)}" if games else "for all games"
    return f"{scope} of grant {receipt_id}" if receipt_id else scope


def _games_to_delete(player: str, games: tuple[str, ...], receipt_id: str | None,
                     revocation: Revocation | None) -> tuple[list[str] | None, list[str]]:
    """(games whose local sessions to delete, None = all; games kept: still consented).

    Sessions of a game another active grant of the player still covers are kept; if nothing
    was revoked this time (already withdrawn), deletion is retried for what was asked.
    """
    if not games and receipt_id is None:
        return None, []
    states = grant_states(all_entries())
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


def _delete_despite_damaged_ledger(player: str, games: tuple[str, ...], receipt_id: str | None,
                                   ledger_damage: BadInputError) -> NoReturn:
    """The withdrawal could not be recorded; still delete what the player asked to delete."""
    if receipt_id is not None and not games:
        click.echo("The ledger cannot be read, so the games of that grant are unknown: no local "
                   "sessions were deleted. Pass --game to delete them.", err=True)
    else:
        deleted = _delete_sessions(player, list(games) or None)
        click.echo(f"Deleted {len(deleted)} local session(s) although the ledger is damaged.")
    _fail(ledger_damage)


def _delete_sessions(player: str, games: list[str] | None) -> list[Path]:
    try:
        from capture.session.store import delete_sessions_of
    except ImportError as exc:
        raise CaptureError(f"local sessions could not be deleted: the session store is "
                           f"unavailable ({exc})") from None
    try:
        return list(delete_sessions_of(player, games))
    except CaptureError as err:
        raise CaptureError(f"deleting local sessions failed: {err}") from None


def _quoted(text: str) -> str:
    return text if text.replace("-", "").replace("_", "").isalnum() else json.dumps(text)
