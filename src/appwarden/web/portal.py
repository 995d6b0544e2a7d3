"""The employee portal, `/me/`: a signed-in person's own devices (docs/portal.md). Every route
depends on the session guard (`web.sessions.SessionGuard`); a form it serves carries the
session's CSRF token."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from appwarden.web.pages import page
from appwarden.web.sessions import Employee


async def home(request: Request, visitor: Employee) -> Response:
    return page(request, "me.html", {"visitor": visitor})


def install(app: FastAPI) -> None:
    app.add_api_route("/me/", home, methods=["GET"], include_in_schema=False)
