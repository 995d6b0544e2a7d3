"""Options every command shares, and the per-invocation context."""

from __future__ import annotations

import gc
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
_collection: dict[str, bool] = {"paused": False}


def pause_collection() -> None:
    """Stop the cycle collector while a command starts (`main`, before any command's imports).

    Starting allocates some hundreds of thousands of objects (the ORM's classes and mappers, the
    settings' validators) that live until the process exits. With the collector on, each of its
    full passes during the imports walked all of them and found nothing to free: about a tenth
    of what `appwarden decide` takes (bench/README.md, CLI)."""
    gc.disable()
    _collection["paused"] = True


def _resume_collection() -> None:
    """Collect again once the command has imported what it runs (it asks for its context after
    its imports). What start-up made is frozen first, so later full passes of a long command
    (an import, the server, the worker) do not walk it either."""
    if _collection["paused"]:
        _collection["paused"] = False
        gc.freeze()
        gc.enable()


def ctx(actor: str | None = None) -> AppContext:
    _resume_collection()
    context = _state["ctx"]
    if actor:
        context.actor = actor
    return context
