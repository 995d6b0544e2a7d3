"""Policies and their versions: apply, the lifecycle actions, and which version is in effect."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, or_, select

from appwarden.audit.service import record
from appwarden.catalog.matching import like_pattern, rule_key
from appwarden.catalog.model import AppIdentifier, Catalog
from appwarden.db.uow import UnitOfWork
from appwarden.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from appwarden.identity.service import require
from appwarden.policies.document import PolicyDocument, parse_policy
from appwarden.policies.lifecycle import LIVE_STATES, OPEN_STATES, next_state
from appwarden.policies.models import Policy, PolicyApproval, PolicyIdentifier, PolicyVersion
from appwarden.vocabulary import AppNamespace, Permission, VersionState

SHORT_NOTICE = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class ResolvedIdentifier:
    identifier: AppIdentifier
    app_slug: str | None  # None: listed explicitly under spec.identifiers
    # An `apple_bundle_id` whose catalog entry lets an absent URL scheme of it prove it absent.
    covered_by_scheme: bool = False


@dataclass(frozen=True, slots=True)
class ApplyResult:
    version: PolicyVersion
    changed: bool  # False: identical content, nothing stored


def resolve_identifiers(doc: PolicyDocument, catalog: Catalog) -> list[ResolvedIdentifier]:
    """The policy's identifier set: catalog apps (with their includes) plus explicit ones."""
    found: dict[AppIdentifier, str | None] = {}
    for slug in doc.apps:
        for contributor, identifier in catalog.resolve_app(slug):
            found.setdefault(identifier, contributor)
    covered = {
        identifier
        for identifier, slug in found.items()
        if slug is not None
        and identifier.namespace == AppNamespace.APPLE_BUNDLE_ID
        and catalog.get(slug).url_scheme_covers is not None
    }
    for ref in doc.identifiers:
        try:
            identifier = AppIdentifier(ref.namespace, rule_key(ref.namespace, ref.value))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        found.setdefault(identifier, None)
    return [
        ResolvedIdentifier(i, slug, i in covered)
        for i, slug in sorted(found.items(), key=lambda kv: kv[0])
    ]


def content_hash(doc: PolicyDocument, resolved: list[ResolvedIdentifier], templates: str) -> str:
    """What an approval binds: the document, the resolved identifiers (with which of them an
    absent URL scheme may prove absent) and the templates."""
    content: dict[str, object] = {
        "document": doc.canonical(),
        "identifiers": sorted(r.identifier.key for r in resolved),
        "templates": templates,
    }
    scheme_covered = sorted(r.identifier.key for r in resolved if r.covered_by_scheme)
    if scheme_covered:  # only then: versions without it keep the hash they were approved with
        content["covered_by_scheme"] = scheme_covered
    body = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def _document_hash(doc: PolicyDocument) -> str:
    return hashlib.sha256(orjson.dumps(doc.canonical(), option=orjson.OPT_SORT_KEYS)).hexdigest()


def get_policy(uow: UnitOfWork, policy_id: str) -> Policy:
    policy = uow.session.get(Policy, policy_id)
    if policy is None:
        known = ", ".join(uow.session.scalars(select(Policy.id).order_by(Policy.id))) or "none"
        raise NotFound(f"no policy {policy_id!r} (known: {known})")
    return policy


def versions_of(uow: UnitOfWork, policy_id: str) -> list[PolicyVersion]:
    return list(
        uow.session.scalars(
            select(PolicyVersion)
            .where(PolicyVersion.policy_id == policy_id)
            .order_by(PolicyVersion.number)
        )
    )


def is_open(version: PolicyVersion, now: datetime) -> bool:
    """Open for change: draft to scheduled, except a scheduled version already released."""
    if version.state == VersionState.SCHEDULED:
        return version.release_at is None or now < version.release_at
    return version.state in OPEN_STATES


def open_version(uow: UnitOfWork, policy_id: str) -> PolicyVersion | None:
    return next((v for v in versions_of(uow, policy_id) if is_open(v, uow.now)), None)


def get_version(uow: UnitOfWork, policy_id: str, number: int | None = None) -> PolicyVersion:
    """A numbered version, or else the open one, or else the latest."""
    versions = versions_of(uow, get_policy(uow, policy_id).id)
    if number is not None:
        for version in versions:
            if version.number == number:
                return version
        raise NotFound(f"policy {policy_id!r} has no version {number}")
    open_ = [v for v in versions if v.state in OPEN_STATES]
    return open_[0] if open_ else versions[-1]


def identifiers_of(uow: UnitOfWork, version_id: int) -> list[PolicyIdentifier]:
    return list(
        uow.session.scalars(
            select(PolicyIdentifier)
            .where(PolicyIdentifier.version_id == version_id)
            .order_by(PolicyIdentifier.namespace, PolicyIdentifier.value)
        )
    )


def document_of(version: PolicyVersion) -> PolicyDocument:
    return _parsed(version.source_text, version.source_name)


# Stored versions are parsed again for every notice and decision change they cause; the document
# is immutable, so the parse of a given text is remembered.
_parsed = functools.lru_cache(maxsize=64)(parse_policy)


def _fill_version(
    version: PolicyVersion,
    doc: PolicyDocument,
    text: str,
    filename: str,
    hash_: str,
) -> None:
    version.document = doc.canonical()
    version.source_text = text
    version.source_name = filename
    version.content_hash = hash_
    version.document_hash = _document_hash(doc)
    version.deadline = doc.deadline
    version.grace_seconds = int(doc.grace.total_seconds())
    version.max_evidence_age_seconds = int(doc.max_evidence_age.total_seconds())
    version.unknown_deny = doc.unknown == "deny"
    version.evidence = sorted(doc.evidence)
    version.deny_resources = sorted(doc.deny)


def _store_identifiers(
    uow: UnitOfWork, version: PolicyVersion, resolved: list[ResolvedIdentifier]
) -> None:
    for row in identifiers_of(uow, version.id):
        uow.session.delete(row)
    uow.session.flush()
    for item in resolved:
        identifier = item.identifier
        uow.session.add(
            PolicyIdentifier(
                version_id=version.id,
                namespace=identifier.namespace,
                value=identifier.value,
                like_pattern=like_pattern(identifier.value) if identifier.is_pattern else None,
                app_slug=item.app_slug,
                covered_by_scheme=item.covered_by_scheme,
            )
        )


def apply(
    uow: UnitOfWork,
    *,
    text: str | bytes,
    filename: str,
    catalog: Catalog,
    templates_digest: str,
) -> ApplyResult:
    """Store the document as the policy's draft. Identical content is a no-op; a changed one
    edits the open version back to draft (voiding its approvals) or starts a new version."""
    author = require(uow, Permission.POLICIES_AUTHOR)
    doc = parse_policy(text, filename, known_apps=catalog.slugs())
    source = text.decode("utf-8") if isinstance(text, bytes) else text  # parsed: it is UTF-8
    resolved = resolve_identifiers(doc, catalog)
    hash_ = content_hash(doc, resolved, templates_digest)
    policy = uow.session.get(Policy, doc.policy_id)
    if policy is None:
        policy = Policy(id=doc.policy_id, title=doc.title, created_at=uow.now)
        uow.session.add(policy)
        uow.session.flush()
    versions = versions_of(uow, policy.id)
    latest = versions[-1] if versions else None
    if latest is not None and latest.content_hash == hash_:
        return ApplyResult(latest, changed=False)
    current = next((v for v in versions if is_open(v, uow.now)), None)
    if current is not None and current.state == VersionState.SCHEDULED:
        raise Conflict(
            f"version {current.number} of {policy.id} is scheduled for release; "
            "cancel it before applying a change"
        )
    policy.title = doc.title
    if current is not None:
        before = {"state": current.state, "content_hash": current.content_hash}
        current.state = next_state(current.state, "edit")
        current.author_id = author.id
        current.proposed_at = current.approved_at = None
        _void_approvals(uow, current, "the content changed")
        _fill_version(current, doc, source, filename, hash_)
        version = current
        action = "policy.edit"
    else:
        before = None
        version = PolicyVersion(
            policy_id=policy.id,
            number=(latest.number + 1) if latest else 1,
            state=VersionState.DRAFT,
            author_id=author.id,
            created_at=uow.now,
        )
        _fill_version(version, doc, source, filename, hash_)
        uow.session.add(version)
        action = "policy.apply"
    uow.session.flush()
    _store_identifiers(uow, version, resolved)
    record(
        uow,
        action=action,
        object_type="policy_version",
        object_id=f"{policy.id}@{version.number}",
        before=before,
        after={"state": version.state, "content_hash": hash_},
    )
    uow.session.flush()
    return ApplyResult(version, changed=True)


def current_content_hash(version: PolicyVersion, catalog: Catalog, templates_digest: str) -> str:
    doc = document_of(version)
    return content_hash(doc, resolve_identifiers(doc, catalog), templates_digest)


def _void_approvals(uow: UnitOfWork, version: PolicyVersion, reason: str) -> None:
    for approval in uow.session.scalars(
        select(PolicyApproval).where(
            PolicyApproval.version_id == version.id, PolicyApproval.voided_at.is_(None)
        )
    ):
        approval.voided_at = uow.now
        approval.void_reason = reason


def _check_content(version: PolicyVersion, catalog: Catalog, templates_digest: str) -> None:
    if current_content_hash(version, catalog, templates_digest) != version.content_hash:
        raise Conflict(
            f"the content of {version.policy_id} version {version.number} changed since it was "
            "applied (catalog or templates): its approvals are void; apply the policy again "
            "to make a new draft"
        )


def _transition(uow: UnitOfWork, version: PolicyVersion, action: str, **after: Any) -> None:
    before = version.state
    version.state = next_state(version.state, action)
    record(
        uow,
        action=f"policy.{action}",
        object_type="policy_version",
        object_id=f"{version.policy_id}@{version.number}",
        before={"state": before},
        after={"state": version.state, **after},
    )


def propose(
    uow: UnitOfWork, policy_id: str, *, catalog: Catalog, templates_digest: str
) -> PolicyVersion:
    require(uow, Permission.POLICIES_AUTHOR)
    version = _open_or_fail(uow, policy_id)
    _check_content(version, catalog, templates_digest)
    _transition(uow, version, "propose")
    version.proposed_at = uow.now
    uow.session.flush()
    return version


def approve(
    uow: UnitOfWork,
    policy_id: str,
    *,
    catalog: Catalog,
    templates_digest: str,
    required_approvals: int = 1,
) -> PolicyVersion:
    approver = require(uow, Permission.POLICIES_APPROVE)
    version = _open_or_fail(uow, policy_id)
    if version.state != VersionState.PROPOSED:
        next_state(version.state, "approve")  # raises with what is possible
    if version.author_id == approver.id:
        raise PermissionDenied(
            f"{approver.email} wrote version {version.number} of {policy_id}: "
            "a different person must approve it"
        )
    _check_content(version, catalog, templates_digest)
    already = uow.session.scalars(
        select(PolicyApproval).where(
            PolicyApproval.version_id == version.id,
            PolicyApproval.approver_id == approver.id,
            PolicyApproval.voided_at.is_(None),
        )
    ).first()
    if already is not None:
        raise Conflict(f"{approver.email} already approved version {version.number}")
    uow.session.add(
        PolicyApproval(
            version_id=version.id,
            approver_id=approver.id,
            content_hash=version.content_hash,
            created_at=uow.now,
        )
    )
    uow.session.flush()
    record(
        uow,
        action="policy.approval",
        object_type="policy_version",
        object_id=f"{policy_id}@{version.number}",
        after={"approver": approver.email, "content_hash": version.content_hash},
    )
    if _valid_approvals(uow, version) >= required_approvals:
        _transition(uow, version, "approve")
        version.approved_at = uow.now
    uow.session.flush()
    return version


def _valid_approvals(uow: UnitOfWork, version: PolicyVersion) -> int:
    return int(
        uow.session.scalar(
            select(func.count()).where(
                PolicyApproval.version_id == version.id,
                PolicyApproval.voided_at.is_(None),
                PolicyApproval.content_hash == version.content_hash,
            )
        )
        or 0
    )


def publish(
    uow: UnitOfWork,
    policy_id: str,
    *,
    catalog: Catalog,
    templates_digest: str,
    undo_window: timedelta,
    short_notice: bool = False,
    required_approvals: int = 1,
) -> PolicyVersion:
    """Schedule the approved version for release at now + undo window."""
    require(uow, Permission.POLICIES_AUTHOR)
    version = _open_or_fail(uow, policy_id)
    next_state(version.state, "publish")
    _check_content(version, catalog, templates_digest)
    if _valid_approvals(uow, version) < required_approvals:
        raise Conflict(
            f"version {version.number} of {policy_id} needs {required_approvals} valid approval(s)"
        )
    release_at = uow.now + undo_window
    if version.deadline < release_at:
        raise InvalidInput(
            f"spec.deadline: the deadline {_iso(version.deadline)} is before the release at "
            f"{_iso(release_at)}; a deadline must come after the release"
        )
    if version.deadline < release_at + SHORT_NOTICE and not short_notice:
        raise InvalidInput(
            f"the deadline {_iso(version.deadline)} is less than 24 hours after the release at "
            f"{_iso(release_at)}: pass --short-notice if that is intended"
        )
    _transition(uow, version, "publish", release_at=_iso(release_at), short_notice=short_notice)
    version.published_at = uow.now
    version.release_at = release_at
    version.short_notice = short_notice
    uow.session.flush()
    return version


def cancel(uow: UnitOfWork, policy_id: str) -> PolicyVersion:
    """Inside the undo window, return the scheduled version to approved: nothing was sent."""
    require(uow, Permission.POLICIES_AUTHOR)
    get_policy(uow, policy_id)
    scheduled = [v for v in versions_of(uow, policy_id) if v.state == VersionState.SCHEDULED]
    version = scheduled[-1] if scheduled else _open_or_fail(uow, policy_id)
    next_state(version.state, "cancel")
    assert version.release_at is not None
    if uow.now >= version.release_at:
        raise Conflict(
            f"the undo window of {policy_id} version {version.number} closed at "
            f"{_iso(version.release_at)}; retract it instead"
        )
    _transition(uow, version, "cancel")
    version.release_at = None
    version.published_at = None
    uow.session.flush()
    return version


def retire(uow: UnitOfWork, policy_id: str) -> PolicyVersion:
    require(uow, Permission.POLICIES_RETRACT)
    version = live_version(uow, policy_id, uow.now)
    if version is None:
        raise Conflict(f"{policy_id} has no version in effect to retire")
    _transition(uow, version, "retire")
    version.ended_at = uow.now
    version.end_reason = "retired"
    uow.session.flush()
    return version


def _open_or_fail(uow: UnitOfWork, policy_id: str) -> PolicyVersion:
    get_policy(uow, policy_id)
    version = open_version(uow, policy_id)
    if version is None:
        raise Conflict(f"{policy_id} has no open version: apply a changed document first")
    return version


_RELEASED_STATES = (
    VersionState.SCHEDULED,
    VersionState.ACTIVE,
    VersionState.SUPERSEDED,
    VersionState.RETRACTED,
    VersionState.RETIRED,
)


def effective_versions(uow: UnitOfWork, at: datetime) -> list[PolicyVersion]:
    """Per policy id, the version in effect at `at`: the newest released one that had not ended.

    A scheduled version whose release time has come IS in effect; the worker only performs the
    side effects. Ended versions count for instants before they ended, so `--at` in the past sees
    what was in effect then.
    """
    candidates = uow.session.scalars(
        select(PolicyVersion)
        .where(
            PolicyVersion.release_at.is_not(None),
            PolicyVersion.release_at <= at,
            PolicyVersion.state.in_(_RELEASED_STATES),
            or_(PolicyVersion.ended_at.is_(None), PolicyVersion.ended_at > at),
        )
        .order_by(PolicyVersion.policy_id, PolicyVersion.number)
    ).all()
    return in_effect(candidates, at)


# Built once: every report's evaluation runs it (W4; see `compliance.rules`).
_RELEASED = (
    select(PolicyVersion)
    .where(PolicyVersion.release_at.is_not(None), PolicyVersion.state.in_(_RELEASED_STATES))
    .order_by(PolicyVersion.policy_id, PolicyVersion.number)
)


def released_versions(uow: UnitOfWork) -> list[PolicyVersion]:
    """Every version that was ever released, for `in_effect` at several instants."""
    return list(uow.session.scalars(_RELEASED))


def in_effect(released: Sequence[PolicyVersion], at: datetime) -> list[PolicyVersion]:
    """`effective_versions` among `released` (ordered by policy id and number)."""
    newest: dict[str, PolicyVersion] = {}
    for version in released:
        started = version.release_at is not None and version.release_at <= at
        if started and (version.ended_at is None or version.ended_at > at):
            newest[version.policy_id] = version
    return list(newest.values())


def live_version(uow: UnitOfWork, policy_id: str, at: datetime) -> PolicyVersion | None:
    return live_among(versions_of(uow, policy_id), at)


def live_among(versions: Sequence[PolicyVersion], at: datetime) -> PolicyVersion | None:
    """The version in effect at `at` among one policy's versions (`versions_of`), as
    `effective_versions` would pick it."""
    found = in_effect([v for v in versions if v.state in _RELEASED_STATES], at)
    return found[0] if found else None


def settle(uow: UnitOfWork) -> list[PolicyVersion]:
    """Record releases that have happened: scheduled → active, and the older live version of the
    same policy → superseded (as of the newer one's release)."""
    released = []
    due = uow.session.scalars(
        select(PolicyVersion).where(
            PolicyVersion.state == VersionState.SCHEDULED, PolicyVersion.release_at <= uow.now
        )
    ).all()
    for version in due:
        assert version.release_at is not None
        for older in versions_of(uow, version.policy_id):
            if older.number < version.number and older.state in LIVE_STATES:
                _transition(uow, older, "supersede")
                older.ended_at = version.release_at
                older.end_reason = f"superseded by version {version.number}"
        _transition(uow, version, "release")
        released.append(version)
    uow.session.flush()
    return released


# Built once: a personal device's report runs it (W4; see `compliance.rules`).
_LIVE_IDENTIFIERS = (
    select(PolicyIdentifier.namespace, PolicyIdentifier.value, PolicyIdentifier.like_pattern)
    .join(PolicyVersion, PolicyVersion.id == PolicyIdentifier.version_id)
    .where(PolicyVersion.state.in_(sorted([*OPEN_STATES, VersionState.ACTIVE])))
)


def live_identifier_keys(uow: UnitOfWork) -> set[tuple[str, str, bool]]:
    """(namespace, value, is_pattern) of every version not ended: what data minimisation keeps."""
    rows = uow.session.execute(_LIVE_IDENTIFIERS)
    return {(ns, value, like is not None) for ns, value, like in rows}


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
