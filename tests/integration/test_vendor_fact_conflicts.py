"""Which source says what, vendor by vendor: in the reference organisation every device's MDM of
record is `mdm-export`, so when a vendor's own page, joined to a device by a shared identifier,
says something else about a fact (owner, ownership, device status, platform, form factor), the
value is held as a conflict: listed, audited, and no state or decision changes.

(Person status and groups are never offered by a vendor mapping, and a resource only ever adds
`email` where the reference organisation already has it: both are covered for every writer by
test_fact_authority.py.)
"""

from __future__ import annotations

import base64
import json
import plistlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.integration.test_reference_scenario import DEVICES

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.timeutil import parse_instant

CAROL_EAS = "CA201C0FFEE0000000000000000A2210"
CAROL_ESID = "CAROL-GALAXY-2210"
MAC_SERIAL = "C02ZK1ABMD6M"
ALICE_UDID = "00008110-000A1B2C3D4E801E"
IMPORT_AT = "2020-07-10T12:00:00-07:00"
AFTER = "2020-07-11T12:00:00-07:00"
SYNCED = "2020-07-10T18:00:00Z"


def _amapi(**device: Any) -> dict[str, Any]:
    base = {
        "name": "enterprises/LC02/devices/carol",
        "managementMode": "PROFILE_OWNER",
        "ownership": "PERSONALLY_OWNED",
        "state": "ACTIVE",
        "lastStatusReportTime": SYNCED,
        "hardwareInfo": {"enterpriseSpecificId": CAROL_ESID},
    }
    return {"devices": [base | device]}


def _osquery_windows() -> str:
    def line(name: str, row: dict[str, str]) -> str:
        return json.dumps({"name": name, "unixTime": 1594400000, "epoch": 0, "counter": 0,
                           "decorations": {"host_uuid": "1D2C3B4A-0000-4000-8000-00000000C02Z"},
                           "action": "snapshot", "snapshot": [row]})  # fmt: skip

    return "\n".join(
        [
            line(
                "system_info",
                {"uuid": "1D2C3B4A-0000-4000-8000-00000000C02Z", "hardware_serial": MAC_SERIAL},
            ),
            line("os_version", {"name": "Windows 11", "platform": "windows", "major": "10"}),
        ]
    )


def _apple_ipad() -> dict[str, Any]:
    answer = {
        "CommandUUID": "0C0FFEE0-0000-4000-8000-000000000001",
        "Status": "Acknowledged",
        "UDID": ALICE_UDID,
        "QueryResponses": {"UDID": ALICE_UDID, "ProductName": "iPad13,1", "ModelName": "iPad"},
    }
    payload = base64.b64encode(plistlib.dumps(answer)).decode()
    return {
        "topic": "com.apple.mgmt.External.x",
        "event_id": "e-1",
        "created_at": SYNCED,
        "acknowledge_event": {"udid": ALICE_UDID, "status": "Acknowledged",
                              "command_uuid": answer["CommandUUID"], "raw_payload": payload},
    }  # fmt: skip


# (fact held, source, file content): each page names a reference device by an identifier the
# reference inventory gave it, and offers a different value for the fact.
CASES = {
    "owner from intune": ("owner", "intune", {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/managedDevices",
        "value": [{"id": "11111111-2222-4333-8444-555555555555", "operatingSystem": "Android",
                   "managedDeviceOwnerType": "personal", "userPrincipalName": "frank@example.com",
                   "easDeviceId": CAROL_EAS, "lastSyncDateTime": SYNCED}]}),
    "owner from fleet": ("owner", "fleet", {"hosts": [
        {"id": 7, "uuid": "6F1E0C2A-0000-4000-8000-000000000007", "platform": "darwin",
         "hardware_serial": MAC_SERIAL, "software_updated_at": SYNCED,
         "device_mapping": [{"email": "bob@example.com", "source": "google_chrome_profiles"}]}]}),
    "owner from jamf": ("owner", "jamf", {"totalCount": 1, "results": [
        {"id": "118", "udid": "5E2B7F10-94C3-4C0D-8E6A-1B2C3D4E5F60",
         "general": {"name": "MBP", "platform": "Mac", "reportDate": SYNCED},
         "hardware": {"serialNumber": MAC_SERIAL},
         "userAndLocation": {"email": "frank@example.com"}}]}),
    "owner from google": ("owner", "google", {"kind": "admin#directory#mobiledevices",
        "mobiledevices": [{"resourceId": "AFiQxQ8x", "deviceId": "b7c1", "type": "GOOGLE_SYNC",
                           "serialNumber": MAC_SERIAL, "email": ["bob@example.com"],
                           "status": "APPROVED", "lastSync": SYNCED}]}),
    "ownership from amapi": ("ownership", "amapi", _amapi(ownership="COMPANY_OWNED")),
    "device status from amapi": ("device_status", "amapi", _amapi(state="DELETED")),
    "platform from exchange": ("platform", "exchange", [
        {"DeviceId": CAROL_EAS, "DeviceType": "iPhone", "DeviceOS": "iOS 18.3.1",
         "PrimarySmtpAddress": "carol@example.com"}]),
    "platform from osquery": ("platform", "osquery", _osquery_windows()),
    "form factor from apple-mdm": ("form_factor", "apple-mdm", _apple_ipad()),
}  # fmt: skip


def _states(cli) -> dict[str, str]:
    """Each reference device's state after the deadline (a vendor may add identifiers to it)."""
    rows = cli("status", "--all", "--at", AFTER, "--json").json()
    return {
        name: row["state"]
        for name, reference in DEVICES.items()
        for row in rows
        if reference in row["device_identifiers"]
    }


def _decisions(cli) -> dict[str, str]:
    references = ["udid:" + ALICE_UDID, "serial:" + MAC_SERIAL, "eas_device_id:" + CAROL_EAS]
    return {
        ref: cli("decide", ref, "email", "--at", AFTER, "--json").json()["decision"]
        for ref in references
    }


@pytest.mark.parametrize("case", CASES)
def test_a_vendors_different_value_is_held_and_changes_nothing(
    demo, cli, store, tmp_path: Path, case
):
    fact, source, content = CASES[case]
    path = tmp_path / f"{source}.page"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    states, decisions = _states(cli), _decisions(cli)

    imported = cli("import", source, str(path), "--at", IMPORT_AT, "--json")
    assert imported.code == 0, imported.err

    held = [c for c in cli("conflicts", "--json").json() if c["source"] == source]
    assert fact in {c["fact"] for c in held}, held
    assert _states(cli) == states
    assert _decisions(cli) == decisions
    with unit_of_work(store.engine, now=parse_instant(AFTER)) as uow:
        audited = {
            entry.object_id
            for entry in uow.session.scalars(
                select(AuditEntry).where(AuditEntry.action == "conflict.hold")
            )
        }
    assert {str(c["id"]) for c in held} <= audited
