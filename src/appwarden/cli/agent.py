"""`appwarden agent code DEVICE`: a one-time enrolment code for the desktop agent or a check app
(docs/targeted-check.md). Registered by `cli.main` as the `agent` sub-command group."""

from __future__ import annotations

from typing import Annotated

import typer

from appwarden.cli.options import As, At, Json, ctx
from appwarden.cli.render import emit_json, errors

agent_app = typer.Typer(no_args_is_help=True, help="The desktop agent and targeted checks.")


@agent_app.command("code")
def agent_code(
    device: Annotated[str, typer.Argument(help="The device to bind (DEVICE).")],
    actor: As = None,
    at: At = None,
    json: Json = False,
) -> None:
    """A one-time enrolment code for DEVICE, valid 15 minutes: deliver it through the MDM's
    managed app configuration (key `appwarden_enrolment_code`) or hand it to the device's owner.
    Needs inventory:write (or admin); audited."""
    from appwarden.usecases.agent import admin_code

    context = ctx(actor)
    with context.uow(context.at(at)) as uow:
        made = admin_code(uow, device)
    if json:
        emit_json(made)
        return
    print(made["code"])
    errors.print(f"for device {made['device_id']}; expires {made['expires_at']}")
