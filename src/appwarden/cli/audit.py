"""`appwarden audit verify` and `appwarden audit anchor`: check the hash chain, export its head.

Registered by `cli.main` as the `audit` sub-command group (`audit_app`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from appwarden.audit.verify import Anchor

from appwarden.cli.options import At, Json, ctx
from appwarden.cli.render import emit_json, errors
from appwarden.errors import InvalidInput

MAX_ANCHOR_BYTES = 64 * 1024  # an anchor is one small JSON object

audit_app = typer.Typer(
    no_args_is_help=True, help="The audit trail: verify the hash chain, export anchors."
)


def read_anchor(path: Path) -> Anchor:
    from appwarden.audit.verify import Anchor
    from appwarden.documents import read_limited

    data = read_limited(path, MAX_ANCHOR_BYTES)
    try:
        return Anchor.from_json(data)
    except ValueError as exc:
        raise InvalidInput(f"{path}: not an audit anchor: {exc}") from exc


def write_atomically(path: Path, data: str) -> None:
    """Write a temporary file next to `path`, sync it, then rename it over `path`: a reader sees
    the old anchor or the new one, never half of one."""
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot write ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InvalidInput(f"{path}: cannot write ({exc.strerror})") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@audit_app.command("verify")
def audit_verify(
    anchor_file: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="An anchor exported earlier by `audit anchor`: also detect truncation and "
            "rewriting before it.",
        ),
    ] = None,
    json: Json = False,
    at: At = None,
) -> None:
    """Check every chained audit entry: altered, removed or reordered entries (exit 1)."""
    from appwarden.audit.verify import verify

    context = ctx()
    pinned = read_anchor(anchor_file) if anchor_file is not None else None
    with context.uow(context.at(at), write=False) as uow:
        report = verify(uow.session, anchor=pinned)
    if json:
        emit_json(report.to_dict())
    else:
        for problem in report.problems:
            errors.print(str(problem), markup=False)
        errors.print(report.summary(), markup=False)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the anchor to this file (atomically) instead of stdout."),
    ] = None,
    json: Json = False,
    at: At = None,
) -> None:
    """Export the head of the chain (seq and hash); keep it where the database cannot reach."""
    from appwarden.audit.verify import anchor

    context = ctx()
    now = context.at(at)
    with context.uow(now, write=False) as uow:
        head = anchor(uow.session, now=now)
    if out is None:
        emit_json(head.to_dict())
        return
    write_atomically(out, head.to_json())
    if json:
        emit_json(head.to_dict() | {"file": str(out)})
    else:
        errors.print(f"anchored seq {head.seq} {head.hash} to {out}", markup=False)
