"""The console's policy pages (docs/console.md): the dashboard with compliance over time, and the
life of a version — the editor, the version's page, the impact preview, the approval queue,
publish with its undo window, cancel, retract (with a confirmation naming who gets the
correction) and retire.

Every step runs the use case the command line runs (`usecases.lifecycle`, `usecases.retract`) as
the signed-in admin, so the use case's own checks (roles, "never one's own version") hold
whatever the page showed, and the audit log reads as if `appwarden policy … --as EMAIL` had run.
A step refused for bad input or the version's state shows the version's page again with why.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import Request
from starlette.responses import Response

from appwarden.documents import MAX_DOCUMENT_BYTES
from appwarden.errors import AppwardenError, Conflict, InvalidInput, PermissionDenied, Problem
from appwarden.timeutil import parse_instant
from appwarden.usecases import dashboard, lifecycle, retract
from appwarden.usecases.compliance_history import COUNTED_STATES
from appwarden.usecases.policies import policy_rows, stored_document
from appwarden.usecases.sign_in import Visitor
from appwarden.vocabulary import Permission, VersionState
from appwarden.web.auth import runtime_of
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
Author = Annotated[Visitor, signed_in(Permission.POLICIES_AUTHOR)]
Retractor = Annotated[Visitor, signed_in(Permission.POLICIES_RETRACT)]
#: A document pasted or uploaded: the editor's form may hold the largest document `apply` takes.
Document = Annotated[
    Posted,
    posted(Permission.POLICIES_AUTHOR, max_bytes=MAX_DOCUMENT_BYTES + 16 * 1024, files=True),
]
MAX_MESSAGE_CHARS: Final = 2000
_LOCATED: Final = re.compile(r":(\d+):(\d+)$")


# ── the dashboard and its chart ────────────────────────────────────────────────────────────────

#: The chart's drawing area (SVG user units) and each state's line colour (4.5:1 on white).
CHART_WIDTH: Final = 600
CHART_HEIGHT: Final = 220
CHART_MARGIN: Final = 36
STATE_COLOURS: Final = {
    "non_compliant": "#b42318",
    "action_required": "#b45309",
    "unknown": "#6e40c9",
    "exempt": "#0b57d0",
    "compliant": "#1a7f37",
}


def chart(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An inline SVG's geometry for a policy's snapshots: one polyline per state, devices summed
    over the versions counted at each instant, time along x. None without two instants."""
    totals: dict[str, dict[str, int]] = {}
    for snapshot in history:
        per_state = totals.setdefault(snapshot["at"], dict.fromkeys(COUNTED_STATES, 0))
        for state, n in snapshot["counts"].items():
            per_state[state] = per_state.get(state, 0) + n
    if len(totals) < 2:
        return None
    instants = sorted(totals)
    times = [parse_instant(at).timestamp() for at in instants]
    span = (times[-1] - times[0]) or 1.0
    top = max(1, *(max(c.values()) for c in totals.values()))
    inner_w = CHART_WIDTH - 2 * CHART_MARGIN
    inner_h = CHART_HEIGHT - 2 * CHART_MARGIN

    def point(t: float, n: int) -> str:
        x = CHART_MARGIN + (t - times[0]) / span * inner_w
        y = CHART_MARGIN + inner_h - n / top * inner_h
        return f"{x:.1f},{y:.1f}"

    lines = [
        {
            "state": state,
            "colour": STATE_COLOURS.get(state, "#1f2328"),
            "points": " ".join(
                point(t, totals[at][state]) for t, at in zip(times, instants, strict=True)
            ),
            "last": totals[instants[-1]][state],
        }
        for state in COUNTED_STATES
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "margin": CHART_MARGIN,
        "bottom": CHART_HEIGHT - CHART_MARGIN,
        "right": CHART_WIDTH - CHART_MARGIN,
        "top": top,
        "first": parse_instant(instants[0]),
        "last": parse_instant(instants[-1]),
        "lines": lines,
    }


async def dashboard_page(request: Request, visitor: Reader) -> Response:
    """Every policy with its versions, the states of the version in effect, and a chart of its
    compliance over time with the data beside it."""
    policies = await run_as(request, visitor, dashboard.overview, write=False)
    for policy in policies:
        policy["chart"] = chart(policy["history"])
        for snapshot in policy["history"]:
            snapshot["when"] = parse_instant(snapshot["at"])
    values = {
        "policies": policies,
        "states": COUNTED_STATES,
        "permissions": sorted(str(p) for p in visitor.permissions),
    }
    return console_page(request, "console/dashboard.html", visitor, values)


# ── policies and the editor ────────────────────────────────────────────────────────────────────


async def policies_page(request: Request, visitor: Reader) -> Response:
    """Every policy with its versions (`appwarden policy list`)."""
    rows = await run_as(request, visitor, lambda uow: policy_rows(uow, uow.now), write=False)
    return console_page(request, "console/policies.html", visitor, {"policies": rows})


def located(problems: list[Problem]) -> list[dict[str, Any]]:
    """Problems with the line and column their `FILE:LINE:COL` names (None when unlocated)."""
    out = []
    for problem in problems:
        found = _LOCATED.search(problem.where)
        line, column = (int(found.group(1)), int(found.group(2))) if found else (None, None)
        out.append(
            {"where": problem.where, "message": problem.message, "line": line, "column": column}
        )
    return out


def _editor(
    request: Request,
    visitor: Visitor,
    text: str,
    *,
    policy_id: str | None = None,
    problems: list[Problem] | None = None,
    status: int = 200,
) -> Response:
    found = located(problems or [])
    bad_lines = {p["line"] for p in found if p["line"] is not None}
    values = {
        "text": text,
        "policy_id": policy_id,
        "problems": found,
        "lines": [
            {"number": n, "text": line, "bad": n in bad_lines}
            for n, line in enumerate(text.splitlines(), start=1)
        ]
        if found
        else [],
    }
    return console_page(request, "console/editor.html", visitor, values, status=status)


async def new_policy_page(request: Request, visitor: Author) -> Response:
    """An empty editor: paste a policy document, or upload one."""
    return _editor(request, visitor, "")


async def edit_policy_page(request: Request, policy_id: str, visitor: Author) -> Response:
    """The editor holding the version's document exactly as it was applied."""
    text = await run_as(request, visitor, stored_document, policy_id, None, write=False)
    return _editor(request, visitor, text, policy_id=policy_id)


async def apply_policy(request: Request, form: Document) -> Response:
    """Store the pasted or uploaded document as its policy's draft (`appwarden policy apply`).
    A problem shows the editor again with the document, each problem at its line and column."""
    upload = form.form.get("upload", "")
    text = upload if upload.strip() else form.form.get("document", "")
    filename = (form.form.get("upload.filename") if upload.strip() else None) or "policy.yaml"
    if not text.strip():
        problem = Problem("document", "paste a policy document or choose a file")
        return _editor(request, form.visitor, text, problems=[problem], status=422)
    rules = runtime_of(request).services.lifecycle_rules
    try:
        result = await run_as(
            request, form.visitor, lifecycle.apply_document, text, filename[:200], rules
        )
    except InvalidInput as exc:
        problems = exc.problems or [Problem("", exc.message)]
        return _editor(request, form.visitor, text, problems=problems, status=422)
    except Conflict as exc:
        return _editor(request, form.visitor, text, problems=[Problem("", exc.message)], status=409)
    version = result.version
    done = "stored" if result.changed else "unchanged"
    return redirect(f"/admin/policies/{quote(version.policy_id)}?done={done}")


# ── a version, its preview, and its steps ──────────────────────────────────────────────────────


def _abilities(visitor: Visitor, view: dict[str, Any], now: datetime) -> dict[str, bool]:
    """Which steps the page offers the visitor: their permissions and the version's state (the
    use case checks both again, and that an approver is not the author)."""
    state = view["state"]
    states = {v["state"] for v in view["versions"]}
    release_at = parse_instant(view["release_at"]) if view["release_at"] else None
    author = visitor.allows(Permission.POLICIES_AUTHOR)
    retractor = visitor.allows(Permission.POLICIES_RETRACT)
    return {
        "edit": author and VersionState.SCHEDULED not in states,
        "propose": author and state == VersionState.DRAFT,
        "approve": visitor.allows(Permission.POLICIES_APPROVE)
        and state == VersionState.PROPOSED
        and view["author"] != visitor.email,
        "publish": author and state == VersionState.APPROVED,
        "cancel": author
        and state == VersionState.SCHEDULED
        and release_at is not None
        and now < release_at,
        "retract": retractor and bool(states & {VersionState.SCHEDULED, VersionState.ACTIVE}),
        "retire": retractor and state == VersionState.ACTIVE,
    }


def _number(request: Request) -> int | None:
    asked = request.query_params.get("version", "")
    if not asked:
        return None
    if not asked.isdigit() or len(asked) > 9:
        raise InvalidInput(
            "version: expected a number", problems=[Problem("version", "not a number")]
        )
    return int(asked)


async def _version_page(
    request: Request,
    visitor: Visitor,
    policy_id: str,
    number: int | None,
    *,
    problem: str | None = None,
    status: int = 200,
) -> Response:
    runtime = runtime_of(request)
    rules = runtime.services.lifecycle_rules
    view = await run_as(
        request, visitor, lifecycle.version_page, policy_id, number, rules, write=False
    )
    now = runtime.now()
    values = {
        "v": view,
        "can": _abilities(visitor, view, now),
        "now": now,
        "release_at": parse_instant(view["release_at"]) if view["release_at"] else None,
        "done": request.query_params.get("done", "")[:20],
        "problem": problem,
    }
    return console_page(request, "console/version.html", visitor, values, status=status)


async def version_page(request: Request, policy_id: str, visitor: Reader) -> Response:
    """A version (`?version=N`; else the open one, else the latest): its state, approvals, the
    steps the visitor may take, the undo countdown while it is scheduled."""
    return await _version_page(request, visitor, policy_id, _number(request))


async def preview_page(request: Request, policy_id: str, visitor: Reader) -> Response:
    """What releasing the version would do (`appwarden policy preview`): counts, each recipient
    with the exact text they will get, who loses which resource when, and the audience compared
    with the version before."""
    runtime = runtime_of(request)
    plan = await run_as(
        request,
        visitor,
        lifecycle.preview,
        policy_id,
        _number(request),
        runtime.services.lifecycle_rules,
        runtime.notice_config,
        write=False,
    )
    for notice in plan["notices"]:
        notice["due"] = parse_instant(notice["due_at"])
    for loss in plan["losing_access"]:
        loss["when"] = parse_instant(loss["at"])
    values = {"plan": plan, "release_at": parse_instant(plan["release_at"])}
    return console_page(request, "console/preview.html", visitor, values)


async def _step(request: Request, form: Posted, policy_id: str, action: str) -> Response:
    rules = runtime_of(request).services.lifecycle_rules
    short_notice = form.form.get("short_notice") == "yes"
    try:
        await run_as(
            request,
            form.visitor,
            lifecycle.act,
            action,
            policy_id,
            rules,
            short_notice=short_notice,
        )
    except PermissionDenied:
        raise
    except AppwardenError as exc:
        status = 409 if isinstance(exc, Conflict) else 422
        return await _version_page(
            request, form.visitor, policy_id, None, problem=exc.message, status=status
        )
    return redirect(f"/admin/policies/{quote(policy_id)}?done={action}")


async def propose(
    request: Request, policy_id: str, form: Annotated[Posted, posted(Permission.POLICIES_AUTHOR)]
) -> Response:
    return await _step(request, form, policy_id, "propose")


async def approve(
    request: Request, policy_id: str, form: Annotated[Posted, posted(Permission.POLICIES_APPROVE)]
) -> Response:
    """Approve the proposed version; refused (403) for its author, whatever the page showed."""
    return await _step(request, form, policy_id, "approve")


async def publish(
    request: Request, policy_id: str, form: Annotated[Posted, posted(Permission.POLICIES_AUTHOR)]
) -> Response:
    """Schedule the approved version: it is released when the undo window closes."""
    return await _step(request, form, policy_id, "publish")


async def cancel(
    request: Request, policy_id: str, form: Annotated[Posted, posted(Permission.POLICIES_AUTHOR)]
) -> Response:
    """Inside the undo window: take the scheduled version back; nothing was sent."""
    return await _step(request, form, policy_id, "cancel")


async def retire(
    request: Request, policy_id: str, form: Annotated[Posted, posted(Permission.POLICIES_RETRACT)]
) -> Response:
    return await _step(request, form, policy_id, "retire")


# ── retraction: a message, a confirmation naming who is told, then the retraction ──────────────


async def retract_page(request: Request, policy_id: str, visitor: Retractor) -> Response:
    """The retraction's first step: the message people who were told will read."""
    values = {"policy_id": policy_id, "message": "", "problem": None}
    return console_page(request, "console/retract.html", visitor, values)


def _message(form: Posted) -> str:
    return form.field("message", max_chars=MAX_MESSAGE_CHARS).strip()


async def review_retraction(
    request: Request, policy_id: str, form: Annotated[Posted, posted(Permission.POLICIES_RETRACT)]
) -> Response:
    """Before anything changes: the message, and exactly who will receive the correction (the
    selection the retraction itself makes)."""
    message = _message(form)
    if not message:
        values = {
            "policy_id": policy_id,
            "message": "",
            "problem": "Write the message: it is what the correction tells people.",
        }
        return console_page(request, "console/retract.html", form.visitor, values, status=422)
    recipients = await run_as(
        request, form.visitor, retract.correction_recipients, policy_id, write=False
    )
    values = {"policy_id": policy_id, "message": message, "recipients": recipients}
    return console_page(request, "console/retract_confirm.html", form.visitor, values)


async def confirm_retraction(
    request: Request, policy_id: str, form: Annotated[Posted, posted(Permission.POLICIES_RETRACT)]
) -> Response:
    """Retract (`appwarden policy retract --message`): pending notices cancelled, blocks lifted,
    one correction to each person who was told."""
    message = _message(form)
    config = runtime_of(request).notice_config
    try:
        await run_as(
            request, form.visitor, retract.retract, policy_id, message=message, config=config
        )
    except (InvalidInput, Conflict) as exc:
        status = 409 if isinstance(exc, Conflict) else 422
        return await _version_page(
            request, form.visitor, policy_id, None, problem=exc.message, status=status
        )
    return redirect(f"/admin/policies/{quote(policy_id)}?done=retract")


# ── the approval queue ─────────────────────────────────────────────────────────────────────────


async def approvals_page(request: Request, visitor: Reader) -> Response:
    """Versions waiting for approval; the approve button only on others' versions."""
    shown = await run_as(
        request, visitor, lifecycle.approval_queue, window_of(request), write=False
    )
    values = {
        "rows": shown.rows,
        "next_url": next_page_url(request, shown),
        "approver": visitor.allows(Permission.POLICIES_APPROVE),
    }
    return console_page(request, "console/approvals.html", visitor, values)


ROUTES: Final = (
    Route("", dashboard_page),
    Route("policies", policies_page),
    Route("policies", apply_policy, "POST"),
    Route("editor", new_policy_page),
    Route("policies/{policy_id}", version_page),
    Route("policies/{policy_id}/edit", edit_policy_page),
    Route("policies/{policy_id}/preview", preview_page),
    Route("policies/{policy_id}/propose", propose, "POST"),
    Route("policies/{policy_id}/approve", approve, "POST"),
    Route("policies/{policy_id}/publish", publish, "POST"),
    Route("policies/{policy_id}/cancel", cancel, "POST"),
    Route("policies/{policy_id}/retire", retire, "POST"),
    Route("policies/{policy_id}/retract", retract_page),
    Route("policies/{policy_id}/retract/review", review_retraction, "POST"),
    Route("policies/{policy_id}/retract", confirm_retraction, "POST"),
    Route("approvals", approvals_page),
)
