"""`appwarden sync SOURCE`: one run of a source's live connection (docs/sources/, "Live sync"):
every page fetched, read with the same mapping as `appwarden import`, ingested page by page, and
recorded as a run. It takes the same claim as the worker's scheduled syncs, so it never runs
beside one of them."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import typer

from appwarden.cli.options import At, Json, ctx
from appwarden.cli.render import emit_json, errors, progress
from appwarden.errors import InvalidInput
from appwarden.vocabulary import SYNC_SOURCES


def register(app: typer.Typer) -> None:
    app.command("sync")(sync)


def sync(
    source: Annotated[str, typer.Argument(help=f"The source: {', '.join(SYNC_SOURCES)}.")],
    at: At = None,
    json: Json = False,
) -> None:
    """Fetch every page of SOURCE's API and ingest it; prints the run's summary. Exits 1 when
    the run is incomplete (a page that could not be fetched or read): nothing is retired then."""
    from appwarden.usecases.sync import claimed_by, runner_name, sync_claimed

    if source not in SYNC_SOURCES:
        raise InvalidInput(
            f"{source!r} cannot be synced; sources with an API: {', '.join(SYNC_SOURCES)}"
        )
    context = ctx()
    now = context.at(at)
    open_uow = partial(context.uow, now)
    with progress(f"syncing {source}", None) as advance:
        outcome = sync_claimed(
            open_uow,
            context.settings,
            source,
            now=now,
            runner=runner_name("cli"),
            on_page=lambda _pages: advance(),
        )
    if outcome is None:
        raise claimed_by(open_uow, source)
    if json:
        emit_json(outcome.as_json())
    else:
        _print(outcome.as_json())
    if not outcome.complete:
        raise typer.Exit(1)


def _print(run: dict[str, Any]) -> None:
    state = "complete" if run["complete"] else "INCOMPLETE"
    errors.print(
        f"{run['source']} sync run {run['run_id']}: {state}, {run['pages']} page(s), "
        f"{run['reports']} report(s), {run['devices']} device(s), {run['retired']} retired, "
        f"{run['decision_changes']} decision change(s)",
        markup=False,
    )
    if run["error"]:
        errors.print(f"  error: {run['error']}", markup=False)
        errors.print("  an incomplete run retires nothing; the next run starts over", markup=False)
    for line in run["skipped"]:
        errors.print(f"  skipped: {line}", markup=False)
    for line in run["quarantined"]:
        errors.print(f"  quarantined: {line}", markup=False)
    if run["retirements_held"]:
        errors.print(
            f"  {run['retirements_held']} retirement(s) held for an admin: too many at once "
            "(see `appwarden conflicts`)",
            markup=False,
        )
