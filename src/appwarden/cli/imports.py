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
from appwarden.sources.formats import PARSERS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from appwarden.sources.common import ImportOptions
    from appwarden.sources.files import CheckedFiles
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
    files = _check_all(source, paths, strict=strict, options=options, context=context)
    results: list[dict[str, Any]] = []
    try:
        for label, result in _ingest_each(context, files, now):
            results.append(_summary(label, result))
    finally:  # what was applied is told even when a file that changed stops the run
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


def _check_all(
    source: str, paths: list[Path], *, strict: bool, options: ImportOptions, context: AppContext
) -> CheckedFiles:
    from appwarden.sources.files import check_files

    limit = context.settings.max_import_bytes
    with progress(f"checking {len(paths)} file(s)", len(paths)) as advance:
        return check_files(
            source,
            paths,
            strict=strict,
            max_bytes=limit,
            options=options,
            on_file=advance,
        )


def _ingest_each(
    context: AppContext, files: CheckedFiles, now: datetime
) -> Iterator[tuple[str, IngestResult]]:
    """A transaction per file: a crash or an error leaves every file applied whole or not at
    all, and a large multi-page import never holds one transaction open for all of it."""
    from appwarden.usecases.ingest import Writer, ingest
    from appwarden.usecases.statistics import refresh_inventory_statistics

    settings = context.settings
    writer = Writer(
        fact_sources=settings.fact_sources,
        organisation_domains=frozenset(settings.organisation_domains),
    )
    applied = 0
    try:
        with progress(f"importing {len(files.files)} file(s)", files.reports) as advance:
            for label, batch in files.batches():
                with context.uow(now) as uow:
                    result = ingest(
                        uow,
                        batch,
                        minimise_personal=settings.minimise_personal_data,
                        on_report=advance,
                        writer=writer,
                    )
                applied += 1
                yield label, result
    finally:
        # The next fleet evaluation (`status`, a release) is planned from what the files
        # added, also when a file that changed stopped the run after others were applied.
        if applied:
            with context.uow(now, write=False) as uow:
                refresh_inventory_statistics(uow)


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
