"""`capture consent ...`: grant, show and revoke consent from the command line."""

from __future__ import annotations

import functools
import json
import textwrap
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from capture import paths
from capture.consent import all_entries, grant, parse_scope
from capture.consent.ledger import GrantState, grant_states
from capture.consent.records import (
    DEFAULT_CONTROLLER_CONTACT,
    DEFAULT_CONTROLLER_NAME,
    DEFAULT_JURISDICTION,
    DEFAULT_LICENSE,
    DEFAULT_PURPOSES,
    RETIRED_SCOPE_KINDS,
    SCOPE_KINDS,
    ConsentReceipt,
    Controller,
    Revocation,
    game_key,
    human_time,
)
from capture.consent.terms import SCOPE_DESCRIPTIONS, TERMS_VERSION, terms_sha256, terms_text
from capture.errors import CaptureError
from capture.uploader.outbox import notify_and_describe

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
        try:
            player = player or click.prompt("Player name or pseudonym")
            games = games or _prompt_games()
            scope = scope or _prompt_scope()
            click.echo(_summary(player, games, scope, purposes, license_, controller,
                                jurisdiction))
            agreed = click.confirm("Do you consent to this?", default=False)
        except click.exceptions.Abort:
            _fail(CaptureError(
                "no answer was given (is there a terminal to type into?): nothing was "
                "recorded. To grant consent from a script, pass --yes with every choice: "
                "--player, --game and --scope"))
        if not agreed:
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
               "active_games": list(s.active_games),
               "never_recorded": [k for k in s.receipt.scope if k in RETIRED_SCOPE_KINDS]}
              for s in states.values()]
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
        f"  scope:    {_scope_text(receipt.scope)}",
        f"  granted:  {human_time(receipt.timestamp)} ({receipt.method}{synthetic}), terms "
        f"{receipt.terms_version}",
        f"  licence:  {receipt.license}",
    ])


def _scope_text(scope: Iterable[str]) -> str:
    """The kinds of a grant; a kind capture no longer offers is marked as never recorded."""
    return ", ".join(f"{k} (never recorded: {RETIRED_SCOPE_KINDS[k]})"
                     if k in RETIRED_SCOPE_KINDS else k for k in scope)


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
    """Withdraw consent, then delete the player's local recordings of those games.

    Every session of the player for a withdrawn game is deleted, except those of a game another
    of their grants still covers. A session whose manifest cannot be read is listed (it cannot
    be told whose it is) and the exit code is then 1; run it again after fixing or deleting it
    (`capture sessions delete ID`). Running it again always retries the deletion.
    """
    from capture.withdrawal import withdraw

    player = player.strip()
    what = _request_text(games, receipt_id)
    if not yes and not click.confirm(
            f"Withdraw {player!r}'s consent {what} and delete their local recordings of it?",
            default=False):
        click.echo("Nothing was changed.")
        raise click.exceptions.Exit(1)
    result = withdraw(player, list(games) or None, receipt_id,
                      method="cli-scripted" if yes else "cli-interactive")
    if result.ledger_error is not None:
        click.echo("The withdrawal could not be recorded in the consent ledger (the last line "
                   "says why); what you asked to delete is deleted below.", err=True)
    elif result.revocation is None:
        click.echo(f"No active consent of {player!r} {what}; nothing new was revoked.")
    else:
        click.echo(f"Revoked {len(result.withdrawn)} grant(s):")
        for receipt, withdrawn_games in result.withdrawn:
            click.echo(f"  {receipt}: {', '.join(withdrawn_games)}")
        for line in notify_and_describe(result.revocation):  # collectors it was enrolled with
            click.echo(line)
    for note in result.notes:
        click.echo(note, err=True)
    if result.kept_games:
        click.echo(f"Kept {len(result.kept)} local session(s) of {', '.join(result.kept_games)}: "
                   f"another active grant of {player!r} still covers them.")
    listing = "".join(f"\n  {p}" for p in result.deleted)
    click.echo(f"Deleted {len(result.deleted)} local session(s)"
               f"{':' if result.deleted else '.'}{listing}")
    if result.deleted:
        click.echo("They can no longer be exported; datasets built from now on leave them out.")
    for problem in result.problems:
        click.echo(f"not deleted: {problem.path}: {problem.reason}", err=True)
    if result.ledger_error is not None:
        _fail(result.ledger_error)
    if result.problems:
        _fail(CaptureError(f"{len(result.problems)} session(s) could not be checked or deleted "
                           "(listed above); fix or delete them (`capture sessions delete ID`) "
                           "and run this again"))


def _request_text(games: tuple[str, ...], receipt_id: str | None) -> str:
    scope = f"for {', '.join(games)}" if games else "for all games"
    return f"{scope} of grant {receipt_id}" if receipt_id else scope


def _quoted(text: str) -> str:
    return text if text.replace("-", "").replace("_", "").isalnum() else json.dumps(text)
