"""The reference organisation (README, "Quick start"): the TikTok memo, reproduced.

Every time is relative to the memo's release T. With T = 2020-07-10T09:00:00-07:00 it is the memo
exactly: the policy is released at T with its deadline that night (short notice), reports were
observed at 08:00, TikTok was first seen on 2020-06-28, and frank holds an exemption.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from appwarden.catalog.model import Catalog
from appwarden.db.uow import UnitOfWork
from appwarden.devices.schemas import (
    AppSeen,
    DeviceFacts,
    InventoryBatch,
    PersonFacts,
    ReportFacts,
)
from appwarden.errors import Conflict
from appwarden.exemptions.service import grant
from appwarden.identity.service import get_person, grant_role
from appwarden.policies import service as policies
from appwarden.policies.models import Policy
from appwarden.timeutil import iso, parse_instant
from appwarden.usecases.ingest import ingest
from appwarden.usecases.notices import NoticeConfig
from appwarden.usecases.release import release_due
from appwarden.vocabulary import EvidenceKind, FormFactor, Ownership, Platform, Role

REFERENCE_RELEASE = parse_instant("2020-07-10T09:00:00-07:00")
POLICY_ID = "tiktok-mobile-email"
AUTHOR = "security.lead@example.com"
APPROVER = "ciso@example.com"
SOURCE = "mdm-export"

TIKTOK = AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok")
TIKTOK_ANDROID = AppSeen("android_package", "com.zhiliaoapp.musically", "38.4.0", "TikTok")
TIKTOK_LITE = AppSeen("android_package", "com.zhiliaoapp.musically.go", "34.1.2", "TikTok Lite")


def at(base: datetime, reference: str) -> datetime:
    """The instant that stood at `reference` in the memo, moved to a release at `base`."""
    return base + (parse_instant(reference) - REFERENCE_RELEASE)


POLICY_TEMPLATE = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: tiktok-mobile-email
  title: Mandatory removal of TikTok
spec:
  apps: [tiktok]
  scope:
    platforms: [ios, ipados, android]
    form_factors: [phone, tablet]
    ownership: [corporate, personal]
    access: [email]
  deadline: {deadline}
  grace: P1D
  max_evidence_age: P7D
  evidence: [inventory, targeted_check, attestation]
  unknown: allow
  enforcement:
    deny: [email]
  notices:
    announce: {{template: mandatory-removal}}
    reminders: [P3D, P1D]
    send_at: "09:00"
  allowed_alternatives: Using TikTok from your company laptop browser is allowed.
  remediation: >-
    Delete the TikTok app from this device. Access returns within a minute of the next
    check-in.
  rationale:
    text: >-
      The app can read what you copy to the clipboard and sends data to servers outside
      our control.
"""


def policy_text(base: datetime) -> str:
    return POLICY_TEMPLATE.format(deadline=iso(at(base, "2020-07-10T23:59:59-07:00")))


def _people() -> tuple[PersonFacts, ...]:
    """The staff; each also signs in to mail as `EXAMPLE\\<local part>` (the account names the
    gate matches credentials against)."""
    pacific = "America/Los_Angeles"
    people = (
        PersonFacts("alice@example.com", "Alice Adams", time_zone=pacific, groups=("sales",)),
        PersonFacts("bob@example.com", "Bob Baker", time_zone=pacific, groups=("engineering",)),
        PersonFacts(
            "carol@example.com", "Carol Clark", time_zone="Europe/Berlin", groups=("sales",)
        ),
        PersonFacts("dave@example.com", "Dave Diaz", time_zone=pacific, groups=("support",)),
        PersonFacts("erin@example.com", "Erin Evans", time_zone=pacific, groups=("marketing",)),
        PersonFacts("frank@example.com", "Frank Fischer", time_zone=pacific, groups=("executive",)),
        PersonFacts(AUTHOR, "Sam Security", time_zone=pacific, groups=("it",)),
        PersonFacts(APPROVER, "Chris CISO", time_zone=pacific, groups=("it",)),
    )
    return tuple(
        replace(person, accounts=(f"example\\{person.email.split('@', 1)[0]}",))
        for person in people
    )


@dataclass(frozen=True)
class _Device:
    owner: str
    identifiers: tuple[tuple[str, str], ...]
    platform: Platform
    form_factor: FormFactor
    ownership: Ownership
    resources: tuple[str, ...]
    name: str
    evidence: EvidenceKind
    apps: tuple[AppSeen, ...]
    first_apps: tuple[AppSeen, ...] | None = None  # what the 2020-06-28 report showed


def _devices() -> tuple[_Device, ...]:
    zoom_mac = AppSeen("apple_bundle_id", "us.zoom.xos", "6.3.6", "zoom.us")
    chrome_mac = AppSeen("apple_bundle_id", "com.google.Chrome", "131.0", "Google Chrome")
    gmail = AppSeen("android_package", "com.google.android.gm", "2024.11", "Gmail")
    outlook = AppSeen("apple_bundle_id", "com.microsoft.Office.Outlook", "4.24", "Outlook")
    slack = AppSeen("android_package", "com.Slack", "24.11", "Slack")
    return (
        _Device(
            "alice@example.com",
            (("udid", "00008110-000A1B2C3D4E801E"), ("eas_device_id", "6F24CAD599A5BF1A690246B8C68FAE8D")),
            Platform.IOS, FormFactor.PHONE, Ownership.PERSONAL, ("email",), "Alice's iPhone",
            EvidenceKind.INVENTORY, (TIKTOK, outlook),
        ),
        _Device(
            "alice@example.com",
            (("serial", "C02ZK1ABMD6M"),),
            Platform.MACOS, FormFactor.LAPTOP, Ownership.CORPORATE, (), "Alice's MacBook",
            EvidenceKind.INVENTORY, (zoom_mac, chrome_mac),
        ),
        _Device(
            "bob@example.com",
            (("enterprise_specific_id", "BOB-PIXEL-7731"), ("eas_device_id", "B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4")),
            Platform.ANDROID, FormFactor.PHONE, Ownership.CORPORATE, ("email",), "Bob's Pixel",
            EvidenceKind.INVENTORY, (gmail, slack),
        ),
        _Device(
            "carol@example.com",
            (("enterprise_specific_id", "CAROL-GALAXY-2210"), ("eas_device_id", "CA201C0FFEE0000000000000000A2210")),
            Platform.ANDROID, FormFactor.PHONE, Ownership.PERSONAL, ("email",), "Carol's Galaxy",
            EvidenceKind.INVENTORY, (TIKTOK_LITE, gmail),
        ),
        _Device(
            "dave@example.com",
            (("enrollment_id", "D4VE-USER-ENROLLMENT-0001"), ("eas_device_id", "DA7E00000000000000000000000000D1")),
            Platform.IOS, FormFactor.PHONE, Ownership.PERSONAL, ("email",), "Dave's iPhone",
            EvidenceKind.MANAGED_ONLY, (outlook,),
        ),
        _Device(
            "erin@example.com",
            (("enterprise_specific_id", "ERIN-TAB-0042"),),
            Platform.ANDROID, FormFactor.TABLET, Ownership.PERSONAL, (), "Erin's tablet",
            EvidenceKind.INVENTORY, (TIKTOK_ANDROID,),
        ),
        _Device(
            "frank@example.com",
            (("udid", "00008030-001F5E6A3C22802E"), ("eas_device_id", "F4A2C0DE000000000000000000F4A2C0")),
            Platform.IOS, FormFactor.PHONE, Ownership.CORPORATE, ("email",), "Frank's iPhone",
            EvidenceKind.INVENTORY, (TIKTOK, outlook),
        ),
    )  # fmt: skip


def inventory(observed_at: datetime) -> InventoryBatch:
    """The organisation's inventory as the MDM export reported it at `observed_at`."""
    reports = tuple(
        ReportFacts(
            device=DeviceFacts(
                identifiers=d.identifiers,
                platform=d.platform,
                form_factor=d.form_factor,
                ownership=d.ownership,
                owner_email=d.owner,
                resources=d.resources,
                name=d.name,
            ),
            source=SOURCE,
            evidence_kind=d.evidence,
            observed_at=observed_at,
            apps=d.apps,
        )
        for d in _devices()
    )
    return InventoryBatch(source=SOURCE, people=_people(), reports=reports)


OpenUnitOfWork = Callable[[datetime, str | None], AbstractContextManager[UnitOfWork]]
# Stores the organisation's inventory as observed at an instant, in the caller's unit of work.
InventoryLoader = Callable[[UnitOfWork, datetime], None]


def native_inventory(uow: UnitOfWork, observed_at: datetime) -> None:
    """The demo's own inventory: every device as one MDM export reported it."""
    ingest(uow, inventory(observed_at))


def load_demo(
    open_uow: OpenUnitOfWork,
    *,
    base: datetime,
    catalog: Catalog,
    templates_digest: str,
    undo_window: timedelta,
    config: NoticeConfig,
    publish: bool = True,
    load_inventory: InventoryLoader = native_inventory,
) -> None:
    """Load the reference organisation, each step at its own logical time, as people would.
    With `publish=False` it stops before the memo is proposed: a draft, the first inventory
    (2020-06-28) and frank's exemption, so a walk through the announcement can start there.
    `load_inventory` stores the inventory at each of its two instants (tests rebuild the
    organisation from the vendors' own exports with it)."""
    draft_at = at(base, "2020-06-20T10:00:00-07:00")
    with open_uow(draft_at, None) as uow:
        if uow.session.get(Policy, POLICY_ID) is not None:
            raise Conflict("the reference organisation is already loaded in this database")
        for person in _people():
            ingest(uow, InventoryBatch(source=SOURCE, people=(person,)))
        grant_role(uow, AUTHOR, Role.AUTHOR)
        grant_role(uow, APPROVER, Role.APPROVER)
    with open_uow(draft_at, AUTHOR) as uow:
        policies.apply(
            uow,
            text=policy_text(base),
            filename="tiktok-mobile-email.yaml",
            catalog=catalog,
            templates_digest=templates_digest,
        )
    # TikTok was first seen on 2020-06-28.
    first_seen = at(base, "2020-06-28T09:00:00-07:00")
    with open_uow(first_seen, None) as uow:
        load_inventory(uow, first_seen)
    with open_uow(at(base, "2020-06-30T09:00:00-07:00"), APPROVER) as uow:
        grant(
            uow,
            policy_id=POLICY_ID,
            person=get_person(uow, "frank@example.com"),
            starts_at=at(base, "2020-06-30T09:00:00-07:00"),
            ends_at=at(base, "2020-12-31T23:59:59-08:00"),
            reason="Runs the TikTok marketing account; uses a separate, isolated phone for email.",
        )
    if not publish:
        return
    # The morning's reports arrived at 08:00; the memo went out at 09:00.
    morning = at(base, "2020-07-10T08:00:00-07:00")
    with open_uow(morning, None) as uow:
        load_inventory(uow, morning)
    publish_at = base - undo_window
    with open_uow(publish_at - timedelta(minutes=30), AUTHOR) as uow:
        policies.propose(uow, POLICY_ID, catalog=catalog, templates_digest=templates_digest)
    with open_uow(publish_at - timedelta(minutes=15), APPROVER) as uow:
        policies.approve(uow, POLICY_ID, catalog=catalog, templates_digest=templates_digest)
    with open_uow(publish_at, AUTHOR) as uow:
        policies.publish(
            uow,
            POLICY_ID,
            catalog=catalog,
            templates_digest=templates_digest,
            undo_window=undo_window,
            short_notice=True,
        )
    with open_uow(base, None) as uow:
        release_due(uow, config)
