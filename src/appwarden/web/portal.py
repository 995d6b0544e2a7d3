"""The employee portal, `/me/`: a signed-in person's own devices (docs/portal.md). Every route
depends on the session guard (`web.sessions.SessionGuard`); a form it serves carries the
session's CSRF token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from starlette.responses import Response

from appwarden.usecases.sign_in import Visitor
from appwarden.vocabulary import Permission
from appwarden.web.pages import page
from appwarden.web.sessions import Employee, SessionGuard

#: An admin page's visitor: a session opened with OIDC or a password, whose roles allow `read`.
Admin = Annotated[Visitor, Depends(SessionGuard(Permission.READ))]


async def home(request: Request, visitor: Employee) -> Response:
    return page(request, "me.html", {"visitor": visitor})


async def admin_home(request: Request, visitor: Admin) -> Response:
    """The admin console's front door (the console itself comes later): who is signed in, with
    which roles. A session opened by an email link never gets here."""
    permissions = sorted(str(p) for p in visitor.permissions)
    return page(request, "admin.html", {"visitor": visitor, "permissions": permissions})


def install(app: FastAPI) -> None:
    app.add_api_route("/me/", home, methods=["GET"], include_in_schema=False)
    app.add_api_route("/admin/", admin_home, methods=["GET"], include_in_schema=False)
