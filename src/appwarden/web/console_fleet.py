"""The console's device and people pages (docs/console.md): search devices by person,
serial or identifier; one device in full; people and leavers; fact conflicts; the quarantine
queue. Every list pages and filters server-side (`usecases.fleet_console`); every action is a
POST with the session's CSRF token, allowed by the page only for `admin` and checked again by the
use case, which audits it as the CLI's does.

After an action the browser is sent back to the page it came from with `?done=WORD`; the page
says what happened in words of its own (`DONE`), so nothing posted is ever echoed back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Final

from fastapi import Request
from starlette.responses import Response

from appwarden.errors import InvalidInput, Problem
from appwarden.usecases import fleet_console as fleet
from appwarden.usecases.conflicts import settle_conflict
from appwarden.usecases.inventory import DeviceFilters
from appwarden.usecases.paging import Page
from appwarden.usecases.sign_in import Visitor
from appwarden.vocabulary import ComplianceState, Permission, Platform
from appwarden.web.console import (
    Posted,
    Route,
    console_page,
    next_page_url,
    posted,
    run_as,
    signed_in,
    window_of,
)
from appwarden.web.pages import redirect

Reader = Annotated[Visitor, signed_in(Permission.READ)]
AdminForm = Annotated[Posted, posted(Permission.ADMIN)]

#: What a page says after an action sent the browser back to it (`?done=WORD`).
DONE: Final[Mapping[str, str]] = {
    "merged": "The devices were merged into this one.",
    "accepted": "The conflict was settled: the offered value now applies.",
    "rejected": "The conflict was settled: the offered value was discarded.",
    "quarantine-merged": "The devices the report named were merged into one.",
    "quarantine-rejected": "The report was rejected; the devices stay separate.",
    "retried": "The failed notices were queued again.",
    "granted": "The exemption was granted.",
    "denied": "The request was turned down.",
    "revoked": "The exemption was revoked.",
}


def query_values(request: Request, names: Iterable[str]) -> dict[str, str | None]:
    """The filters a list page was asked for (an empty field is no filter)."""
    return {name: (request.query_params.get(name) or "").strip() or None for name in names}


def done_message(request: Request) -> str | None:
    return DONE.get(request.query_params.get("done", ""))


def abilities(visitor: Visitor) -> dict[str, bool]:
    """Which actions the pages offer the visitor (the use cases check again)."""
    return {
        "admin": visitor.allows(Permission.ADMIN),
        "retry": visitor.allows(Permission.NOTICES_RETRY),
        "decide": visitor.allows(Permission.EXEMPTIONS_DECIDE),
    }


def shown(request: Request, visitor: Visitor, template: str, **values: Any) -> Response:
    """A console page with what every page of this module shows."""
    values |= {"done": done_message(request), "can": abilities(visitor)}
    return console_page(request, template, visitor, values)


async def listed(
    request: Request,
    visitor: Visitor,
    work: Callable[..., Page[Any]],
    template: str,
    *,
    filters: Iterable[str],
    rows: str,
    defaults: Mapping[str, str] | None = None,
    **values: Any,
) -> Response:
    """A list page: the `filters` asked for (a filter absent from the query takes its entry in
    `defaults`), one page of `work`'s rows given to the template as `rows`, and the link to the
    next page."""
    asked = query_values(request, filters)
    for name, value in (defaults or {}).items():
        if name not in request.query_params:
            asked[name] = value
    found = await run_as(request, visitor, work, **asked, window=window_of(request), write=False)
    values[rows] = found.rows
    return shown(
        request, visitor, template, asked=asked, next_url=next_page_url(request, found), **values
    )


# ── devices ───────────────────────────────────────────────────────────────────────────────────

DEVICE_FILTERS: Final = ("person", "identifier", "platform", "state", "source")


async def devices_page(request: Request, visitor: Reader) -> Response:
    """Devices found by person, serial or any identifier, platform, state or source."""
    asked = query_values(request, DEVICE_FILTERS)
    filters = DeviceFilters(**asked)
    found = await run_as(
        request, visitor, fleet.device_list, filters, window_of(request), write=False
    )
    return shown(
        request,
        visitor,
        "console/devices.html",
        asked=asked,
        devices=found.rows,
        next_url=next_page_url(request, found),
        platforms=list(Platform),
        states=list(ComplianceState),
    )


async def device_page(request: Request, device_id: int, visitor: Reader) -> Response:
    """One device: identifiers, owner, reports (source, evidence kind, coverage), states,
    decisions, conflicts, owners over time and audit history."""
    device = await run_as(request, visitor, fleet.device_view, device_id, write=False)
    return shown(request, visitor, "console/device.html", device=device)


async def merge_device(request: Request, device_id: int, form: AdminForm) -> Response:
    """`devices merge KEEP OTHER`: the device named in the form merges into this one."""
    other = form.field("other", max_chars=600)
    await run_as(request, form.visitor, fleet.merge_into, device_id, other)
    return redirect(f"/admin/devices/{device_id}?done=merged")


# ── people ────────────────────────────────────────────────────────────────────────────────────


async def people_page(request: Request, visitor: Reader) -> Response:
    """People, one by name, or by status (`left`: the leavers)."""
    return await listed(
        request,
        visitor,
        fleet.people_page,
        "console/people.html",
        filters=("name", "status"),
        rows="people",
    )


# ── conflicts ─────────────────────────────────────────────────────────────────────────────────


async def conflicts_page(request: Request, visitor: Reader) -> Response:
    """Fact conflicts (open by default), each settled by accepting or rejecting it."""
    return await listed(
        request,
        visitor,
        fleet.conflict_page,
        "console/conflicts.html",
        filters=("show",),
        rows="conflicts",
        views=fleet.CONFLICT_VIEWS,
    )


def _back_to(form: Posted, default: str) -> str:
    """Where a form sends the browser back to: its `back` field when it is a console path."""
    back = form.form.get("back", "")
    local = back.startswith("/admin/") and "//" not in back and "\\" not in back
    return back if local and len(back) < 300 and back.isprintable() else default


def chosen(form: Posted, name: str, allowed: tuple[str, ...]) -> str:
    """A form field that must be one of `allowed` (a button's value), else refused, located."""
    value = form.form.get(name, "")
    if value not in allowed:
        raise InvalidInput(
            f"{name}: expected one of {', '.join(allowed)}",
            problems=[Problem(f"form:{name}", f"expected one of: {', '.join(allowed)}")],
        )
    return value


async def settle_conflict_form(request: Request, conflict_id: int, form: AdminForm) -> Response:
    """`conflicts settle ID --accept|--reject`."""
    accept = chosen(form, "resolution", ("accept", "reject")) == "accept"
    await run_as(request, form.visitor, settle_conflict, conflict_id, accept=accept)
    back = _back_to(form, "/admin/conflicts")
    return redirect(
        f"{back}{'&' if '?' in back else '?'}done={'accepted' if accept else 'rejected'}"
    )


# ── quarantine ────────────────────────────────────────────────────────────────────────────────


async def quarantine_page(request: Request, visitor: Reader) -> Response:
    """Reports held back because their identifiers named several devices."""
    return await listed(
        request,
        visitor,
        fleet.quarantine_page,
        "console/quarantine.html",
        filters=("show",),
        rows="held",
        views=fleet.CONFLICT_VIEWS,
    )


async def settle_quarantine_form(request: Request, held_id: int, form: AdminForm) -> Response:
    """Merge the devices a quarantined report named, or reject the report."""
    merge = chosen(form, "resolution", ("merge", "reject")) == "merge"
    await run_as(request, form.visitor, fleet.settle_quarantine, held_id, merge=merge)
    return redirect(f"/admin/quarantine?done=quarantine-{'merged' if merge else 'rejected'}")


ROUTES: Final = (
    Route("devices", devices_page),
    Route("devices/{device_id}", device_page),
    Route("devices/{device_id}/merge", merge_device, "POST"),
    Route("people", people_page),
    Route("conflicts", conflicts_page),
    Route("conflicts/{conflict_id}/settle", settle_conflict_form, "POST"),
    Route("quarantine", quarantine_page),
    Route("quarantine/{held_id}/settle", settle_quarantine_form, "POST"),
)
