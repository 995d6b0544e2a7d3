"""The console's operations pages (docs/console.md): sources and their health,
notices (retrying failed ones), the exemptions queue, the settings in effect and the audit log
with its verification. Reads need `read` (the settings, `admin`); retrying needs
`notices:retry` and deciding an exemption `exemptions:decide`, checked by the page and again by
the use case (`usecases.operations_console`), which audits as the CLI does.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import Request
from starlette.responses import Response

from appwarden.errors import InvalidInput, Problem
from appwarden.usecases import operations_console as operations
from appwarden.usecases.health import health_rows
from appwarden.usecases.sign_in import Visitor
from appwarden.vocabulary import NoticeStatus, Permission
from appwarden.web.auth import runtime_of
from appwarden.web.console import Posted, Route, posted, run_as, signed_in
from appwarden.web.console_fleet import chosen, listed, shown
from appwarden.web.pages import redirect

Reader = Annotated[Visitor, signed_in(Permission.READ)]
Admin = Annotated[Visitor, signed_in(Permission.ADMIN)]
RetryForm = Annotated[Posted, posted(Permission.NOTICES_RETRY)]
DecideForm = Annotated[Posted, posted(Permission.EXEMPTIONS_DECIDE)]

# ── sources ───────────────────────────────────────────────────────────────────────────────────


async def sources_page(request: Request, visitor: Reader) -> Response:
    """Every source with its last complete run, its age, its last error and whether it is
    stale, as `appwarden sources` shows them."""
    sources = await run_as(request, visitor, health_rows, write=False)
    return shown(request, visitor, "console/sources.html", sources=sources)


# ── notices ───────────────────────────────────────────────────────────────────────────────────


async def notices_page(request: Request, visitor: Reader) -> Response:
    """Notices, newest first, by status and policy; failed ones can be queued again."""
    return await listed(
        request,
        visitor,
        operations.notice_page,
        "console/notices.html",
        filters=("status", "policy"),
        rows="notices",
        statuses=list(NoticeStatus),
    )


async def retry_notices(request: Request, form: RetryForm) -> Response:
    """`notices retry [ID]`: one failed notice, or (no id) every failed notice and webhook."""
    asked = form.field("notice", max_chars=18)
    if asked and not asked.isdecimal():
        raise InvalidInput(
            "notice: expected a notice's number",
            problems=[Problem("form:notice", "expected a number")],
        )
    notice_id = int(asked) if asked else None
    await run_as(request, form.visitor, operations.retry_notices, notice_id)
    return redirect("/admin/notices?done=retried")


# ── exemptions ────────────────────────────────────────────────────────────────────────────────


async def exemptions_page(request: Request, visitor: Reader) -> Response:
    """The exemptions queue (requests first) and every decided exemption, by status."""
    return await listed(
        request,
        visitor,
        operations.exemption_page,
        "console/exemptions.html",
        filters=("status", "policy"),
        defaults={"status": "requested"},
        rows="exemptions",
        statuses=operations.EXEMPTION_STATUSES,
    )


def _until(text: str, time_zone: str) -> datetime | None:
    """A grant's last day (YYYY-MM-DD) as the end of that day in the approver's zone."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            "until: expected a date (YYYY-MM-DD)",
            problems=[Problem("form:until", "expected a date (YYYY-MM-DD)")],
        ) from None
    return datetime.combine(day, time(23, 59, 59), tzinfo=ZoneInfo(time_zone))


async def decide_exemption(request: Request, exemption_id: int, form: DecideForm) -> Response:
    """`exemption grant|deny|revoke ID` with a reason (and, for a grant, its last day)."""
    decision = chosen(form, "decision", operations.EXEMPTION_DECISIONS)
    reason = form.field("reason", max_chars=operations.MAX_REASON_CHARS)
    until = _until(form.field("until", max_chars=10).strip(), form.visitor.time_zone)
    config = runtime_of(request).notice_config
    await run_as(
        request,
        form.visitor,
        operations.decide_exemption,
        exemption_id,
        decision,
        reason,
        config,
        until=until,
    )
    done = {"grant": "granted", "deny": "denied", "revoke": "revoked"}[decision]
    return redirect(f"/admin/exemptions?done={done}")


# ── settings and the audit log ────────────────────────────────────────────────────────────────


async def settings_page(request: Request, visitor: Admin) -> Response:
    """The settings in effect, read-only, with where each comes from; secrets masked."""
    rows = operations.settings_rows(runtime_of(request).settings)
    return shown(request, visitor, "console/settings.html", settings=rows)


async def audit_page(request: Request, visitor: Reader) -> Response:
    """The audit log, newest first, by action; `?verify=1` checks the whole chain too."""
    verification = None
    if request.query_params.get("verify") == "1":
        verification = await run_as(request, visitor, operations.audit_verification, write=False)
    return await listed(
        request,
        visitor,
        operations.audit_page,
        "console/audit.html",
        filters=("action",),
        rows="entries",
        verification=verification,
    )


ROUTES: Final = (
    Route("sources", sources_page),
    Route("notices", notices_page),
    Route("notices/retry", retry_notices, "POST"),
    Route("exemptions", exemptions_page),
    Route("exemptions/{exemption_id}/decide", decide_exemption, "POST"),
    Route("settings", settings_page),
    Route("audit", audit_page),
)
