"""The reference organisation rebuilt from the tools it would really run, each page in its
vendor's own shape: Intune for the iPhones (owners from `userPrincipalName`, `email` from
`easActivated`), AMAPI for the Androids (owners through the organisation's user mapping), an
Exchange export for mail (the Androids' partnerships joined by an admin's merge), osquery for the
MacBook, and the demo's own native reports for what no MDM there can see (TikTok on alice's and
carol's personal phones; none for dave). The memo's whole table holds at both instants.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from tests.integration.test_reference_scenario import AFTER, BASE, BEFORE, EXPECTED

from appwarden.audit.models import AuditEntry
from appwarden.cli.context import AppContext
from appwarden.db.uow import UnitOfWork, unit_of_work
from appwarden.settings import Settings
from appwarden.sources.common import ImportOptions
from appwarden.sources.registry import parse_files
from appwarden.timeutil import iso, parse_instant
from appwarden.usecases.demo import load_demo
from appwarden.usecases.ingest import ingest

DEVICES = {
    "alice iPhone": "udid:00008110-000A1B2C3D4E801E",
    "alice MacBook": "serial:C02ZK1ABMD6M",
    "bob": "enterprise_specific_id:BOB-PIXEL-7731",
    "carol": "enterprise_specific_id:CAROL-GALAXY-2210",
    "dave": "eas_device_id:DA7E00000000000000000000000000D1",
    "erin": "enterprise_specific_id:ERIN-TAB-0042",
    "frank": "eas_device_id:F4A2C0DE000000000000000000F4A2C0",
}
EAS = {
    "alice": "6F24CAD599A5BF1A690246B8C68FAE8D",
    "bob": "B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4",
    "carol": "CA201C0FFEE0000000000000000A2210",
    "dave": "DA7E00000000000000000000000000D1",
    "frank": "F4A2C0DE000000000000000000F4A2C0",
}
GRAPH = "https://graph.microsoft.com/v1.0/$metadata#deviceManagement"
ENTERPRISE = "enterprises/LC02abcd12"
ADMIN = "it.admin@example.com"
MERGED_AT = "2020-07-10T09:30:00-07:00"


# ── the vendors' pages, as each would have sent them at `t` ─────────────────────────────────


def _intune_device(n: int, who: str, owner_type: str, enrollment: str, t: str) -> dict[str, Any]:
    return {
        "id": f"0000000{n}-aaaa-4bbb-8ccc-00000000000{n}",
        "deviceName": f"{who.title()}'s iPhone",
        "userPrincipalName": f"{who}@example.com",
        "emailAddress": f"{who}@example.com",
        "operatingSystem": "iOS",
        "osVersion": "18.3.1",
        "managedDeviceOwnerType": owner_type,
        "deviceEnrollmentType": enrollment,
        "lastSyncDateTime": t,
        "easActivated": True,
        "easDeviceId": EAS[who],
        "serialNumber": "",
        "model": "iPhone 15",
        "manufacturer": "Apple",
    }


def intune_pages(t: str) -> dict[str, Any]:
    devices = [
        _intune_device(1, "alice", "personal", "appleBulkWithUser", t),
        _intune_device(2, "dave", "personal", "userEnrollment", t),
        _intune_device(3, "frank", "company", "appleBulkWithUser", t),
    ]
    frank = {"id": devices[2]["id"], "deviceName": devices[2]["deviceName"]}
    apps = [
        {"id": "tiktok-ios", "displayName": "TikTok", "platform": "ios", "deviceCount": 1,
         "publisher": "TikTok Ltd.", "version": "38.4.0"},
        {"id": "outlook-ios", "displayName": "Microsoft Outlook", "platform": "ios",
         "deviceCount": 1, "publisher": "Microsoft Corporation", "version": "4.24"},
    ]  # fmt: skip
    return {
        "managed-devices.json": {
            "@odata.context": f"{GRAPH}/managedDevices",
            "value": devices,
        },
        "detected-apps.json": {"@odata.context": f"{GRAPH}/detectedApps", "value": apps},
        **{
            f"{app['id']}-devices.json": {
                "@odata.context": f"{GRAPH}/detectedApps('{app['id']}')/managedDevices",
                "value": [frank],
            }
            for app in apps
        },
    }


def _amapi_device(who: str, esid: str, mode: str, ownership: str, apps: list[str], t: str):
    return {
        "name": f"{ENTERPRISE}/devices/{who}-0001",
        "userName": f"{ENTERPRISE}/users/{who}",
        "managementMode": mode,
        "ownership": ownership,
        "state": "ACTIVE",
        "lastStatusReportTime": t,
        "hardwareInfo": {"manufacturer": "Google", "enterpriseSpecificId": esid},
        "applicationReports": [
            {"packageName": package, "state": "INSTALLED", "versionName": "2024.11"}
            for package in apps
        ],
    }


def amapi_pages(t: str) -> dict[str, Any]:
    gmail, slack = "com.google.android.gm", "com.Slack"
    return {
        "amapi-devices.json": {
            "devices": [
                _amapi_device("bob", "BOB-PIXEL-7731", "DEVICE_OWNER", "COMPANY_OWNED",
                              [gmail, slack], t),
                _amapi_device("carol", "CAROL-GALAXY-2210", "PROFILE_OWNER", "PERSONALLY_OWNED",
                              [gmail], t),
                _amapi_device("erin", "ERIN-TAB-0042", "PROFILE_OWNER", "PERSONALLY_OWNED",
                              [], t),
            ]
        }
    }  # fmt: skip


AMAPI_USERS = {
    f"{ENTERPRISE}/users/{who}": f"{who}@example.com" for who in ("bob", "carol", "erin")
}


def exchange_pages(t: str) -> dict[str, Any]:
    kinds = {"alice": "iPhone", "bob": "Android", "carol": "Android", "dave": "iPhone",
             "frank": "iPhone"}  # fmt: skip
    return {
        "mobile-devices.json": [
            {
                "Identity": f"{who}\\ExchangeActiveSyncDevices\\{kind}§{eas}",
                "DeviceId": eas,
                "DeviceType": kind,
                "DeviceOS": "iOS 18.3.1" if kind == "iPhone" else "Android 14",
                "PrimarySmtpAddress": f"{who}@example.com",
                "UserPrincipalName": f"{who}@example.com",
                "LastSuccessSync": t,
            }
            for who, eas in EAS.items()
            for kind in [kinds[who]]
        ]
    }


def osquery_pages(moment: datetime) -> dict[str, str]:
    host = "6F1E0C2A-8B5D-4C77-9E21-3A0B5C7D9E10"

    def line(name: str, rows: list[dict[str, str]]) -> str:
        return json.dumps(
            {"name": name, "hostIdentifier": "alice-mbp.local", "unixTime": int(moment.timestamp()),
             "epoch": 0, "counter": 0, "numerics": False, "decorations": {"host_uuid": host},
             "action": "snapshot", "snapshot": rows}
        )  # fmt: skip

    return {
        "osqueryd.snapshots.log": "\n".join(
            [
                line("system_info", [{"uuid": host, "hardware_serial": "C02ZK1ABMD6M",
                                      "computer_name": "Alice's MacBook"}]),
                line("os_version", [{"name": "macOS", "platform": "darwin", "major": "15",
                                     "minor": "3"}]),
                line("apps", [{"name": "zoom.us.app", "bundle_identifier": "us.zoom.xos",
                               "bundle_short_version": "6.3.6"},
                              {"name": "Google Chrome.app", "bundle_identifier": "com.google.Chrome",
                               "bundle_short_version": "131.0"}]),
            ]
        )
        + "\n"
    }  # fmt: skip


def native_pages(t: str) -> dict[str, Any]:
    """What the demo's own agent saw on two personal phones no MDM can look into."""

    def device(identifiers: list[tuple[str, str]], apps: list[tuple[str, str]]) -> dict[str, Any]:
        return {
            "identifiers": [{"namespace": ns, "value": v} for ns, v in identifiers],
            "report": {
                "evidence_kind": "inventory",
                "observed_at": t,
                "apps": [{"namespace": ns, "value": v} for ns, v in apps],
            },
        }

    return {
        "agent.json": {
            "format": "appwarden.inventory/v1",
            "source": "agent",
            "devices": [
                device(
                    [("udid", "00008110-000A1B2C3D4E801E"), ("eas_device_id", EAS["alice"])],
                    [("apple_bundle_id", "com.zhiliaoapp.musically"),
                     ("apple_bundle_id", "com.microsoft.Office.Outlook")],
                ),
                device(
                    [("enterprise_specific_id", "CAROL-GALAXY-2210")],
                    [("android_package", "com.zhiliaoapp.musically.go"),
                     ("android_package", "com.google.android.gm")],
                ),
            ],
        }
    }  # fmt: skip


# ── loading them as `appwarden import SOURCE FILE...` would ─────────────────────────────────


def _files(pages: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [
        (name, (page if isinstance(page, str) else json.dumps(page)).encode())
        for name, page in pages.items()
    ]


def vendor_inventory(uow: UnitOfWork, observed_at: datetime) -> None:
    t = iso(observed_at)
    assert t is not None
    options = ImportOptions(received_at=uow.now, amapi_users=AMAPI_USERS)
    runs = [
        ("intune", intune_pages(t)),
        ("amapi", amapi_pages(t)),
        ("osquery", osquery_pages(observed_at)),
        ("exchange", exchange_pages(t)),
        ("native", native_pages(t)),
    ]
    for source, pages in runs:
        parsed, refused = parse_files(
            source, _files(pages), strict=True, max_bytes=1 << 20, options=options
        )
        assert refused == [], (source, refused)
        for _, batch in parsed:
            result = ingest(uow, batch)
            assert (result.skipped, result.quarantined) == ([], []), source


@pytest.fixture
def rebuilt(store, cli):
    """The memo released at BASE over the vendors' inventory; then an admin joins the Androids
    to their mail partnerships."""
    context = AppContext(settings=Settings(database_url=store.url, env="test"), actor=None)
    load_demo(
        lambda when, actor: context.uow(when, actor=actor),
        base=parse_instant(BASE),
        catalog=context.catalog,
        templates_digest=context.templates_digest,
        undo_window=context.undo_window,
        config=context.notice_config,
        load_inventory=vendor_inventory,
    )
    context.close()
    return cli


def _merge(cli, phone: str, partnership: str) -> dict[str, Any]:
    merged = cli("--as", ADMIN, "devices", "merge", phone, partnership, "--at", MERGED_AT, "--json")
    assert merged.code == 0, merged.err
    body: dict[str, Any] = merged.json()
    return body


def test_the_androids_mail_partnerships_wait_for_the_admins_merge(rebuilt, store):
    cli = rebuilt
    waiting = cli("devices", "unjoined", "--at", MERGED_AT, "--json").json()
    by_owner = {row["owner"]: row for row in waiting}
    assert sorted(by_owner) == ["bob@example.com", "carol@example.com"]
    assert [c["identifiers"] for c in by_owner["bob@example.com"]["candidates"]] == [
        [f"amapi_name:{ENTERPRISE}/devices/bob-0001", "enterprise_specific_id:BOB-PIXEL-7731"]
    ]
    assert cli("admin", "create", ADMIN, "--role", "admin").code == 0
    for who in ("bob", "carol"):
        body = _merge(cli, DEVICES[who], f"eas_device_id:{EAS[who]}")
        assert body["resources"] == ["email"]
        assert body["sources"] == (["amapi", "exchange"] if who == "bob" else
                                   ["agent", "amapi", "exchange"])  # fmt: skip
    assert cli("devices", "unjoined", "--json").json() == []
    with unit_of_work(store.engine, now=parse_instant(MERGED_AT)) as uow:
        merges = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "device.merge")
        ).all()
        assert [(m.actor, m.after["owner"]) for m in merges] == [
            (ADMIN, "bob@example.com"),
            (ADMIN, "carol@example.com"),
        ]


@pytest.mark.parametrize("when", [BEFORE, AFTER])
def test_the_memos_table_holds_when_rebuilt_from_the_vendors_exports(rebuilt, when):
    cli = rebuilt
    assert cli("admin", "create", ADMIN, "--role", "admin").code == 0
    for who in ("bob", "carol"):
        _merge(cli, DEVICES[who], f"eas_device_id:{EAS[who]}")
    fleet = cli("status", "--policy", "tiktok-mobile-email", "--all", "--at", when, "--json")
    assert fleet.code == 0, fleet.err
    by_device = {ident: row for row in fleet.json() for ident in row["device_identifiers"]}
    for name, reference in DEVICES.items():
        state, decision = EXPECTED[(name, when)]
        assert by_device[reference]["state"] == state, name
        decided = cli("decide", reference, "email", "--at", when, "--json")
        assert decided.code == 0, decided.err
        assert decided.json()["decision"] == decision, name


def test_each_device_keeps_what_each_vendor_said_about_it(rebuilt):
    cli = rebuilt
    detail = cli("devices", "show", DEVICES["dave"], "--json", "--at", BEFORE).json()
    # Intune manages nothing on dave's User Enrollment, so it says who owns the phone and that
    # it reaches mail, but sends no app report; Exchange says it syncs mail.
    kinds = {(r["source"], r["evidence_kind"]) for r in detail["reports"]}
    assert kinds == {("exchange", "none")}
    assert detail["owner"]["email"] == "dave@example.com"
    assert {i["source"] for i in detail["identifiers"]} == {"intune"}  # Intune named it first
    frank = cli("devices", "show", DEVICES["frank"], "--json", "--at", BEFORE).json()
    (latest, *_) = [r for r in frank["reports"] if r["source"] == "intune"]
    assert latest["evidence_kind"] == "inventory"
    assert latest["coverage"]["namespaces"] == ["display_name"]  # a complete detectedApps crawl
    mac = cli("devices", "show", DEVICES["alice MacBook"], "--json", "--at", BEFORE).json()
    assert mac["platform"] == "macos"
    assert {r["source"] for r in mac["reports"]} == {"osquery"}
    morning = parse_instant("2020-07-10T08:00:00-07:00")
    assert max(r["observed_at"] for r in mac["reports"]) == iso(morning)
