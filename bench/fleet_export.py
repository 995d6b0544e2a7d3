"""A synthetic Fleet hosts page (`GET /api/v1/fleet/hosts?populate_software=...`), as the Fleet
REST API returns it, for the import benchmark: `fleet_hosts_page(count, start)` builds hosts
`start .. start+count-1`, the same for the same arguments (every value comes from a random
generator seeded by `seed` and the host's number, so pages can be built in any order).

The mix is 50% macOS, 30% Windows and 20% Linux (Ubuntu and RHEL). Every host has `apps_per_host`
software items from its platform's pool (plus Chrome extensions on most), an owner from
`device_mapping`, a serial and a UUID; every fifth host has TikTok (macOS bundle id, or its
Microsoft Store / Linux stand-ins) so a policy banning it finds violators.
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Final

SEED: Final = 20260304
SOFTWARE_UPDATED_AT: Final = "2020-07-10T15:00:00Z"
SEEN_TIME: Final = "2020-07-11T17:59:00Z"
CHROME_EXTENSIONS: Final = (
    ("cjpalhdlnbpafiamejdnhcphjbkeiagm", "uBlock Origin", "1.62.0"),
    ("nngceckbapebfimnlniiiahkandclblb", "Bitwarden", "2025.2.0"),
    ("ghbmnnjooekpmoecnnnilnnbdlolhkhi", "Google Docs Offline", "1.89.1"),
)
TIKTOK_MAC: Final = ("TikTok.app", "com.zhiliaoapp.musically", "38.4.0")


def _mac_pool(rng: random.Random, size: int) -> list[dict[str, Any]]:
    return [
        {
            "id": 10_000 + n,
            "name": f"Tool {n}.app",
            "version": f"{rng.randint(1, 30)}.{rng.randint(0, 9)}",
            "source": "apps",
            "bundle_identifier": f"com.vendor{n % 97}.tool{n}",
            "generated_cpe": "",
            "vulnerabilities": None,
            "installed_paths": [f"/Applications/Tool {n}.app"],
        }
        for n in rng.sample(range(5_000), size)
    ]


def _windows_pool(rng: random.Random, size: int) -> list[dict[str, Any]]:
    items = []
    for n in rng.sample(range(5_000), size):
        code = "" if n % 3 else "{" + str(uuid.UUID(int=rng.getrandbits(128))).upper() + "}"
        items.append(
            {
                "id": 20_000 + n,
                "name": f"Program {n}",
                "version": f"{rng.randint(1, 30)}.{rng.randint(0, 9)}.{rng.randint(0, 999)}",
                "source": "programs",
                "vendor": f"Vendor {n % 89} Ltd.",
                "upgrade_code": code,
                "generated_cpe": "",
                "vulnerabilities": None,
            }
        )
    return items


def _linux_pool(rng: random.Random, size: int, source: str) -> list[dict[str, Any]]:
    return [
        {
            "id": 30_000 + n,
            "name": f"pkg-{n}",
            "version": f"{rng.randint(0, 9)}.{rng.randint(0, 99)}-{rng.randint(1, 5)}",
            "source": source,
            "arch": "amd64" if source == "deb_packages" else "x86_64",
            "release": "" if source == "deb_packages" else f"{rng.randint(1, 9)}.el9",
            "vendor": "",
            "generated_cpe": "",
            "vulnerabilities": None,
        }
        for n in rng.sample(range(20_000), size)
    ]


def _extensions(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "id": 40_000 + k,
            "name": name,
            "version": version,
            "source": "chrome_extensions",
            "extension_id": ext_id,
            "browser": "chrome",
            "extension_for": "chrome",
        }
        for k, (ext_id, name, version) in enumerate(CHROME_EXTENSIONS)
        if rng.random() < 0.7
    ]


def _platform(i: int) -> tuple[str, str, str, str]:
    """(platform, platform_like, os_version, hardware_model) of host i."""
    slot = i % 10
    if slot < 5:
        model = "MacBookPro18,3" if slot < 4 else "Macmini9,1"
        return "darwin", "darwin", "macOS 15.3", model
    if slot < 8:
        return "windows", "windows", "Windows 11 Pro 24H2", "Latitude 7440"
    if slot == 8:
        return "ubuntu", "debian", "Ubuntu 24.04.1 LTS", "ThinkPad X1 Carbon Gen 11"
    return "rhel", "rhel", "Red Hat Enterprise Linux 9.5", "PowerEdge R650"


def _software(rng: random.Random, platform: str, apps: int, tiktok: bool) -> list[dict[str, Any]]:
    if platform == "darwin":
        items = _mac_pool(rng, apps)
        if tiktok:
            name, bundle_id, version = TIKTOK_MAC
            items.append(
                {"id": 9031, "name": name, "version": version, "source": "apps"}
                | {"bundle_identifier": bundle_id, "installed_paths": [f"/Applications/{name}"]}
            )
    elif platform == "windows":
        items = _windows_pool(rng, apps)
        if tiktok:
            items.append(
                {"id": 9032, "name": "TikTok", "version": "1.0.0", "source": "programs"}
                | {"vendor": "TikTok Pte. Ltd.", "upgrade_code": ""}
            )
    else:
        items = _linux_pool(rng, apps, "deb_packages" if platform == "ubuntu" else "rpm_packages")
    return items + _extensions(rng)


def fleet_host(i: int, *, apps_per_host: int = 40, seed: int = SEED) -> dict[str, Any]:
    """Host number i of the synthetic fleet, as one element of a Fleet hosts page."""
    rng = random.Random(seed * 1_000_003 + i)  # noqa: S311 - test data, not secrets
    platform, platform_like, os_version, model = _platform(i)
    host_uuid = str(uuid.UUID(int=rng.getrandbits(128))).upper()
    return {
        "id": i + 1,
        "created_at": "2020-01-06T10:00:00Z",
        "updated_at": SEEN_TIME,
        "detail_updated_at": SEEN_TIME,
        "seen_time": SEEN_TIME,
        "software_updated_at": SOFTWARE_UPDATED_AT,
        "hostname": f"host{i:06d}.bench.example.com",
        "display_name": f"host{i:06d}",
        "computer_name": f"host{i:06d}",
        "uuid": host_uuid,
        "platform": platform,
        "platform_like": platform_like,
        "os_version": os_version,
        "osquery_version": "5.14.1",
        "hardware_vendor": "Apple Inc." if platform == "darwin" else "Dell Inc.",
        "hardware_model": model,
        "hardware_serial": f"BF{i:08d}",
        "team_id": 1 + i % 4,
        "team_name": ("Sales", "Engineering", "Support", "Finance")[i % 4],
        "status": "online",
        "device_mapping": [{"email": f"fleet{i:06d}@bench.example.com", "source": "idp"}],
        "mdm": {"enrollment_status": "On (automatic)", "name": "Fleet"},
        "software": _software(rng, platform, apps_per_host, tiktok=i % 5 == 0),
    }


def fleet_hosts_page(
    count: int, start: int = 0, apps_per_host: int = 40, seed: int = SEED
) -> dict[str, Any]:
    """A `{"hosts": [...]}` page of hosts start .. start+count-1."""
    return {
        "hosts": [
            fleet_host(i, apps_per_host=apps_per_host, seed=seed)
            for i in range(start, start + count)
        ]
    }
