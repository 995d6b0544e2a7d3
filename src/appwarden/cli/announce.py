"""Commands of the announcement: preview, retract, notices, exemptions, and the worker."""

from __future__ import annotations

import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer

from appwarden.cli.context import AppContext
from appwarden.cli.options import As, At, Json, ctx
from appwarden.cli.render import emit_json, errors, short_time, table
from appwarden.errors import InvalidInput
from appwarden.vocabulary import Permission

if TYPE_CHECKING:
    from appwarden.usecases.deliver import Delivery

notices_app = typer.Typer(help="Notices sent and queued.", invoke_without_command=True)
exemption_app = typer.Typer(no_args_is_help=True, help="Time-boxed, justified exemptions.")


enforcement_app = typer.Typer(no_args_is_help=True, help="Push decisions to mail providers.")


def register(app: typer.Typer, policy_app: typer.Typer) -> None:
    app.add_typer(enforcement_app, name="enforcement")
    policy_app.command("preview")(policy_preview)
    policy_app.command("retract")(policy_retract)
    app.add_typer(notices_app, name="notices")
    app.add_typer(exemption_app, name="exemption")
    app.command("worker")(worker)


def policy_preview(
    policy_id: str,
    version: Annotated[int | None, typer.Option("--version", help="Version number.")] = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Who is in scope, who will be told what, and who would lose access: before anyone is told.
    Runs the same code as the release."""
    from appwarden.usecases import lifecycle

    context = ctx()
    now = context.at(at)
    with context.uow(now, write=False) as uow:
        body = lifecycle.preview(
            uow, policy_id, version, context.services.lifecycle_rules, context.notice_config
        )
    if json:
        emit_json(body)
        return
    errors.print(f"{policy_id} v{body['version']} released at {short_time(body['release_at'])}")
    errors.print("states: " + ", ".join(f"{k} {v}" for k, v in sorted(body["counts"].items())))
    table(
        "Notices",
        ["person", "kind", "due", "devices", "subject"],
        [
            (
                n["person"],
                n["kind"],
                short_time(n["due_at"]),
                ", ".join(d["name"] for d in n["devices"]),
                n["subject"],
            )
            for n in body["notices"]
        ],
    )
    if body["losing_access"]:
        table(
            "Would lose access",
            ["person", "device", "resource", "at"],
            [
                (r["person"], r["device"], r["resource"], short_time(r["at"]))
                for r in body["losing_access"]
            ],
        )


def policy_retract(
    policy_id: str,
    message: Annotated[
        str, typer.Option("--message", help="What the correction tells people.")
    ] = "",
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Take back a policy sent in error: cancel what is pending, lift its blocks, and send one
    correction to each person who was told, threaded to their first notice."""
    from appwarden.usecases.retract import retract

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        result = retract(uow, policy_id, message=message, config=context.notice_config)
    out = {
        "policy": policy_id,
        "versions": result.versions,
        "cancelled": result.cancelled,
        "corrections": result.corrections,
        "decisions_changed": result.decisions_changed,
    }
    if json:
        emit_json(out)
    else:
        errors.print(
            f"{policy_id} retracted: {result.cancelled} pending notice(s) cancelled, "
            f"{result.corrections} correction(s) queued, "
            f"{result.decisions_changed} decision(s) changed"
        )


@notices_app.callback()
def notices_list(
    typer_context: typer.Context,
    policy: Annotated[str | None, typer.Option("--policy", help="Only this policy.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="pending, sending, sent, failed, cancelled")
    ] = None,
    at: At = None,
    json: Json = False,
) -> None:
    """List notices (with no subcommand)."""
    from appwarden.usecases import outbox

    if typer_context.invoked_subcommand is not None:
        return
    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = outbox.notice_rows(uow, policy=policy, status=status)
    if json:
        emit_json(rows)
        return
    table(
        "Notices",
        ["id", "person", "kind", "status", "due", "sent", "subject"],
        [
            (
                r["id"],
                r["person"],
                r["kind"],
                r["status"],
                short_time(r["due_at"]),
                short_time(r["sent_at"]),
                r["subject"],
            )
            for r in rows
        ],
    )


@notices_app.command("retry")
def notices_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Notice ids (default: every failed one).")
    ] = None,
    actor: As = None,
    at: At = None,
) -> None:
    """Queue failed notices (and webhooks) again."""
    from appwarden.identity.service import require
    from appwarden.usecases.deliver import retry_failed

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        require(uow, Permission.NOTICES_RETRY)
        count = retry_failed(uow, notice_ids=ids)
    errors.print(f"{count} queued again")


def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Do everything due up to now (or --at), then exit.")
    ] = False,
    at: At = None,
) -> None:
    """Perform due side effects: releases, decisions whose time came, expiry warnings,
    delivery of notices and webhooks, and the scheduled syncs that are due
    (APPWARDEN_SYNC_<SOURCE>_INTERVAL). Without --once it keeps going."""
    context = ctx()
    if at is not None and not once:
        raise InvalidInput("--at only makes sense with --once")
    delivery = context.delivery()
    try:
        _work(context, delivery, at, once=once)
    finally:
        delivery.close()


def _work(context: AppContext, delivery: Delivery, at: str | None, *, once: bool) -> None:
    from appwarden.usecases.sign_in import SessionRules
    from appwarden.usecases.sync import SyncSchedule, runner_name
    from appwarden.usecases.worker import worker_pass

    settings = context.settings
    syncs = (
        SyncSchedule(settings, runner=runner_name("worker")) if settings.sync_intervals else None
    )
    while True:
        now = context.at(at)
        result = worker_pass(
            partial(context.uow, now),
            context.notice_config,
            delivery,
            now,
            syncs=syncs,
            sessions=SessionRules.from_settings(context.settings),
        )
        stats = result.delivery
        if once:
            errors.print(
                f"{result.decision_changes} decision change(s); {stats.sent} notice(s) sent, "
                f"{stats.retried} to retry, {stats.failed} failed, {stats.cancelled} cancelled, "
                f"{stats.webhooks} webhook(s), {stats.mail} sign-in mail(s)"
            )
            for outcome in result.syncs:
                state = "complete" if outcome.complete else f"incomplete: {outcome.error}"
                errors.print(f"{outcome.source} sync run {outcome.run_id}: {state}")
            return
        time.sleep(context.settings.worker_interval_seconds)


# ── exemptions ────────────────────────────────────────────────────────────────────────────────

When = Annotated[str | None, typer.Option(help="RFC 3339 with an offset.")]


def _target(uow: Any, person: str | None, device: str | None) -> dict[str, Any]:
    from appwarden.devices.service import find_device
    from appwarden.identity.service import get_person

    if (person is None) == (device is None):
        raise InvalidInput("name either --person EMAIL or --device DEVICE")
    return (
        {"person": get_person(uow, person)}
        if person
        else {"device": find_device(uow, device or "")}
    )


@exemption_app.command("request")
def exemption_request(
    policy: Annotated[str, typer.Option("--policy")],
    reason: Annotated[str, typer.Option("--reason")],
    person: Annotated[str | None, typer.Option("--person")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    from_: Annotated[str | None, typer.Option("--from")] = None,
    until: Annotated[str | None, typer.Option("--until")] = None,
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Ask for an exemption (changes nothing until it is granted)."""
    from appwarden.exemptions import service as exemptions
    from appwarden.usecases.exemptions import exemption_row

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        e = exemptions.request(
            uow,
            policy_id=policy,
            reason=reason,
            starts_at=context.at(from_) if from_ else None,
            ends_at=context.at(until) if until else None,
            **_target(uow, person, device),
        )
        out = exemption_row(e)
    emit_json(out) if json else errors.print(f"exemption {out['id']} requested")


@exemption_app.command("grant")
def exemption_grant(
    request_id: Annotated[int | None, typer.Argument(help="A request to approve.")] = None,
    policy: Annotated[str | None, typer.Option("--policy")] = None,
    person: Annotated[str | None, typer.Option("--person")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    from_: Annotated[str | None, typer.Option("--from")] = None,
    until: Annotated[str | None, typer.Option("--until")] = None,
    reason: Annotated[str, typer.Option("--reason")] = "",
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Grant a requested exemption, or grant one directly."""
    from appwarden.exemptions import service as exemptions
    from appwarden.usecases.exemptions import after_decision, exemption_row

    context = ctx(actor)
    now = context.at(at)
    with context.uow(now) as uow:
        target = {} if request_id is not None else _target(uow, person, device)
        e = exemptions.grant(
            uow,
            policy_id=policy,
            request_id=request_id,
            reason=reason,
            starts_at=context.at(from_) if from_ else (None if request_id else now),
            ends_at=context.at(until) if until else None,
            **target,
        )
        after_decision(uow, e, context.notice_config)
        out = exemption_row(e)
    emit_json(out) if json else errors.print(
        f"exemption {out['id']} granted until {out['ends_at']}"
    )


@exemption_app.command("deny")
def exemption_deny(
    exemption_id: int,
    reason: Annotated[str, typer.Option("--reason")],
    actor: As = None,
    at: At = None,
) -> None:
    """Turn a request down, saying why."""
    from appwarden.exemptions import service as exemptions

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        exemptions.deny(uow, exemption_id, note=reason)
    errors.print(f"exemption {exemption_id} denied")


@exemption_app.command("revoke")
def exemption_revoke(
    exemption_id: int,
    reason: Annotated[str, typer.Option("--reason")],
    actor: As = None,
    at: At = None,
) -> None:
    """End an exemption now; a violating device then gets its grace from now."""
    from appwarden.exemptions import service as exemptions
    from appwarden.usecases.exemptions import after_decision

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        e = exemptions.revoke(uow, exemption_id, note=reason)
        after_decision(uow, e, context.notice_config)
    errors.print(f"exemption {exemption_id} revoked")


@exemption_app.command("list")
def exemption_list(
    policy: Annotated[str | None, typer.Option("--policy")] = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Exemptions, requested and decided."""
    from appwarden.exemptions import service as exemptions
    from appwarden.usecases.exemptions import exemption_row

    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = [exemption_row(e) for e in exemptions.list_exemptions(uow, policy)]
    if json:
        emit_json(rows)
        return
    table(
        "Exemptions",
        ["id", "policy", "status", "from", "until", "reason"],
        [
            (
                r["id"],
                r["policy"],
                r["status"],
                short_time(r["starts_at"]),
                short_time(r["ends_at"]),
                r["reason"],
            )
            for r in rows
        ],
    )


__all__ = ["register"]


@enforcement_app.command("exchange-script")
def exchange_script(
    add_to_allowed: Annotated[
        bool, typer.Option("--add-to-allowed", help="Also list allowed devices explicitly.")
    ] = False,
    at: At = None,
) -> None:
    """A PowerShell script (Set-CASMailbox) that puts every mailbox's ActiveSync block and allow
    lists in the state appwarden decided. Idempotent; run it from Exchange Online PowerShell."""
    from appwarden.enforcement.exchange import current_state_script
    from appwarden.usecases.enforcement import exchange_state

    context = ctx()
    now = context.at(at)
    with context.uow(now, write=False) as uow:
        rows = exchange_state(uow)
    sys.stdout.write(current_state_script(rows, generated_at=now, add_to_allowed=add_to_allowed))
