"""`appwarden serve` and `appwarden token create|revoke|list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from appwarden.cli.options import As, At, Json, ctx
from appwarden.cli.render import emit_json, errors, short_time, table
from appwarden.errors import InvalidInput
from appwarden.vocabulary import Permission

token_app = typer.Typer(no_args_is_help=True, help="Scoped API tokens for the HTTP API.")
conflicts_app = typer.Typer(
    help="Facts offered by a source that is not authoritative for them, held for an admin."
)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
    app.add_typer(conflicts_app, name="conflicts")


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Run the worker in this process (default: on with SQLite, off with "
            "PostgreSQL, where `appwarden worker` runs beside the API replicas).",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            help="Serve HTTPS with this PEM certificate (chain); needs --tls-key. osquery "
            "speaks TLS only: this, or TLS terminated in front (docs/sources/osquery.md).",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The PEM private key of --tls-cert.")
    ] = None,
) -> None:
    """Serve the HTTP API (/v1/, /healthz, /readyz, /metrics, /openapi.json), the employee
    portal (/me/, sign-in at /auth/) and the forward-auth gate."""
    import uvicorn

    from appwarden.web.app import SERVER_OPTIONS, create_app
    from appwarden.web.observability import configure_logging

    tls = tls_options(tls_cert, tls_key)
    context = ctx()
    settings = context.settings
    try:
        context.require_schema()
        backend = context.engine.url.get_backend_name()
    finally:
        context.close()  # the application builds its own engine
    embedded = worker if worker is not None else backend == "sqlite"
    app = create_app(settings, worker=embedded)
    base = f"{'https' if tls else 'http'}://{host}:{port}"
    errors.print(
        f"appwarden serving {base}  (API {base}/v1/, OpenAPI {base}/openapi.json, "
        f"health {base}/healthz)\n"
        f"worker: {'in this process' if embedded else 'off (run `appwarden worker`)'}; "
        f"store: {backend}\n"
        f"The employee portal: {settings.portal_url} (people sign in there; notices link it)\n"
        "The API needs a token, e.g.:\n"
        "  appwarden token create gate --permission decisions:read\n"
        f"  curl -H 'Authorization: Bearer <token>' "
        f"{base}/v1/decisions/udid:00008110-000A1B2C3D4E801E/email",
        markup=False,
        soft_wrap=True,  # keep the URLs and the command on one line each, for copying
    )
    configure_logging()
    uvicorn.run(app, host=host, port=port, **SERVER_OPTIONS, **tls)


def tls_options(cert: Path | None, key: Path | None) -> dict[str, Any]:
    """uvicorn's TLS options for --tls-cert/--tls-key: both or neither, loaded once here so that a
    missing file, a bad PEM or a key of another certificate is a clear error, not a traceback."""
    import ssl

    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise InvalidInput("--tls-cert and --tls-key go together: give both, or neither")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError is one: a bad PEM, or a key that does not match
        reason = exc.strerror or str(exc)
        raise InvalidInput(
            f"--tls-cert {cert} / --tls-key {key}: cannot be used ({reason})"
        ) from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. nginx-gate.")],
    permission: Annotated[
        list[str],
        typer.Option(
            "--permission",
            "-p",
            help="Repeatable: " + ", ".join(p.value for p in Permission) + ".",
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="The one source an inventory:write token writes as (required for it).",
        ),
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            help="Repeatable: the only device identifier namespaces the token may name "
            "devices by (default: any).",
        ),
    ] = None,
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Create a token and print its secret, once: only its hash is stored."""
    from appwarden.usecases import tokens

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        row, secret = tokens.create(uow, name, permission, source=source, namespaces=namespace)
        out = {**row, "token": secret}
    if json:
        emit_json(out)
        return
    print(secret)
    bound = f"; writes as {out['source']}" if out["source"] else ""
    errors.print(
        f"token {out['id']} ({out['name']}: {', '.join(out['permissions'])}{bound}) created. "
        "This is the only time the secret is shown; use it as "
        "`Authorization: Bearer <token>`.",
        markup=False,
    )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (see `token list`).")],
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Revoke a token: requests carrying it are refused from now on."""
    from appwarden.usecases import tokens

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        out = tokens.revoke(uow, token_id)
    if json:
        emit_json(out)
    else:
        errors.print(f"token {out['id']} ({out['name']}) revoked at {out['revoked_at']}")


@token_app.command("list")
def token_list(at: At = None, json: Json = False) -> None:
    """Every token: id, name, permissions, when it was created, last used and revoked."""
    from appwarden.usecases import tokens

    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = tokens.token_rows(uow)
    if json:
        emit_json(rows)
        return
    table(
        "API tokens",
        ["id", "name", "permissions", "source", "created", "last used", "revoked"],
        [
            (
                r["id"],
                r["name"],
                ", ".join(r["permissions"]),
                r["source"] or "",
                short_time(r["created_at"]),
                short_time(r["last_used_at"]),
                short_time(r["revoked_at"]),
            )
            for r in rows
        ],
    )


# ── fact conflicts ────────────────────────────────────────────────────────────────────────────


@conflicts_app.callback(invoke_without_command=True)
def conflicts_list(
    typer_context: typer.Context,
    settled: Annotated[bool, typer.Option("--all", help="Include settled conflicts.")] = False,
    at: At = None,
    json: Json = False,
) -> None:
    """Open fact conflicts: which source offered what value for which fact, and what is stored."""
    from appwarden.usecases.conflicts import conflict_rows

    if typer_context.invoked_subcommand is not None:
        return
    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = conflict_rows(uow, include_settled=settled)
    if json:
        emit_json(rows)
        return
    table(
        "Fact conflicts",
        ["id", "fact", "device / person", "stored", "offered", "source", "last offered", "status"],
        [
            (
                r["id"],
                r["fact"],
                r["person"] or " ".join(r["device"] or []),
                str(r["stored_value"]),
                str(r["offered_value"]),
                r["source"],
                short_time(r["last_offered_at"]),
                r["resolution"] or r["status"],
            )
            for r in rows
        ],
    )


@conflicts_app.command("settle")
def conflicts_settle(
    conflict_id: Annotated[int, typer.Argument(help="The conflict's id (see `conflicts`).")],
    accept: Annotated[
        bool | None,
        typer.Option(
            "--accept/--reject",
            help="Apply the offered value now, or discard it.",
            show_default=False,
        ),
    ] = None,
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Settle an open conflict (needs the admin role): --accept applies it, --reject drops it."""
    from appwarden.usecases.conflicts import settle_conflict

    if accept is None:
        raise InvalidInput("say --accept (apply the offered value) or --reject (discard it)")
    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        out, changes = settle_conflict(uow, conflict_id, accept=accept)
    if json:
        emit_json({**out, "decision_changes": len(changes)})
    else:
        errors.print(
            f"conflict {out['id']} ({out['fact']}: {out['offered_value']!r} from "
            f"{out['source']}) {out['resolution']}; {len(changes)} decision change(s)"
        )
