"""`appwarden attest` and `appwarden transparency`: a person's own word about their device, and
everything stored about a person's devices (docs/privacy.md).

Registered by `cli.main`. `attest` runs as the person (`--as` names oneself: the device's owner);
`transparency` shows one's own data, or anyone's to an actor with `read`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appwarden.cli.options import As, At, Json, ctx
from appwarden.cli.render import emit_json, errors, table


def register(app: typer.Typer) -> None:
    app.command("attest")(attest)
    app.command("transparency")(transparency)


def attest(
    device: Annotated[str, typer.Argument(help="One of your devices: namespace:value or a value.")],
    policy: Annotated[str, typer.Option("--policy", help="The policy whose apps you removed.")],
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Confirm that a policy's apps are not on one of your own devices (`--as` is you).
    Accepted only where the policy lists `attestation` among its evidence."""
    from appwarden.usecases.attest import attest as attest_removal

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        done = attest_removal(uow, device, policy)
    if json:
        emit_json(done.as_json())
        return
    errors.print(
        f"device {done.device_id}: removal confirmed for {done.policy_id} v{done.version} "
        f"({len(done.identifiers)} identifiers); now {done.state}"
    )


def transparency(
    person: Annotated[str, typer.Argument(help="Email of the person (yourself, or with read).")],
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """Exactly what is stored about a person's devices, table by table, with each row's source."""
    from appwarden.usecases.portal import my_data
    from appwarden.usecases.transparency import PERSON_TABLES, person_to_show

    context = ctx(actor)
    with context.uow(context.at(at), write=False) as uow:
        shown = person_to_show(uow, person)
        data = my_data(uow, shown.id, context.notice_config)
    body: dict[str, Any] = {"person": data.email, "name": data.name, **data.rows.as_json()}
    if json:
        emit_json(body)
        return
    for entry in body["devices"]:
        device = entry["device"]
        errors.print(f"device {device['id']} {device['name'] or ''} ({device['platform']})")
        table(
            "Stored rows",
            ["table", "rows", "sources"],
            [
                (name, str(len(rows)), ", ".join(sorted({str(r.get("source", "")) for r in rows})))
                for name, rows in entry["tables"].items()
            ],
        )
    errors.print(", ".join(f"{name}: {len(body[name])}" for name in PERSON_TABLES))
