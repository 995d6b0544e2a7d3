"""What the admin console shows and does about running appwarden (docs/console.md):
notices and retrying failed ones, the exemptions queue and its decisions, the settings in effect
and where each comes from, and the audit log with its verification. Lists come a page at a time
(newest first for notices and the audit log), in a fixed number of queries; actions are the
CLI's own use cases, so they check the same permissions and write the same audit entries.

Source health is `usecases.health.health_rows`, as `appwarden sources` reads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from appwarden.audit.models import AuditEntry
from appwarden.audit.verify import verify
from appwarden.db.uow import UnitOfWork
from appwarden.devices.service import device_identifiers
from appwarden.errors import Conflict, InvalidInput, Problem
from appwarden.exemptions import service as exemptions
from appwarden.exemptions.models import Exemption
from appwarden.identity.service import require
from appwarden.notifications.models import Notice
from appwarden.settings import Settings
from appwarden.timeutil import iso
from appwarden.usecases.deliver import retry_failed
from appwarden.usecases.exemptions import after_decision
from appwarden.usecases.fleet_console import FIRST_PAGE, checked_choice, emails_of, id_after, id_key
from appwarden.usecases.notices import NoticeConfig
from appwarden.usecases.outbox import notice_row
from appwarden.usecases.paging import Page, Window, page_of
from appwarden.vocabulary import NoticeStatus, Permission

Row = dict[str, Any]
EXEMPTION_STATUSES: Final = ("requested", "approved", "denied", "revoked")
EXEMPTION_DECISIONS: Final = ("grant", "deny", "revoke")
MAX_REASON_CHARS: Final = 2000
MAX_ACTION_CHARS: Final = 64

# ── notices ───────────────────────────────────────────────────────────────────────────────────


def notice_page(
    uow: UnitOfWork,
    *,
    status: str | None = None,
    policy: str | None = None,
    window: Window = FIRST_PAGE,
) -> Page[Row]:
    """Notices, newest first, as `appwarden notices --json` lists them (bodies left out),
    optionally those in one status or of one policy."""
    after = id_after(window)
    status = checked_choice(status, tuple(NoticeStatus), "status")
    query = select(Notice).order_by(Notice.id.desc())
    if after:
        query = query.where(Notice.id < after)
    if status:
        query = query.where(Notice.status == status)
    if policy:
        query = query.where(Notice.policy_id == policy[:200])
    shown = page_of(list(uow.session.scalars(query.limit(window.fetch))), window, id_key)
    notices = shown.rows
    emails = emails_of(uow, {n.person_id for n in notices})
    rows = [notice_row(n, emails.get(n.person_id)) for n in notices]
    return Page(rows, shown.next_after)


def retry_notices(uow: UnitOfWork, notice_id: int | None = None) -> int:
    """`appwarden notices retry [ID]`: a failed notice (or, with no id, every failed notice and
    webhook) goes back in the queue. Needs `notices:retry`; audited as `notice.retry`. A notice
    that has not failed is a conflict."""
    require(uow, Permission.NOTICES_RETRY)
    count = retry_failed(uow, notice_ids=None if notice_id is None else [notice_id])
    if notice_id is not None and count == 0:
        raise Conflict(f"notice {notice_id} has not failed: there is nothing to retry")
    return count


# ── exemptions ────────────────────────────────────────────────────────────────────────────────


def exemption_page(
    uow: UnitOfWork,
    *,
    status: str | None = None,
    policy: str | None = None,
    window: Window = FIRST_PAGE,
) -> Page[Row]:
    """Exemptions in id order (`status`: requested is the queue), with whose and which device's
    they are, who asked and who decided."""
    after = id_after(window)
    status = checked_choice(status, EXEMPTION_STATUSES, "status")
    query = select(Exemption).where(Exemption.id > after).order_by(Exemption.id)
    if status:
        query = query.where(Exemption.status == status)
    if policy:
        query = query.where(Exemption.policy_id == policy[:200])
    shown = page_of(list(uow.session.scalars(query.limit(window.fetch))), window, id_key)
    found = shown.rows
    emails = emails_of(uow, {i for e in found for i in (e.person_id, e.requested_by, e.decided_by)})
    devices = device_identifiers(uow, {e.device_id for e in found if e.device_id is not None})
    rows = [
        {
            "id": e.id,
            "policy": e.policy_id,
            "person": emails.get(e.person_id) if e.person_id else None,
            "device_id": e.device_id,
            "device": devices.get(e.device_id, []) if e.device_id else None,
            "status": e.status,
            "reason": e.reason,
            "starts_at": iso(e.starts_at),
            "ends_at": iso(e.ends_at),
            "requested_by": emails.get(e.requested_by) if e.requested_by else None,
            "decided_by": emails.get(e.decided_by) if e.decided_by else None,
            "decided_at": iso(e.decided_at),
            "decision_note": e.decision_note,
            "created_at": iso(e.created_at),
        }
        for e in found
    ]
    return Page(rows, shown.next_after)


def decide_exemption(
    uow: UnitOfWork,
    exemption_id: int,
    decision: str,
    reason: str,
    config: NoticeConfig,
    *,
    until: datetime | None = None,
) -> Row:
    """`appwarden exemption grant ID | deny ID | revoke ID`, with a reason (required here), and
    `until` for a grant (else the request's own end). Needs `exemptions:decide`; states and
    decisions follow at once and the holder of a grant is told, as from the CLI."""
    if decision not in EXEMPTION_DECISIONS:
        raise InvalidInput(
            "expected grant, deny or revoke",
            problems=[Problem("form:decision", "expected grant, deny or revoke")],
        )
    note = reason.strip()
    if not note or len(note) > MAX_REASON_CHARS:
        raise InvalidInput(
            "say why, in 1 to 2000 characters",
            problems=[Problem("form:reason", f"1 to {MAX_REASON_CHARS} characters")],
        )
    if decision == "grant":
        exemption = exemptions.grant(
            uow, request_id=exemption_id, reason=note, starts_at=None, ends_at=until
        )
        after_decision(uow, exemption, config)
    elif decision == "deny":
        exemption = exemptions.deny(uow, exemption_id, note=note)
    else:
        exemption = exemptions.revoke(uow, exemption_id, note=note)
        after_decision(uow, exemption, config)
    return {"id": exemption.id, "status": exemption.status, "ends_at": iso(exemption.ends_at)}


# ── settings ──────────────────────────────────────────────────────────────────────────────────

#: Settings whose value may carry a credential in a URL: only the harmless part is shown.
_URL_SETTINGS: Final = frozenset({"database_url", "webhook_url"})
MASKED: Final = "•••••• (set)"


def _shown(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return MASKED
    if name in _URL_SETTINGS and isinstance(value, str):
        try:
            url = make_url(value)
        except ArgumentError:
            return MASKED
        if name == "webhook_url":  # its path often carries a token
            return f"{url.drivername}://{url.host or ''}{f':{url.port}' if url.port else ''}/…"
        return url.render_as_string(hide_password=True)
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def settings_rows(settings: Settings) -> list[Row]:
    """Every setting in effect, by its environment variable, with where its value comes from
    (`environment`: it was set; `default`: it was not) and secrets masked."""
    given = settings.model_fields_set
    rows = []
    for name in sorted(type(settings).model_fields):
        value = getattr(settings, name)
        rows.append(
            {
                "variable": f"APPWARDEN_{name.upper()}",
                "value": _shown(name, value),
                "origin": "environment" if name in given else "default",
                "secret": isinstance(value, SecretStr) or name in _URL_SETTINGS,
            }
        )
    return rows


# ── the audit log ─────────────────────────────────────────────────────────────────────────────


def audit_page(
    uow: UnitOfWork,
    *,
    action: str | None = None,
    window: Window = FIRST_PAGE,
) -> Page[Row]:
    """Audit entries, newest first (entries the appender has not chained yet included, without
    a sequence number), optionally of one action (`exemption.grant`)."""
    after = id_after(window)
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if after:
        query = query.where(AuditEntry.id < after)
    if action:
        query = query.where(AuditEntry.action == action[:MAX_ACTION_CHARS])
    shown = page_of(list(uow.session.scalars(query.limit(window.fetch))), window, id_key)
    entries = shown.rows
    rows = [
        {
            "id": e.id,
            "seq": e.seq,
            "at": iso(e.at),
            "actor": e.actor,
            "action": e.action,
            "object_type": e.object_type,
            "object_id": e.object_id,
            "before": e.before,
            "after": e.after,
            "hash": e.hash,
        }
        for e in entries
    ]
    return Page(rows, shown.next_after)


def audit_verification(uow: UnitOfWork) -> Row:
    """`appwarden audit verify --json`: the whole chain checked (it reads every entry, so the
    console runs it when asked, not with every page of the log)."""
    return verify(uow.session).to_dict()
