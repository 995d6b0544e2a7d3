"""Ingest on both stores: joining devices, replacing observations within coverage, out-of-order
reports, quarantine, placeholder serials and data minimisation (docs/architecture.md, Facts)."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Coverage, Device, DeviceIdentifier, Observation, Quarantine
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.devices.service import find_device
from appwarden.errors import Ambiguous, NotFound
from appwarden.usecases.ingest import ingest
from appwarden.vocabulary import EvidenceKind, Ownership, Platform

T0 = datetime(2020, 7, 1, 12, 0, tzinfo=UTC)
TIKTOK = AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok")
ZOOM = AppSeen("apple_bundle_id", "us.zoom.videomeetings", "6.3", "Zoom")
OUTLOOK = AppSeen("apple_bundle_id", "com.microsoft.Office.Outlook", "4.2", "Outlook")


def phone(*identifiers: tuple[str, str], ownership=Ownership.CORPORATE, owner="alice@example.com"):
    return DeviceFacts(
        identifiers=identifiers or (("udid", "UDID-1"),),
        platform=Platform.IOS,
        ownership=ownership,
        owner_email=owner,
        resources=("email",),
    )


def report(at, apps, *, device=None, kind=EvidenceKind.INVENTORY, source="mdm", **extra):
    return ReportFacts(
        device=device or phone(),
        source=source,
        evidence_kind=kind,
        observed_at=at,
        apps=tuple(apps),
        **extra,
    )


def run(store, at, *reports, minimise=False):
    with unit_of_work(store.engine, now=at) as uow:
        return ingest(uow, InventoryBatch(reports=reports), minimise_personal=minimise)


def observations(store):
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        rows = uow.session.scalars(select(Observation).order_by(Observation.value)).all()
        return {
            (o.source, o.evidence_kind, o.value): (o.first_seen_at, o.last_seen_at) for o in rows
        }


def count(store, model):
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        return uow.session.scalar(select(func.count()).select_from(model))


def test_reimport_replaces_within_coverage_and_keeps_first_seen(store):
    run(store, T0, report(T0, [TIKTOK, ZOOM]))
    later = T0 + timedelta(days=1)
    run(store, later, report(later, [TIKTOK, OUTLOOK]))
    seen = observations(store)
    assert seen == {
        ("mdm", "inventory", "com.microsoft.office.outlook"): (later, later),
        ("mdm", "inventory", "com.zhiliaoapp.musically"): (T0, later),
    }


def test_a_report_with_no_apps_proves_absence(store):
    run(store, T0, report(T0, [TIKTOK]))
    run(store, T0 + timedelta(hours=1), report(T0 + timedelta(hours=1), []))
    assert observations(store) == {}
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        covered = uow.session.scalars(select(Coverage.namespace)).all()
    assert covered == ["apple_bundle_id"]  # an iOS full inventory covers bundle ids


def test_an_older_report_arriving_late_never_overwrites_a_newer_one(store):
    newer = T0 + timedelta(days=2)
    run(store, newer, report(newer, []))
    result = run(store, newer + timedelta(minutes=5), report(T0, [TIKTOK]))
    assert result.reports_stale == 1
    assert result.reports_applied == 0
    assert observations(store) == {}
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        assert uow.session.scalar(select(Coverage.observed_at)) == newer


def test_coverage_is_per_namespace_so_absence_elsewhere_is_not_faked(store):
    run(store, T0, report(T0, [TIKTOK]))
    # A Chrome-extension-only report lists nothing about bundle ids: TikTok stays.
    later = T0 + timedelta(hours=2)
    run(store, later, report(later, [], coverage=("chrome_extension_id",), source="mdm"))
    assert ("mdm", "inventory", "com.zhiliaoapp.musically") in observations(store)


def test_a_targeted_check_never_deletes_inventory_observations(store):
    run(store, T0, report(T0, [TIKTOK, ZOOM]))
    later = T0 + timedelta(hours=1)
    check = report(
        later,
        [],
        kind=EvidenceKind.TARGETED_CHECK,
        checked=(("apple_bundle_id", "com.zhiliaoapp.musically"),),
    )
    run(store, later, check)
    assert set(observations(store)) == {
        ("mdm", "inventory", "com.zhiliaoapp.musically"),
        ("mdm", "inventory", "us.zoom.videomeetings"),
    }
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        proof = uow.session.scalars(
            select(Coverage).where(Coverage.evidence_kind == "targeted_check")
        ).one()
    assert (proof.namespace, proof.value, proof.observed_at) == (
        "apple_bundle_id",
        "com.zhiliaoapp.musically",
        later,
    )


def test_reports_join_on_shared_identifiers(store):
    run(store, T0, report(T0, [TIKTOK], device=phone(("udid", "u-1"), ("serial", "F2LX1234"))))
    run(
        store,
        T0,
        report(
            T0,
            [ZOOM],
            device=phone(("serial", "f2lx1234"), ("eas_device_id", "EAS1")),
            source="exchange",
        ),
    )
    assert count(store, Device) == 1
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        identifiers = {
            (i.namespace, i.value) for i in uow.session.scalars(select(DeviceIdentifier))
        }
    assert identifiers == {("udid", "U-1"), ("serial", "F2LX1234"), ("eas_device_id", "EAS1")}


def test_placeholder_serials_never_join_devices(store):
    run(
        store, T0, report(T0, [], device=phone(("udid", "A"), ("serial", "To be filled by O.E.M.")))
    )
    run(
        store, T0, report(T0, [], device=phone(("udid", "B"), ("serial", "To be filled by O.E.M.")))
    )
    assert count(store, Device) == 2
    assert count(store, Quarantine) == 0


def test_a_device_with_only_a_placeholder_serial_is_skipped_with_a_reason(store):
    result = run(store, T0, report(T0, [], device=phone(("serial", "0")), where="f.json:3:5"))
    assert count(store, Device) == 0
    assert result.skipped == [
        "f.json:3:5: the device has no usable identifier (placeholder serials are ignored)"
    ]


def test_identifiers_of_two_devices_are_quarantined_and_merge_nothing(store):
    run(store, T0, report(T0, [TIKTOK], device=phone(("udid", "A"))))
    run(store, T0, report(T0, [], device=phone(("udid", "B"))))
    before = observations(store)
    result = run(store, T0, report(T0, [ZOOM], device=phone(("udid", "A"), ("udid", "B"))))
    assert result.quarantined
    assert "quarantined" in result.quarantined[0]
    assert count(store, Device) == 2
    assert observations(store) == before
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        held = uow.session.scalars(select(Quarantine)).one()
    assert held.identifiers == ["udid:A", "udid:B"]
    assert len(held.candidate_device_ids) == 2


def test_device_references_namespaced_bare_and_ambiguous(store):
    run(store, T0, report(T0, [], device=phone(("udid", "SAME"), ("serial", "S1"))))
    run(store, T0, report(T0, [], device=phone(("eas_device_id", "SAME"))))
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        assert find_device(uow, "serial:S1").id == find_device(uow, "S1").id
        with pytest.raises(Ambiguous, match="udid:SAME") as excinfo:
            find_device(uow, "SAME")
        assert "eas_device_id:SAME" in excinfo.value.message
        with pytest.raises(NotFound):
            find_device(uow, "udid:nope")


def test_personal_devices_keep_only_what_some_policy_names(store, cli, tmp_path):
    policy = """
apiVersion: appwarden/v1
kind: AppPolicy
metadata: {id: no-tiktok, title: No TikTok}
spec:
  apps: [tiktok]
  deadline: 2020-07-10T23:59:59-07:00
  enforcement: {deny: [email]}
"""
    assert cli("admin", "create", "author@example.com", "--role", "author").code == 0
    path = tmp_path / "no-tiktok.yaml"
    path.write_text(policy)
    assert cli("policy", "apply", str(path), "--as", "author@example.com").code == 0
    personal = phone(("udid", "P1"), ownership=Ownership.PERSONAL)
    run(store, T0, report(T0, [TIKTOK, ZOOM, OUTLOOK], device=personal), minimise=True)
    assert set(observations(store)) == {("mdm", "inventory", "com.zhiliaoapp.musically")}
    with unit_of_work(store.engine, now=T0, write=False) as uow:
        covered = {(c.namespace, c.value) for c in uow.session.scalars(select(Coverage))}
    # The coverage shrinks to exactly the policy's identifiers: nothing says Zoom is absent.
    assert ("apple_bundle_id", "") not in covered
    assert ("apple_bundle_id", "com.zhiliaoapp.musically") in covered
    assert all(value for _, value in covered)


def test_a_batch_of_many_reports_is_applied_with_the_cycle_collector_paused(store):
    def udid(n: int) -> DeviceFacts:
        return phone(("udid", f"UDID-GC-{n}"), owner=f"gc{n}@example.com")

    during: list[bool] = []
    batch = InventoryBatch(reports=tuple(report(T0, [ZOOM], device=udid(n)) for n in range(3)))
    one = InventoryBatch(reports=(report(T0, [ZOOM], device=udid(9)),))
    assert gc.isenabled()
    with unit_of_work(store.engine, now=T0 + timedelta(hours=1)) as uow:
        ingest(uow, batch, on_report=lambda: during.append(gc.isenabled()))
        ingest(uow, one, on_report=lambda: during.append(gc.isenabled()))
    assert during == [False, False, False, True]  # one report: the per-device path, unpaused
    assert gc.isenabled()
