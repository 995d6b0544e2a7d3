"""`/me/privacy`: what appwarden can see, keep and show about a person's devices, for the person
(docs/privacy.md, shipped in the package as `web/privacy.md` and rendered here; a test keeps the
two identical). Every notice links it (`notifications.messages.privacy_url`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.responses import Response

from appwarden.web.pages import page
from appwarden.web.sessions import Employee

PRIVACY_TEXT: Final = Path(__file__).parent / "privacy.md"


@lru_cache(maxsize=1)
def privacy_html() -> Markup:
    """The page's text as HTML; raw HTML in the Markdown is escaped, not passed through."""
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    return Markup(renderer.render(PRIVACY_TEXT.read_text(encoding="utf-8")))  # noqa: S704


async def privacy_page(request: Request, visitor: Employee) -> Response:
    """What appwarden sees on each kind of device, what it keeps, for how long, who reads it."""
    return page(request, "privacy.html", {"visitor": visitor, "text": privacy_html()})


def install(app: FastAPI) -> None:
    app.add_api_route("/me/privacy", privacy_page, methods=["GET"], include_in_schema=False)
