"""`appwarden devices list|show` and `appwarden people show`: what inventory taught us.

Registered by `cli.main` as the `devices` and `people` sub-command groups. The use cases are
those of `GET /v1/devices`, `GET /v1/devices/{device}` and `GET /v1/people/{email}`, and `--json`
prints exactly what those routes answer.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appwarden.cli.options import As, At, Json, ctx
from appwarden.cli.render import bold, console, emit_json, errors, explain, short_time, table
from appwarden.usecases.paging import DEFAULT_LIMIT, MAX_LIMIT

devices_app = typer.Typer(no_args_is_help=True, help="Devices as inventory reported them.")
people_app = typer.Typer(no_args_is_help=True, help="People and their devices.")


def _option(name: str) -> str:
    return f"--{name}"


@devices_app.command("list")
def devices_list(
    person: Annotated[
        str | None, typer.Option("--person", help="Email, alias or account name.")
    ] = None,
    identifier: Annotated[
        str | None,
        typer.Option("--identifier", help="namespace:value, or a bare value (every device)."),
    ] = None,
    platform: Annotated[str | None, typer.Option("--platform", help="A platform.")] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="Devices with a report or identifier from this source."),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="A compliance state under some version in effect."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="A policy id: with --state, only its version; alone, the devices in its scope.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", help=f"Devices per page: 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."
        ),
    ] = None,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="The next_cursor a previous page printed.")
    ] = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Devices in a stable order, a page at a time; every filter given must hold."""
    from appwarden.usecases.inventory import DeviceFilters, device_page

    context = ctx()
    filters = DeviceFilters(person, identifier, platform, source, state, policy)
    with context.uow(context.at(at), write=False) as uow:
        page = device_page(uow, filters, cursor, limit, where=_option)
    if json:
        emit_json(page.to_json())
        return
    table(
        f"Devices ({len(page.devices)})",
        ["device", "name", "person", "platform", "status", "sources", "states"],
        [
            (
                r["device"],
                r["name"],
                r["person"],
                r["platform"],
                r["status"],
                ", ".join(r["sources"]),
                _states(r["states"]),
            )
            for r in page.devices
        ],
    )
    if page.next_cursor:
        errors.print(f"more: --cursor {page.next_cursor}")


def _states(states: list[dict[str, Any]]) -> str:
    return "; ".join(f"{s['policy']} v{s['version']}: {s['state']}" for s in states)


@devices_app.command("show")
def devices_show(
    device: Annotated[str, typer.Argument(help="namespace:value, or an unambiguous value.")],
    at: At = None,
    json: Json = False,
) -> None:
    """One device: identifiers, owner, resources, every report, states and open conflicts."""
    from appwarden.usecases.inventory import device_detail

    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        out = device_detail(uow, device)
    if json:
        emit_json(out)
        return
    _print_device(out)


def _print_device(out: dict[str, Any]) -> None:
    owner = out["owner"]
    console.print(bold(out["name"] or out["device"] or f"device {out['id']}"))
    console.print(
        f"{out['platform']} {out['form_factor']}, {out['ownership']}, {out['status']}"
        + (f" since {out['retired_at']}" if out["retired_at"] else "")
        + f"; owner {owner['email'] if owner else '—'}"
        + f"; resources {', '.join(out['resources']) or '—'}"
    )
    table(
        "Identifiers",
        ["identifier", "source", "first seen", "last seen"],
        [
            (
                f"{i['namespace']}:{i['value']}",
                i["source"],
                short_time(i["first_seen_at"]),
                short_time(i["last_seen_at"]),
            )
            for i in out["identifiers"]
        ],
    )
    table(
        f"Reports ({len(out['reports'])} of {out['reports_total']}, newest first)",
        ["id", "source", "evidence", "coverage", "observed", "received", "token", "apps"],
        [
            (
                r["id"],
                r["source"],
                r["evidence_kind"],
                ", ".join(r["coverage"]["namespaces"]),
                short_time(r["observed_at"]),
                short_time(r["received_at"]),
                r["token"]["name"] if r["token"] else "cli import",
                r["app_count"] if r["applied"] else f"{r['app_count']} (older: ignored)",
            )
            for r in out["reports"]
        ],
    )
    table(
        "States",
        ["policy", "state", "since", "due", "why"],
        [
            (
                f"{s['policy']} v{s['version']}",
                s["state"],
                short_time(s["since"]),
                short_time(s["due"]),
                explain(s["reasons"]),
            )
            for s in out["states"]
        ],
    )
    for conflict in out["conflicts"]:
        console.print(
            f"conflict #{conflict['id']}: {conflict['fact']} {conflict['stored_value']!r} "
            f"stored, {conflict['source']} offers {conflict['offered_value']!r}"
        )


@people_app.command("show")
def people_show(
    email: Annotated[str, typer.Argument(help="Primary email, alias or account name.")],
    at: At = None,
    json: Json = False,
) -> None:
    """One person: addresses, account names, groups, status, and their devices."""
    from appwarden.usecases.inventory import person_detail

    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        out = person_detail(uow, email)
    if json:
        emit_json(out)
        return
    console.print(bold(out["display_name"] or out["email"]), f"<{out['email']}>")
    console.print(
        f"status {out['status']}"
        + (f" since {out['left_at']}" if out["left_at"] else "")
        + f"; time zone {out['time_zone'] or 'default'}"
        + f"; groups {', '.join(out['groups']) or '—'}"
    )
    console.print(f"aliases {', '.join(out['aliases']) or '—'}")
    console.print(f"account names {', '.join(out['accounts']) or '—'}")
    table(
        f"Devices ({len(out['devices'])})",
        ["device", "name", "platform", "status", "states"],
        [
            (r["device"], r["name"], r["platform"], r["status"], _states(r["states"]))
            for r in out["devices"]
        ],
    )


@devices_app.command("merge")
def devices_merge(
    keep: Annotated[str, typer.Argument(help="The device to keep (DEVICE).")],
    other: Annotated[str, typer.Argument(help="The record that is the same device (DEVICE).")],
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Merge two records of one device that no identifier joins (a phone and its mail
    partnership): OTHER's identifiers, reports and resources move to KEEP. Needs admin; audited."""
    from appwarden.usecases.merge import merge_devices

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        merged = merge_devices(uow, keep, other)
    if json:
        emit_json(merged)
        return
    errors.print(
        f"merged into device {merged['device_id']}: {' '.join(merged['identifiers'])}; "
        f"resources: {', '.join(merged['resources']) or 'none'}"
    )


@devices_app.command("unjoined")
def devices_unjoined(at: At = None, json: Json = False) -> None:
    """Mail partnerships no identifier joins to a device, each with the owner's devices it could
    be; they announce nobody until merged or seven days old."""
    from appwarden.usecases.merge import unjoined_partnerships

    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = unjoined_partnerships(uow)
    if json:
        emit_json(rows)
        return
    table(
        "Unjoined mail partnerships",
        ["device", "owner", "waits until", "could be"],
        [
            (
                " ".join(r["identifiers"]),
                r["owner"] or "",
                short_time(r["waits_until"]),
                "; ".join(" ".join(c["identifiers"]) for c in r["candidates"]),
            )
            for r in rows
        ],
    )
