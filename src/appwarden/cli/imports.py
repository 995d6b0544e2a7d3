"""`appwarden import SOURCE PATH...`: inventory files in appwarden's formats or a vendor's own
(docs/sources/): every file is checked before any is applied, then each in its own transaction."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from appwarden.cli.context import AppContext
from appwarden.cli.options import At, Json, ctx
from appwarden.cli.render import emit_json, errors, progress
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.formats import PARSERS

if TYPE_CHECKING:
    from appwarden.devices.schemas import InventoryBatch
    from appwarden.sources.common import ImportOptions
    from appwarden.usecases.ingest import IngestResult

Users = Annotated[
    Path | None,
    typer.Option(
        "--users",
        help="amapi: the organisation's mapping of AMAPI user names to email addresses "
        "(CSV `user,email` or a JSON object).",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("import")(import_)


def import_(
    source: Annotated[str, typer.Argument(help=f"Format of the files: {', '.join(PARSERS)}.")],
    paths: Annotated[list[Path], typer.Argument(help="Files to import.", exists=False)],
    strict: Annotated[
        bool, typer.Option("--strict", help="All or nothing: any bad record rejects the file.")
    ] = False,
    users: Users = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Import inventory files, one transaction per file. A bad record skips that whole device
    report and the command exits 2 (--strict: the whole file is refused)."""
    context = ctx()
    now = context.at(at)
    options = _options(context, now, users)
    batches = _read_all(source, paths, strict=strict, options=options, context=context)
    results = [
        _summary(label, result)
        for label, result in zip(
            [label for label, _ in batches], _ingest_each(context, batches, now), strict=True
        )
    ]
    if json:
        emit_json(results)
    else:
        for r in results:
            _print(r)
    if any(r["skipped"] or r["quarantined"] for r in results):
        raise typer.Exit(2)


def _options(context: AppContext, now: datetime, users: Path | None) -> ImportOptions:
    from appwarden.documents import read_limited
    from appwarden.sources.common import ImportOptions

    amapi_users: dict[str, str] = {}
    if users is not None:
        from appwarden.sources.amapi import read_amapi_users

        limit = context.settings.max_import_bytes
        amapi_users = read_amapi_users(read_limited(users, limit), str(users), max_bytes=limit)
    return ImportOptions(
        received_at=now,
        email_activity_window=context.settings.email_activity,
        amapi_users=amapi_users,
    )


def _read_all(
    source: str, paths: list[Path], *, strict: bool, options: ImportOptions, context: AppContext
) -> list[tuple[str, InventoryBatch]]:
    """Read and check every file before anything is written: one bad file (unreadable, invalid
    as a whole, or with a bad record under --strict) applies none, and every bad file is named."""
    from appwarden.documents import read_limited
    from appwarden.sources.registry import parse_files

    limit = context.settings.max_import_bytes
    files: list[tuple[str, bytes]] = []
    problems: list[Problem] = []
    bad: list[str] = []
    for path in paths:
        try:
            files.append((str(path), read_limited(path, limit)))
        except InvalidInput as exc:
            bad.append(str(path))
            problems += exc.problems or [Problem("", exc.message)]
    parsed, refused = parse_files(source, files, strict=strict, max_bytes=limit, options=options)
    reported: list[InvalidInput] = []  # a run refused whole names several files, once
    for name, refusal in refused:
        bad.append(name)
        if not any(refusal is earlier for earlier in reported):
            reported.append(refusal)
            problems += refusal.problems or [Problem("", refusal.message)]
    if bad:
        summary = f"{len(bad)} of {len(paths)} file(s) refused, nothing imported: {', '.join(bad)}"
        raise InvalidInput(summary, problems=[*problems, Problem("", summary)])
    return parsed


def _ingest_each(
    context: AppContext, batches: list[tuple[str, InventoryBatch]], now: datetime
) -> list[IngestResult]:
    """A transaction per file: a crash or an error leaves every file applied whole or not at
    all, and a large multi-page import never holds one transaction open for all of it."""
    from appwarden.usecases.ingest import Writer, ingest
    from appwarden.usecases.statistics import refresh_inventory_statistics

    results = []
    settings = context.settings
    writer = Writer(
        fact_sources=settings.fact_sources,
        organisation_domains=frozenset(settings.organisation_domains),
    )
    total = sum(len(batch.reports) for _, batch in batches)
    with progress(f"importing {len(batches)} file(s)", total) as advance:
        for _, batch in batches:
            with context.uow(now) as uow:
                results.append(
                    ingest(
                        uow,
                        batch,
                        minimise_personal=settings.minimise_personal_data,
                        on_report=advance,
                        writer=writer,
                    )
                )
    # The next fleet evaluation (`status`, a release) is planned from what the files added.
    with context.uow(now, write=False) as uow:
        refresh_inventory_statistics(uow)
    return results


def _summary(label: str, result: IngestResult) -> dict[str, Any]:
    return {
        "file": label,
        "people": result.people,
        "devices": result.devices,
        "reports_applied": result.reports_applied,
        "reports_stale": result.reports_stale,
        "reports_repeated": result.reports_repeated,
        "skipped": result.skipped,
        "quarantined": result.quarantined,
        "outside_domains": result.outside_domains,
        "retirements_held": result.retirements_held,
        "decision_changes": len(result.decision_changes),
    }


def _print(r: dict[str, Any]) -> None:
    errors.print(
        f"{r['file']}: {r['reports_applied']} report(s) applied, "
        f"{r['reports_stale']} older than stored, {r['reports_repeated']} already stored, "
        f"{r['devices']} device(s), "
        f"{r['people']} people, {r['decision_changes']} decision change(s)"
    )
    for line in r["skipped"]:
        errors.print(f"  skipped: {line}")
    for line in r["quarantined"]:
        errors.print(f"  quarantined: {line}")
    if r["outside_domains"]:
        errors.print(
            "  left unowned (outside the organisation's domains): "
            + ", ".join(r["outside_domains"])
        )
    if r["retirements_held"]:
        errors.print(
            f"  {r['retirements_held']} retirement(s) held for an admin: too many at once "
            "(see `appwarden conflicts`)"
        )
