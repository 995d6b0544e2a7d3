"""`appwarden serve` and `appwarden token create|revoke|list`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appwarden.cli.options import As, At, Json, ctx
from appwarden.cli.render import emit_json, errors, short_time, table
from appwarden.db.engine import make_engine
from appwarden.db.migrate import is_current
from appwarden.errors import Conflict
from appwarden.identity import tokens
from appwarden.identity.models import ApiToken
from appwarden.timeutil import iso
from appwarden.vocabulary import Permission

token_app = typer.Typer(no_args_is_help=True, help="Scoped API tokens for the HTTP API.")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")


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
) -> None:
    """Serve the HTTP API (/v1/, /healthz, /readyz, /metrics, /openapi.json)."""
    import uvicorn

    from appwarden.web.app import SERVER_OPTIONS, create_app
    from appwarden.web.observability import configure_logging

    context = ctx()
    settings = context.settings
    engine = make_engine(settings.database_url)
    try:
        current = is_current(engine)
        backend = engine.url.get_backend_name()
    finally:
        engine.dispose()
    if not current:
        raise Conflict("the database schema is not current: run `appwarden db upgrade` first")
    embedded = worker if worker is not None else backend == "sqlite"
    app = create_app(settings, worker=embedded)
    base = f"http://{host}:{port}"
    errors.print(
        f"appwarden serving {base}  (API {base}/v1/, OpenAPI {base}/openapi.json, "
        f"health {base}/healthz)\n"
        f"worker: {'in this process' if embedded else 'off (run `appwarden worker`)'}; "
        f"store: {backend}\n"
        "Every route except /healthz and /readyz needs a token, e.g.:\n"
        "  appwarden token create gate --permission decisions:read\n"
        f"  curl -H 'Authorization: Bearer <token>' "
        f"{base}/v1/decisions/udid:00008110-000A1B2C3D4E801E/email",
        markup=False,
        soft_wrap=True,  # keep the URLs and the command on one line each, for copying
    )
    configure_logging()
    uvicorn.run(app, host=host, port=port, **SERVER_OPTIONS)


def _token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "permissions": list(token.permissions),
        "created_by": token.created_by,
        "created_at": iso(token.created_at),
        "revoked_at": iso(token.revoked_at),
        "last_used_at": iso(token.last_used_at),
    }


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
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Create a token and print its secret, once: only its hash is stored."""
    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        token, secret = tokens.create_token(uow, name, permission)
        out = {**_token_json(token), "token": secret}
    if json:
        emit_json(out)
        return
    print(secret)
    errors.print(
        f"token {out['id']} ({out['name']}: {', '.join(out['permissions'])}) created. "
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
    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        out = _token_json(tokens.revoke(uow, token_id))
    if json:
        emit_json(out)
    else:
        errors.print(f"token {out['id']} ({out['name']}) revoked at {out['revoked_at']}")


@token_app.command("list")
def token_list(at: At = None, json: Json = False) -> None:
    """Every token: id, name, permissions, when it was created, last used and revoked."""
    context = ctx()
    with context.uow(context.at(at), write=False) as uow:
        rows = [_token_json(t) for t in tokens.list_tokens(uow)]
    if json:
        emit_json(rows)
        return
    table(
        "API tokens",
        ["id", "name", "permissions", "created", "last used", "revoked"],
        [
            (
                r["id"],
                r["name"],
                ", ".join(r["permissions"]),
                short_time(r["created_at"]),
                short_time(r["last_used_at"]),
                short_time(r["revoked_at"]),
            )
            for r in rows
        ],
    )
