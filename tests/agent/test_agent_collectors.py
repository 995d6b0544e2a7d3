"""The agent's collectors and wire format, without a server: the Linux collector for real on this
machine (dpkg), macOS bundles on a fixture tree, Windows through a fake registry reader, the
package-manager commands through a fake runner; its signatures byte for byte against the
server's, and its config file readable by its owner only."""

from __future__ import annotations

import plistlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from tests.agent_harness import load_agent

from appwarden.devices import signing

agent = load_agent()


def test_the_dpkg_collector_lists_what_dpkg_says_is_installed():
    if shutil.which("dpkg-query") is None:
        pytest.fail("this machine has no dpkg: the Linux collector cannot be run for real")
    listed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Status}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {
        line.split("\t")[0].split(":")[0]
        for line in listed.splitlines()
        if line.endswith("install ok installed")
    }
    found = agent.dpkg_apps()
    assert {a["namespace"] for a in found} == {"deb_package"}
    assert {a["value"] for a in found} == installed
    assert "dpkg" in installed
    assert all(a.get("version") for a in found)


def test_dpkg_stanzas_not_installed_are_left_out(tmp_path):
    status = tmp_path / "status"
    status.write_text(
        "Package: kept\nStatus: install ok installed\nVersion: 1.0\nDescription: x\n more\n\n"
        "Package: removed\nStatus: deinstall ok config-files\nVersion: 2.0\n\n"
    )
    assert agent.dpkg_apps(str(status)) == [
        {"namespace": "deb_package", "value": "kept", "version": "1.0"}
    ]
    assert agent.dpkg_apps(str(tmp_path / "missing")) == []


def _bundle(root: Path, name: str, info: dict) -> None:
    contents = root / f"{name}.app" / "Contents"
    contents.mkdir(parents=True)
    (contents / "Info.plist").write_bytes(plistlib.dumps(info))


def test_macos_bundles_are_read_from_every_applications_folder(tmp_path):
    _bundle(
        tmp_path / "Applications",
        "TikTok",
        {
            "CFBundleIdentifier": "com.zhiliaoapp.musically",
            "CFBundleShortVersionString": "38.4.0",
            "CFBundleName": "TikTok",
        },
    )
    _bundle(
        tmp_path / "Applications" / "Utilities",
        "Console",
        {"CFBundleIdentifier": "com.apple.Console"},
    )
    _bundle(
        tmp_path / "Users" / "dave" / "Applications", "Zoom", {"CFBundleIdentifier": "us.zoom.xos"}
    )
    _bundle(tmp_path / "Applications", "Broken", {"CFBundleName": "no identifier"})
    (tmp_path / "Applications" / "Junk.app" / "Contents").mkdir(parents=True)
    (tmp_path / "Applications" / "Junk.app" / "Contents" / "Info.plist").write_bytes(b"not a plist")
    roots = agent.macos_roots(home=str(tmp_path / "nobody"), base=str(tmp_path))
    apps = agent.macos_apps(roots)
    assert apps == [
        {
            "namespace": "apple_bundle_id",
            "value": "com.zhiliaoapp.musically",
            "version": "38.4.0",
            "name": "TikTok",
        },
        {"namespace": "apple_bundle_id", "value": "com.apple.Console", "name": "Console"},
        {"namespace": "apple_bundle_id", "value": "us.zoom.xos", "name": "Zoom"},
    ]


class FakeRegistry:
    def __init__(self, keys: dict[tuple[str, str], dict]) -> None:
        self.keys = keys

    def subkeys(self, hive: str, path: str) -> list[str]:
        prefix = path + "\\"
        return sorted(
            {
                p[len(prefix) :].split("\\")[0]
                for h, p in self.keys
                if h == hive and p.startswith(prefix)
            }
        )

    def values(self, hive: str, path: str) -> dict:
        return self.keys.get((hive, path), {})


def test_windows_uninstall_keys_and_appx_packages_through_a_reader():
    uninstall = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"
    appx = agent.APPX_KEY[1]
    registry = FakeRegistry(
        {
            ("HKLM", uninstall + r"\{2A1B0C3D-0000-4E5F-8A9B-0C1D2E3F4A5B}"): {
                "DisplayName": "Zoom Workplace",
                "Publisher": "Zoom Communications, Inc.",
                "DisplayVersion": "6.3.6",
            },
            ("HKCU", uninstall + r"\TikTok"): {"DisplayName": "TikTok", "Publisher": "TikTok Ltd."},
            ("HKLM", uninstall + r"\NoName"): {"Publisher": "nobody"},
            ("HKCU", appx + r"\BytedancePte.Ltd.TikTok_1.0.3.0_x64__6yccndn6064se"): {},
            ("HKCU", appx + r"\not-a-full-name"): {},
        }
    )
    assert agent.windows_apps(registry) == [
        {
            "namespace": "windows_program",
            "value": "Zoom Workplace|Zoom Communications, Inc.",
            "version": "6.3.6",
            "name": "Zoom Workplace",
        },
        {
            "namespace": "windows_product_code",
            "value": "{2A1B0C3D-0000-4E5F-8A9B-0C1D2E3F4A5B}",
            "version": "6.3.6",
            "name": "Zoom Workplace",
        },
        {"namespace": "windows_program", "value": "TikTok|TikTok Ltd.", "name": "TikTok"},
        {
            "namespace": "windows_package_family",
            "value": "BytedancePte.Ltd.TikTok_6yccndn6064se",
            "version": "1.0.3.0",
        },
    ]


def test_rpm_flatpak_and_snap_output_is_parsed_and_a_missing_tool_skipped():
    outputs = {
        "rpm": "firefox\t128.0-1.fc40\nbash\t5.2-3\n",
        "flatpak": "org.mozilla.firefox\t128.0\ncom.zhiliaoapp.TikTok\t\n",
        "snap": "Name  Version  Rev  Tracking  Publisher  Notes\ntiktok-unofficial  1.2  7  latest  x  -\n",
    }

    def run(command: list[str]) -> str | None:
        return outputs.get(command[0])

    assert agent.rpm_apps(run) == [
        {"namespace": "rpm_package", "value": "firefox", "version": "128.0-1.fc40"},
        {"namespace": "rpm_package", "value": "bash", "version": "5.2-3"},
    ]
    assert agent.flatpak_apps(run) == [
        {"namespace": "flatpak_app", "value": "org.mozilla.firefox", "version": "128.0"},
        {"namespace": "flatpak_app", "value": "com.zhiliaoapp.TikTok"},
    ]
    assert agent.snap_apps(run) == [
        {"namespace": "snap_package", "value": "tiktok-unofficial", "version": "1.2"}
    ]
    assert agent.rpm_apps(lambda command: None) is None


def test_the_agent_signs_the_same_bytes_as_the_server_checks():
    key = signing.derive_key(b"s" * 32, "ag_0123")
    body = b'{"format":"appwarden.inventory/v1"}'
    args = ("POST", "/agent/report", "2020-07-11T19:00:00Z", body)
    assert agent.request_signature(key, *args) == signing.request_mac(key, *args)
    manifest = {"policy": "p", "version": 1, "identifiers": ["deb_package:é"], "nonce": "n"}
    assert agent.manifest_mac(key, manifest) == signing.manifest_mac(key, manifest)
    answer = agent.make_answer(key, manifest | {"device_id": "ag_0123"}, [], "2020-07-11T19:00:00Z")
    assert answer["answer"]["manifest_hash"] == signing.manifest_hash(
        manifest | {"device_id": "ag_0123"}
    )
    assert answer["mac"] == signing.answer_mac(key, answer["answer"])


def test_present_lines_are_exact_matches_from_the_manifest_only():
    apps = [
        {"namespace": "deb_package", "value": "DPKG"},
        {"namespace": "deb_package", "value": "vim"},
    ]
    asked = ["deb_package:dpkg", "deb_package:tiktok"]
    assert agent.present_lines(asked, apps) == ["deb_package:dpkg"]


def test_the_config_file_keeps_the_key_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "conf" / "agent.ini"
    agent.Config("https://aw.example.com/", "ag_1", "00" * 32).save(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = agent.Config.load(str(path))
    assert (loaded.server, loaded.agent_id, loaded.key) == (
        "https://aw.example.com",
        "ag_1",
        bytes(32),
    )
    with pytest.raises(agent.AgentError, match="enroll"):
        agent.Config.load(str(tmp_path / "none.ini"))
