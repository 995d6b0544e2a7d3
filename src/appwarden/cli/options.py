"""Options every command shares, and the per-invocation context."""

from __future__ import annotations

from typing import Annotated

import typer

from appwarden.cli.context import AppContext

At = Annotated[
    str | None,
    typer.Option("--at", help="RFC 3339 time with an offset: act or read as if the clock read T."),
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
As = Annotated[
    str | None,
    typer.Option("--as", help="Act as this admin (email). Default: APPWARDEN_ACTOR."),
]

_state: dict[str, AppContext] = {}


def ctx(actor: str | None = None) -> AppContext:
    context = _state["ctx"]
    if actor:
        context.actor = actor
    return context
