"""The employee portal, `/me/`: a signed-in person's own devices (docs/portal.md). The admin
console, `/admin/`, is `web.console`.

Every route depends on the session guard (`web.sessions.SessionGuard`); every form it serves
carries the session's CSRF token, checked before anything is read from the store. Each page's
data is gathered in one unit of work that runs as the person, as an employee only (no role of
theirs applies, whatever the sign-in), and closed before the page is rendered.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from appwarden.errors import InvalidInput
from appwarden.usecases import portal
from appwarden.usecases.sign_in import Visitor
from appwarden.web import Runtime
from appwarden.web.auth import runtime_of
from appwarden.web.pages import page, redirect
from appwarden.web.sessions import Employee, check_csrf, read_form

MAX_POLICY_CHARS = 64


def read_as_person(runtime: Runtime, visitor: Visitor, work: Any, *args: Any, **kwargs: Any) -> Any:
    """`work(uow, person_id, *args, config, **kwargs)` in a reading unit of work, as the person."""
    with runtime.uow(runtime.now(), actor=visitor.email, write=False, employee_only=True) as uow:
        return work(uow, visitor.person_id, *args, runtime.notice_config, **kwargs)


async def home(request: Request, visitor: Employee) -> Response:
    """Every device of the person, with what each policy asks of it."""
    runtime = runtime_of(request)
    mine = await run_in_threadpool(read_as_person, runtime, visitor, portal.my_devices)
    return page(request, "me.html", {"visitor": visitor, "portal": mine})


def device_values(visitor: Visitor, shown: Any, **answer: Any) -> dict[str, Any]:
    """What device.html renders: the device as read, plus what one answer adds (`requested`,
    `attested`, a `problem` with its `problem_policy` and `problem_form`, the `reason` typed, a
    new `enrolment` code)."""
    values: dict[str, Any] = {
        "visitor": visitor,
        "portal": shown,
        "requested": False,
        "attested": False,
        "problem": None,
        "problem_policy": None,
        "problem_form": "exemption",
        "reason": "",
        "enrolment": None,
    }
    values.update(answer)
    return values


def sentence(exc: InvalidInput) -> str:
    """A refusal's message as a sentence on a page."""
    return exc.message[:1].upper() + exc.message[1:] + "."


def _focus(request: Request) -> str | None:
    policy = request.query_params.get("policy")
    return policy if policy and len(policy) <= MAX_POLICY_CHARS else None


async def device_page(request: Request, device: str, visitor: Employee) -> Response:
    """One of the person's devices (404, worded as for a device that does not exist, for any
    other): per policy its state, the deadline in the person's zone counting down, what to do,
    what stays allowed, why, and exemptions. `?policy=ID` (a notice's link) shows that one
    first."""
    runtime = runtime_of(request)
    shown = await run_in_threadpool(
        read_as_person, runtime, visitor, portal.my_device, device, focus=_focus(request)
    )
    values = device_values(
        visitor,
        shown,
        requested=request.query_params.get("requested") == "1",
        attested=request.query_params.get("attested") == "1",
    )
    return page(request, "device.html", values)


def _request(runtime: Runtime, visitor: Visitor, device: str, policy: str, reason: str) -> int:
    with runtime.uow(runtime.now(), actor=visitor.email, employee_only=True) as uow:
        return portal.request_exemption(
            uow, visitor.person_id, device, policy, reason, runtime.notice_config
        )


async def ask_exemption(request: Request, device: str, visitor: Employee) -> Response:
    """Ask for an exemption for this device from one policy, with a reason. Nothing changes
    until an approver decides; the decision shows on the device's page."""
    runtime = runtime_of(request)
    form = await read_form(request)
    check_csrf(form, visitor.csrf_token)
    policy = form.get("policy", "")[:MAX_POLICY_CHARS]
    reason = form.get("reason", "")
    try:
        await run_in_threadpool(_request, runtime, visitor, device, policy, reason)
    except InvalidInput as exc:
        shown = await run_in_threadpool(
            read_as_person, runtime, visitor, portal.my_device, device, focus=policy
        )
        values = device_values(
            visitor, shown, problem=sentence(exc), problem_policy=policy, reason=reason[:2000]
        )
        return page(request, "device.html", values, status=422)
    return redirect(f"/me/devices/{device}?policy={quote(policy, safe='')}&requested=1")


def _enrolment_code(runtime: Runtime, visitor: Visitor, device: str) -> dict[str, Any]:
    with runtime.uow(runtime.now(), actor=visitor.email, employee_only=True) as uow:
        return portal.enrolment_code(uow, visitor.person_id, device)


async def make_enrolment_code(request: Request, device: str, visitor: Employee) -> Response:
    """A one-time code for the agent or check app on this device, shown once on the page (it is
    stored hashed and expires in 15 minutes: docs/targeted-check.md)."""
    runtime = runtime_of(request)
    form = await read_form(request)
    check_csrf(form, visitor.csrf_token)
    made = await run_in_threadpool(_enrolment_code, runtime, visitor, device)
    shown = await run_in_threadpool(
        read_as_person, runtime, visitor, portal.my_device, device, focus=None
    )
    response = page(request, "device.html", device_values(visitor, shown, enrolment=made))
    response.headers["Cache-Control"] = "no-store"  # the code is a credential until spent
    return response


async def data_page(request: Request, visitor: Employee) -> Response:
    """What the organisation stores about the person's devices."""
    runtime = runtime_of(request)
    data = await run_in_threadpool(read_as_person, runtime, visitor, portal.my_data)
    values = {
        "visitor": visitor,
        "data": data,
        "minimised": runtime.settings.minimise_personal_data,
    }
    return page(request, "data.html", values)


def install(app: FastAPI) -> None:
    for path, endpoint, method in (
        ("/me/", home, "GET"),
        ("/me/devices/{device}", device_page, "GET"),
        ("/me/devices/{device}/exemptions", ask_exemption, "POST"),
        ("/me/devices/{device}/agent-code", make_enrolment_code, "POST"),
        ("/me/data", data_page, "GET"),
    ):
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
