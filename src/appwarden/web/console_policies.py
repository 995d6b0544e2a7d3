"""The console's policy pages (docs/console.md): the dashboard, and the life of a version."""

from __future__ import annotations

from typing import Annotated

from fastapi import Request
from starlette.responses import Response

from appwarden.usecases import dashboard
from appwarden.usecases.sign_in import Visitor
from appwarden.vocabulary import Permission
from appwarden.web.console import Route, console_page, run_as, signed_in

Reader = Annotated[Visitor, signed_in(Permission.READ)]


async def dashboard_page(request: Request, visitor: Reader) -> Response:
    """Every policy with its versions and the states of the version in effect."""
    policies = await run_as(request, visitor, dashboard.overview, write=False)
    values = {
        "policies": policies,
        "states": dashboard.COUNTED_STATES,
        "permissions": sorted(str(p) for p in visitor.permissions),
    }
    return console_page(request, "console/dashboard.html", visitor, values)


ROUTES = (Route("", dashboard_page),)
