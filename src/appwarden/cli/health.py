"""`appwarden sources` (each inventory source's health) and `appwarden breaker list|release`
(the mass-lockout breaker). Registered by `cli.main`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appwarden.cli.options import As, At, Json, ctx
from appwarden.cli.render import emit_json, errors, short_time, table

breaker_app = typer.Typer(
    no_args_is_help=True,
    help="The mass-lockout breaker: denies held because a policy would lock out too many "
    "devices at once, or because a device's source went stale.",
)


def register(app: typer.Typer) -> None:
    app.command("sources")(sources)
    app.add_typer(breaker_app, name="breaker")


def sources(at: At = None, json: Json = False) -> None:
    """Each inventory source: its last complete run and age, its last run's error, the devices
    it is the MDM of record of, its staleness bound and whether it is stale."""
    from appwarden.usecases.health import health_rows

    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = health_rows(uow)
    if json:
        emit_json(rows)
        return
    table(
        "Sources",
        ["source", "devices", "last complete run", "age", "stale after", "stale", "last error"],
        [
            (
                r["source"],
                r["devices"],
                _last_complete(r),
                _age(r["age_seconds"]),
                r["stale_after"] if r["watched"] else "—",
                "STALE" if r["stale"] else "no",
                r["last_error"] or "",
            )
            for r in rows
        ],
    )


def _last_complete(row: dict[str, Any]) -> str:
    if not row["watched"]:
        return "no sync runs"
    return short_time(row["last_complete_at"]) if row["last_complete_at"] else "never"


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


@breaker_app.command("list")
def breaker_list(at: At = None, json: Json = False) -> None:
    """Every policy's breaker: open or tripped, the denies it holds and why, and its flips
    within the last hour against its bound."""
    from appwarden.usecases.breakers import breaker_rows

    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = breaker_rows(uow)
    if json:
        emit_json(rows)
        return
    table(
        "Breakers",
        ["policy", "state", "since", "held", "causes", "flips last hour", "bound"],
        [
            (
                r["policy"],
                r["state"],
                short_time(r["tripped_at"] or r["opened_at"]),
                r["held"],
                _causes(r["causes"]),
                r["flips_last_hour"],
                r["bound"],
            )
            for r in rows
        ],
    )


def _causes(causes: dict[str, Any]) -> str:
    return ", ".join(f"{cause} {count}" for cause, count in causes.items())


@breaker_app.command("release")
def breaker_release(
    policy: Annotated[str, typer.Argument(help="The policy id whose held denies to apply.")],
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Apply every deny the policy's breaker holds and close it (needs the admin role;
    audited). Do it once the denies are checked to be right."""
    from appwarden.usecases.breakers import release_breaker

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        out, _ = release_breaker(uow, policy)
    if json:
        emit_json(out)
        return
    errors.print(
        f"breaker of {out['policy']} released: {out['released']} held deny(s) applied "
        f"({_causes(out['causes']) or 'none held'}); {out['decision_changes']} decision change(s)",
        markup=False,
    )
