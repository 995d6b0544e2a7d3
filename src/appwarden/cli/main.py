"""The `appwarden` command line. Thin: parse arguments, open a unit of work, call a service,
render. Every reading command has --json; every command has --at.

Every command module imports what a command runs inside that command: `appwarden --help` and a
short command start without the stack the others need (bench/README.md, CLI;
tests/integration/test_cli_start.py lists what `--help` must not import)."""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from appwarden.cli.agent import agent_app
from appwarden.cli.announce import register
from appwarden.cli.audit import audit_app
from appwarden.cli.context import AppContext
from appwarden.cli.devices import devices_app, people_app
from appwarden.cli.health import register as register_health
from appwarden.cli.imports import register as register_imports
from appwarden.cli.options import As, At, Json, _state, ctx, pause_collection
from appwarden.cli.privacy import register as register_privacy
from appwarden.cli.render import (
    bold,
    console,
    emit_document,
    emit_json,
    errors,
    explain,
    short_time,
    table,
)
from appwarden.cli.serve import register as register_server
from appwarden.cli.sync import register as register_sync
from appwarden.errors import AppwardenError, InvalidInput
from appwarden.vocabulary import Role

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Click's plain help, for every group: Typer's rich help imports rich's markdown and
    # traceback modules, which doubled the time `appwarden --help` takes to start.
    rich_markup_mode=None,
    help="Ban a risky app on the devices that reach your data, tell the right people, "
    "enforce it, and undo a mistake cleanly.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
policy_app = typer.Typer(no_args_is_help=True, help="Write, review, approve and release policies.")
catalog_app = typer.Typer(no_args_is_help=True, help="The app catalog.")
admin_app = typer.Typer(no_args_is_help=True, help="Admins and their roles.")
app.add_typer(db_app, name="db")
app.add_typer(policy_app, name="policy")
app.add_typer(catalog_app, name="catalog")
app.add_typer(admin_app, name="admin")


@app.callback()
def _root(
    db: Annotated[
        str | None,
        typer.Option("--db", help="Database URL (default: APPWARDEN_DATABASE_URL or sqlite)."),
    ] = None,
    actor: As = None,
) -> None:
    from appwarden.settings import load_settings

    settings = load_settings()
    if db:
        settings = settings.model_copy(update={"database_url": db})
    _state["ctx"] = AppContext(settings=settings, actor=actor or settings.actor)


# ── database ──────────────────────────────────────────────────────────────────────────────────


@db_app.command("upgrade")
def db_upgrade(at: At = None) -> None:
    """Create or migrate the schema to the current version."""
    from appwarden.db import migrate

    del at  # accepted for uniformity: migrations do not depend on time
    migrate.upgrade(ctx().engine)
    errors.print(f"schema at {migrate.head_revision()}")


# ── demo ──────────────────────────────────────────────────────────────────────────────────────


@app.command()
def demo(
    base_time: Annotated[
        str | None,
        typer.Option(
            "--base-time",
            help="When the memo is released (default: three hours ago). "
            "2020-07-10T09:00:00-07:00 reproduces the reference memo exactly.",
        ),
    ] = None,
    draft: Annotated[
        bool,
        typer.Option(
            "--draft",
            help="Stop before the memo is proposed: people, devices, the first inventory, "
            "frank's exemption and the policy as a draft.",
        ),
    ] = False,
    at: At = None,
) -> None:
    """Load the reference organisation: the TikTok memo, its people, devices and reports."""
    from appwarden.db import migrate
    from appwarden.timeutil import iso
    from appwarden.usecases.demo import POLICY_ID, load_demo

    context = ctx()
    migrate.upgrade(context.engine)
    if base_time:
        base = context.at(base_time)
    else:
        base = (context.at(at) - timedelta(hours=3)).replace(second=0, microsecond=0)
    load_demo(
        lambda when, actor: context.uow(when, actor=actor),
        base=base,
        catalog=context.catalog,
        templates_digest=context.templates_digest,
        undo_window=context.undo_window,
        config=context.notice_config,
        publish=not draft,
    )
    if draft:
        errors.print(f"Loaded the reference organisation with {POLICY_ID} as a draft.")
        return
    errors.print(
        f"Loaded the reference organisation: policy {POLICY_ID} released at {iso(base)}.\n"
        "Try: appwarden status    appwarden decide udid:00008110-000A1B2C3D4E801E email"
    )


# ── inventory ─────────────────────────────────────────────────────────────────────────────────

register_imports(app)
register_sync(app)


@app.command()
def quarantine(json: Json = False, at: At = None) -> None:
    """Reports held back because their identifiers pointed at more than one device."""
    from appwarden.usecases.ingest import quarantine_rows

    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = quarantine_rows(uow)
    if json:
        emit_json(rows)
        return
    table(
        "Quarantined reports",
        ["id", "source", "received", "identifiers", "devices"],
        [
            (
                r["id"],
                r["source"],
                r["received_at"],
                " ".join(r["identifiers"]),
                r["candidate_device_ids"],
            )
            for r in rows
        ],
    )


# ── catalog ───────────────────────────────────────────────────────────────────────────────────


@catalog_app.command("list")
def catalog_list(json: Json = False, at: At = None) -> None:
    """Every app in the catalog (shipped and organisation)."""
    del at
    catalog = ctx().catalog
    rows: list[dict[str, Any]] = [
        {
            "slug": a.slug,
            "name": a.name,
            "publisher": a.publisher,
            "includes": list(a.includes),
            "identifiers": len(catalog.resolve([a.slug])),
            "origin": a.origin,
        }
        for a in catalog
    ]
    if json:
        emit_json({"digest": catalog.digest, "apps": rows})
        return
    table(
        f"Catalog ({len(rows)} apps)",
        ["slug", "name", "includes", "identifiers", "origin"],
        [
            (r["slug"], r["name"], ", ".join(r["includes"]), r["identifiers"], r["origin"])
            for r in rows
        ],
    )


@catalog_app.command("show")
def catalog_show(slug: str, json: Json = False, at: At = None) -> None:
    """One app with its resolved identifiers (includes expanded)."""
    del at
    catalog = ctx().catalog
    entry = catalog.get(slug)
    resolved = [
        {"app": contributor, "identifier": i.key} for contributor, i in catalog.resolve_app(slug)
    ]
    if json:
        emit_json(
            {
                "slug": entry.slug,
                "name": entry.name,
                "publisher": entry.publisher,
                "includes": list(entry.includes),
                "notes": entry.notes,
                "origin": entry.origin,
                "identifiers": resolved,
            }
        )
        return
    console.print(bold(entry.name), f"({entry.slug}, {entry.origin})")
    if entry.notes:
        console.print(entry.notes)
    table(None, ["from app", "identifier"], [(r["app"], r["identifier"]) for r in resolved])


# ── policies ──────────────────────────────────────────────────────────────────────────────────


@policy_app.command("validate")
def policy_validate(files: list[Path], at: At = None) -> None:
    """Check policy documents; each problem is reported as FILE:LINE:COL: message."""
    from appwarden.documents import MAX_DOCUMENT_BYTES, read_limited
    from appwarden.policies import service as policies
    from appwarden.policies.document import parse_policy

    del at
    catalog = ctx().catalog
    bad = False
    for path in files:
        try:
            text = read_limited(path, MAX_DOCUMENT_BYTES)
            doc = parse_policy(text, str(path), known_apps=catalog.slugs())
        except AppwardenError as exc:
            bad = True
            for line in exc.lines():
                errors.print(line)
            continue
        resolved = policies.resolve_identifiers(doc, catalog)
        errors.print(f"{path}: ok ({doc.policy_id}, {len(resolved)} identifiers)")
    if bad:
        raise typer.Exit(2)


@policy_app.command("apply")
def policy_apply(file: Path, actor: As = None, at: At = None, json: Json = False) -> None:
    """Store a document as the policy's draft (identical content is a no-op)."""
    from appwarden.documents import MAX_DOCUMENT_BYTES, read_limited
    from appwarden.usecases import lifecycle

    context = ctx(actor)
    text = read_limited(file, MAX_DOCUMENT_BYTES)
    with context.uow(context.at(at)) as uow:
        result = lifecycle.apply_document(uow, text, str(file), context.services.lifecycle_rules)
        version = result.version
        out = {
            "policy": version.policy_id,
            "version": version.number,
            "state": version.state,
            "changed": result.changed,
            "content_hash": version.content_hash,
        }
    if json:
        emit_json(out)
    else:
        verb = "stored" if result.changed else "unchanged (identical content)"
        errors.print(f"{out['policy']} version {out['version']} {verb}: {out['state']}")


def _lifecycle(
    action: str, policy_id: str, actor: str | None, at: str | None, json: bool, **kw: Any
) -> None:
    from appwarden.timeutil import iso
    from appwarden.usecases import lifecycle

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        version = lifecycle.act(uow, action, policy_id, context.services.lifecycle_rules, **kw)
        out = {
            "policy": version.policy_id,
            "version": version.number,
            "state": version.state,
            "release_at": iso(version.release_at),
        }
    if json:
        emit_json(out)
    else:
        extra = f", released at {out['release_at']}" if out["release_at"] else ""
        errors.print(f"{policy_id} version {out['version']}: {out['state']}{extra}")


@policy_app.command("propose")
def policy_propose(policy_id: str, actor: As = None, at: At = None, json: Json = False) -> None:
    """Ask for review of the draft."""
    _lifecycle("propose", policy_id, actor, at, json)


@policy_app.command("approve")
def policy_approve(policy_id: str, actor: As = None, at: At = None, json: Json = False) -> None:
    """Approve the proposed version (not its author). Binds the content hash."""
    _lifecycle("approve", policy_id, actor, at, json)


@policy_app.command("publish")
def policy_publish(
    policy_id: str,
    short_notice: Annotated[
        bool, typer.Option("--short-notice", help="Allow a deadline under 24 h after release.")
    ] = False,
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Schedule the approved version; it is released when the undo window closes."""
    _lifecycle("publish", policy_id, actor, at, json, short_notice=short_notice)


@policy_app.command("cancel")
def policy_cancel(policy_id: str, actor: As = None, at: At = None, json: Json = False) -> None:
    """Inside the undo window: take the scheduled version back; nothing was sent."""
    _lifecycle("cancel", policy_id, actor, at, json)


@policy_app.command("retire")
def policy_retire(policy_id: str, actor: As = None, at: At = None, json: Json = False) -> None:
    """End the live version on purpose (not an error: see retract)."""
    _lifecycle("retire", policy_id, actor, at, json)


@policy_app.command("list")
def policy_list(at: At = None, json: Json = False) -> None:
    """Every policy with its versions and which one is in effect."""
    from appwarden.usecases.policies import policy_rows

    context = ctx()
    now = context.at(at)
    with context.uow(now, write=False) as uow:
        rows = policy_rows(uow, now)
    if json:
        emit_json(rows)
        return
    table(
        "Policies",
        ["policy", "title", "in effect", "deadline", "versions"],
        [
            (
                r["policy"],
                r["title"],
                r["in_effect"],
                r["deadline"],
                ", ".join(f"v{v['version']} {v['state']}" for v in r["versions"]),
            )
            for r in rows
        ],
    )


@policy_app.command("show")
def policy_show(
    policy_id: str,
    version: Annotated[int | None, typer.Option("--version", help="Version number.")] = None,
    document: Annotated[
        bool,
        typer.Option(
            "--document",
            help="Print only the stored document, byte for byte as applied (and approved): "
            "edit the next version from it.",
        ),
    ] = False,
    at: At = None,
    json: Json = False,
) -> None:
    """A version: state, content hash, approvals, and the resolved identifier set."""
    from appwarden.usecases.policies import stored_document, version_view

    if document and json:
        raise InvalidInput("--document prints the document itself: leave out --json")
    context = ctx()
    if document:
        with context.uow(context.at(at), write=False) as uow:
            text = stored_document(uow, policy_id, version)
        emit_document(text)
        return
    with context.uow(context.at(at), write=False) as uow:
        out = version_view(
            uow,
            policy_id,
            version,
            catalog=context.catalog,
            templates_digest=context.templates_digest,
        )
    if json:
        emit_json(out)
        return
    _print_version(out)


def _print_version(out: dict[str, Any]) -> None:
    console.print(
        bold(out["policy"]),
        f"v{out['version']} — {out['title']}\n"
        f"state {out['state']}, deadline {out['deadline']}, release {out['release_at'] or '—'}\n"
        f"content hash {out['content_hash']}",
    )
    if not out["content_current"]:
        console.print("content changed since apply (catalog or templates): approvals are void")
    for approval in out["approvals"]:
        standing = "valid" if approval["valid"] else f"void: {approval['void_reason'] or 'stale'}"
        console.print(
            f"approved by {approval['approver']} at {approval['at']} "
            f"(content hash {approval['content_hash']}; {standing})"
        )
    if not out["approvals"]:
        console.print("no approvals")
    table(
        f"Resolved identifiers ({len(out['identifiers'])})",
        ["namespace", "value", "from app", "absence also by"],
        [
            (
                i["namespace"],
                i["value"],
                i["app"] or "explicit",
                "its app's URL schemes (iOS)" if i["covered_by_scheme"] else "",
            )
            for i in out["identifiers"]
        ],
    )


# ── state and decisions ───────────────────────────────────────────────────────────────────────


@app.command()
def status(
    policy: Annotated[str | None, typer.Option("--policy", help="Only this policy.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Only this DEVICE.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Include devices the policy does not apply to.")
    ] = False,
    at: At = None,
    json: Json = False,
) -> None:
    """Compliance state of devices under the policies in effect."""
    from appwarden.timeutil import iso
    from appwarden.usecases.status import STATE_ORDER, status_rows

    context = ctx()
    now = context.at(at)
    with context.uow(now, write=False) as uow:
        rows = status_rows(uow, now, policy_id=policy, device_ref=device, include_all=all_)
    if json:
        emit_json(rows)
        return
    order = {str(s): i for i, s in enumerate(STATE_ORDER)}
    rows.sort(key=lambda r: (r["policy"], order[r["state"]], r["person"] or "", r["device"] or ""))
    for policy_id in sorted({r["policy"] for r in rows}):
        mine = [r for r in rows if r["policy"] == policy_id]
        table(
            f"{policy_id} v{mine[0]['version']} at {short_time(iso(now))}",
            ["person", "device", "platform", "state", "since", "due", "why"],
            [
                (
                    r["person"],
                    r["device_name"] or r["device"],
                    r["platform"],
                    r["state"],
                    short_time(r["since"]),
                    short_time(r["due"]),
                    explain(r["reasons"]),
                )
                for r in mine
            ],
        )
    if not rows:
        errors.print(f"no policy in effect at {iso(now)}")


@app.command()
def decide(
    device: Annotated[str, typer.Argument(help="namespace:value, or an unambiguous value.")],
    resource: Annotated[str, typer.Argument(help="The resource asked for, e.g. email.")],
    at: At = None,
    json: Json = False,
) -> None:
    """Would this device get this resource now (or at --at)?"""
    from appwarden.usecases.status import decision_row

    context = ctx()
    now = context.at(at)
    with context.uow(now, write=False) as uow:
        row = decision_row(uow, device, resource, now)
    if json:
        emit_json(row)
        return
    console.print(f"{row['device']} {resource}:", bold(row["decision"]))
    for reason in row["reasons"]:
        console.print(
            f"  {reason['policy']} v{reason['version']}: {reason['state']} ({reason['effect']})"
        )
    if row["valid_until"]:
        console.print(f"  valid until {row['valid_until']}")


# ── worker and admin ──────────────────────────────────────────────────────────────────────────


@admin_app.command("create")
def admin_create(
    email: str,
    role: Annotated[
        Role, typer.Option("--role", help="viewer, author, approver or admin.")
    ] = Role.ADMIN,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Also set the admin's portal password, read from standard input (one line, "
            "12 characters or more; stored as an argon2id hash). Without it, admins sign in "
            "to the portal with single sign-on.",
        ),
    ] = False,
    at: At = None,
) -> None:
    """Give a person an admin role (creating the person if needed)."""
    from appwarden.identity.passwords import checked, set_password
    from appwarden.identity.service import grant_role

    context = ctx()
    password = checked(_read_password()) if password_stdin else None
    with context.uow(context.at(at)) as uow:
        person = grant_role(uow, email, role)
        if password is not None:
            set_password(uow, person, password)
    extra = "; their password is set" if password is not None else ""
    errors.print(f"{email.lower()} is now {role}{extra}")


def _read_password() -> str:
    """One line of standard input, without its line ending (never echoed: a pipe or a file)."""
    from appwarden.identity.passwords import MAX_CHARS as MAX_PASSWORD_CHARS

    line = sys.stdin.readline(MAX_PASSWORD_CHARS + 2)
    return line.removesuffix("\n").removesuffix("\r")


account_app = typer.Typer(
    no_args_is_help=True,
    help="Account names a person signs in to mail with (UPN, DOMAIN\\sam): the gate matches "
    "request credentials against them exactly.",
)
admin_app.add_typer(account_app, name="account")


def _accounts(email: str, actor: str | None, at: Any, add: list[str], remove: list[str]) -> None:
    from appwarden.identity.service import change_accounts

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        names = change_accounts(uow, email, add=add, remove=remove)
    errors.print(f"{email.lower()}: {', '.join(names) or 'no account names'}", markup=False)


@account_app.command("add")
def account_add(email: str, names: list[str], actor: As = None, at: At = None) -> None:
    """Give EMAIL the account NAMES (refused when someone else answers to one)."""
    _accounts(email, actor, at, names, [])


@account_app.command("remove")
def account_remove(email: str, names: list[str], actor: As = None, at: At = None) -> None:
    """Take the account NAMES from EMAIL."""
    _accounts(email, actor, at, [], names)


register(app, policy_app)
register_server(app)
register_privacy(app)
register_health(app)
app.add_typer(audit_app, name="audit")
app.add_typer(devices_app, name="devices")
app.add_typer(agent_app, name="agent")
app.add_typer(people_app, name="people")


def run(argv: list[str]) -> int:
    """Run one command; returns the exit code. Errors of ours print their located lines."""
    try:
        app(args=argv, prog_name="appwarden")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except AppwardenError as exc:
        for line in exc.lines():
            errors.print(line if exc.problems else f"error: {line}", markup=False)
        return exc.exit_code
    finally:
        context = _state.pop("ctx", None)
        if context is not None:
            context.close()
    return 0


def main() -> None:
    """The process's entry point: run the command, then leave without the interpreter's
    teardown. A command that read the store has loaded the ORM's mappers and its queries;
    freeing them one by one at exit took a tenth of a second, as long as the command itself
    (bench/README.md, CLI). What a finished command leaves is written out first (its output and
    log lines); `run` has closed its store."""
    pause_collection()
    code = run(sys.argv[1:])
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that left, or a stream already closed
            code = code or 1
    os._exit(code)
