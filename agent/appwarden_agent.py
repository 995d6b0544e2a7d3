#!/usr/bin/env python3
"""appwarden-agent: reports the apps installed on this computer to an appwarden server, and
answers its targeted checks. One file, standard library only, Python 3.9 or later.

    appwarden-agent enroll --server https://appwarden.example.com --code ABCD-EFGH-JKLM-NPQR
    appwarden-agent report
    appwarden-agent check --policy tiktok-mobile-email

It shares nothing with the server but the wire formats (docs/targeted-check.md there): the
native inventory format `appwarden.inventory/v1`, the request signature and the manifest and
answer MACs (HMAC-SHA256 with the key the server gave at enrolment). The key lives in the config
file, readable by its owner only (0600).
"""

from __future__ import annotations

import argparse
import configparser
import datetime as _dt
import glob
import hashlib
import hmac
import json
import os
import plistlib
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple

FORMAT = "appwarden.inventory/v1"
SOURCE = "agent"
REQUEST_LABEL = "appwarden-request/v1"
MANIFEST_LABEL = b"appwarden-manifest/v1\n"
ANSWER_LABEL = b"appwarden-answer/v1\n"
TIMEOUT_SECONDS = 30

App = Dict[str, str]  # {"namespace", "value", optional "version", "name"}


# ── the wire format ─────────────────────────────────────────────────────────────────────────


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def now_rfc3339(clock: Optional[Callable[[], _dt.datetime]] = None) -> str:
    moment = clock() if clock else _dt.datetime.now(_dt.timezone.utc)
    # With microseconds: each answer's time must be later than the device's previous one.
    return moment.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def request_signature(key: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    text = "\n".join(
        (REQUEST_LABEL, method.upper(), path, timestamp, hashlib.sha256(body).hexdigest())
    )
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def manifest_mac(key: bytes, manifest: Dict[str, Any]) -> str:
    return hmac.new(key, MANIFEST_LABEL + canonical(manifest), hashlib.sha256).hexdigest()


def answer_mac(key: bytes, answer: Dict[str, Any]) -> str:
    return hmac.new(key, ANSWER_LABEL + canonical(answer), hashlib.sha256).hexdigest()


# ── collectors ──────────────────────────────────────────────────────────────────────────────


def dpkg_apps(status_path: str = "/var/lib/dpkg/status") -> List[App]:
    """Installed Debian packages: stanzas of /var/lib/dpkg/status whose Status ends 'installed'."""
    try:
        with open(status_path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return []
    apps = []
    for stanza in text.split("\n\n"):
        fields: Dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("package") and fields.get("status", "").endswith(" installed"):
            apps.append(_app("deb_package", fields["package"], fields.get("version")))
    return apps


def _run(command: List[str]) -> Optional[str]:
    """A command's output, or None when it is missing or fails (that collector is skipped)."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def rpm_apps(run: Callable[[List[str]], Optional[str]] = _run) -> Optional[List[App]]:
    out = run(["rpm", "-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"])
    if out is None:
        return None
    return [_app("rpm_package", *_two(line)) for line in out.splitlines() if line.strip()]


def flatpak_apps(run: Callable[[List[str]], Optional[str]] = _run) -> Optional[List[App]]:
    out = run(["flatpak", "list", "--app", "--columns=application,version"])
    if out is None:
        return None
    return [_app("flatpak_app", *_two(line)) for line in out.splitlines() if line.strip()]


def snap_apps(run: Callable[[List[str]], Optional[str]] = _run) -> Optional[List[App]]:
    out = run(["snap", "list"])
    if out is None:
        return None
    apps = []
    for line in out.splitlines()[1:]:  # the first line is the header
        parts = line.split()
        if len(parts) >= 2:
            apps.append(_app("snap_package", parts[0], parts[1]))
    return apps


def _two(line: str) -> Tuple[str, Optional[str]]:
    name, _, version = line.strip().partition("\t")
    return name.strip(), (version.strip() or None)


def _app(
    namespace: str, value: str, version: Optional[str] = None, name: Optional[str] = None
) -> App:
    app = {"namespace": namespace, "value": value}
    if version:
        app["version"] = version
    if name:
        app["name"] = name
    return app


def macos_apps(roots: Iterable[str]) -> List[App]:
    """Bundles' Info.plist under each root (`*.app`, one level of folders below too)."""
    apps = []
    seen = set()
    for root in roots:
        for pattern in ("*.app", "*/*.app"):
            for bundle in sorted(glob.glob(os.path.join(root, pattern))):
                info = _plist(os.path.join(bundle, "Contents", "Info.plist"))
                bundle_id = info.get("CFBundleIdentifier") if info else None
                if not isinstance(bundle_id, str) or bundle_id in seen:
                    continue
                seen.add(bundle_id)
                version = info.get("CFBundleShortVersionString")
                name = info.get("CFBundleName") or os.path.basename(bundle)[:-4]
                apps.append(
                    _app(
                        "apple_bundle_id",
                        bundle_id,
                        version if isinstance(version, str) else None,
                        name if isinstance(name, str) else None,
                    )
                )
    return apps


def _plist(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, "rb") as handle:
            value = plistlib.load(handle)
    except (OSError, plistlib.InvalidFileException, ValueError):
        return None
    return value if isinstance(value, dict) else None


def macos_roots(home: str = os.path.expanduser("~"), base: str = "/") -> List[str]:
    users = sorted(glob.glob(os.path.join(base, "Users", "*", "Applications")))
    return [os.path.join(base, "Applications"), os.path.join(home, "Applications"), *users]


class RegistryReader(Protocol):
    """What the Windows collector reads: the tests pass a fake, Windows passes `WinRegistry`."""

    def subkeys(self, hive: str, path: str) -> List[str]: ...

    def values(self, hive: str, path: str) -> Dict[str, Any]: ...


UNINSTALL_KEYS = (
    ("HKLM", r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"),
    ("HKLM", r"SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall"),
    ("HKCU", r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"),
)
APPX_KEY = (
    "HKCU",
    r"SOFTWARE\Classes\Local Settings\Software\Microsoft\Windows\CurrentVersion\AppModel"
    r"\Repository\Packages",
)


def windows_apps(registry: RegistryReader) -> List[App]:
    """Uninstall keys (program name and publisher; the product code when the key is one) and
    AppX packages (their package family name: the name before the version, plus the publisher
    id after the last underscore)."""
    apps = []
    for hive, path in UNINSTALL_KEYS:
        for sub in registry.subkeys(hive, path):
            values = registry.values(hive, path + "\\" + sub)
            name = values.get("DisplayName")
            if not isinstance(name, str) or not name.strip():
                continue
            publisher = values.get("Publisher") if isinstance(values.get("Publisher"), str) else ""
            version = values.get("DisplayVersion")
            version = version if isinstance(version, str) else None
            apps.append(_app("windows_program", f"{name}|{publisher}", version, name))
            if sub.startswith("{") and sub.endswith("}") and len(sub) == 38:
                apps.append(_app("windows_product_code", sub, version, name))
    hive, path = APPX_KEY
    for full_name in registry.subkeys(hive, path):
        family = package_family(full_name)
        if family:
            apps.append(_app("windows_package_family", family, _appx_version(full_name)))
    return apps


def package_family(full_name: str) -> Optional[str]:
    """`Name_Version_Arch_ResourceId_PublisherId` → `Name_PublisherId`."""
    parts = full_name.split("_")
    if len(parts) != 5 or not parts[0] or not parts[4]:
        return None
    return f"{parts[0]}_{parts[4]}"


def _appx_version(full_name: str) -> Optional[str]:
    parts = full_name.split("_")
    return parts[1] if len(parts) == 5 else None


class WinRegistry:  # pragma: no cover - only on Windows
    def __init__(self) -> None:
        import winreg

        self._winreg = winreg
        self._hives = {"HKLM": winreg.HKEY_LOCAL_MACHINE, "HKCU": winreg.HKEY_CURRENT_USER}

    def subkeys(self, hive: str, path: str) -> List[str]:
        try:
            with self._winreg.OpenKey(self._hives[hive], path) as key:
                count = self._winreg.QueryInfoKey(key)[0]
                return [self._winreg.EnumKey(key, i) for i in range(count)]
        except OSError:
            return []

    def values(self, hive: str, path: str) -> Dict[str, Any]:
        try:
            with self._winreg.OpenKey(self._hives[hive], path) as key:
                count = self._winreg.QueryInfoKey(key)[1]
                return {
                    name: value
                    for name, value, _ in (self._winreg.EnumValue(key, i) for i in range(count))
                }
        except OSError:
            return {}


def linux_apps() -> List[App]:
    apps = dpkg_apps()
    for collect in (rpm_apps, flatpak_apps, snap_apps):
        found = collect()
        if found:
            apps.extend(found)
    return apps


def this_platform() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return "unknown"


def collect(platform: Optional[str] = None) -> List[App]:
    platform = platform or this_platform()
    if platform == "linux":
        return linux_apps()
    if platform == "macos":
        return macos_apps(macos_roots())
    if platform == "windows":  # pragma: no cover - only on Windows
        return windows_apps(WinRegistry())
    return []


def dedupe(apps: Iterable[App]) -> List[App]:
    seen = {}
    for app in apps:
        seen.setdefault((app["namespace"], app["value"]), app)
    return list(seen.values())


def inventory_document(agent_id: str, apps: List[App], observed_at: str) -> Dict[str, Any]:
    """The native report of this device: a full inventory, named by its agent id only."""
    return {
        "format": FORMAT,
        "source": SOURCE,
        "devices": [
            {
                "identifiers": [{"namespace": "agent_id", "value": agent_id}],
                "report": {
                    "evidence_kind": "inventory",
                    "observed_at": observed_at,
                    "apps": dedupe(apps),
                },
            }
        ],
    }


# ── targeted checks ─────────────────────────────────────────────────────────────────────────


def present_lines(identifiers: Iterable[str], apps: Iterable[App]) -> List[str]:
    """The manifest lines this device has: exact `namespace:value` matches, case-insensitively
    (the server compares match keys; a manifest never carries patterns)."""
    have = {(a["namespace"], a["value"].casefold()) for a in apps}
    present = []
    for line in identifiers:
        namespace, _, value = line.partition(":")
        if (namespace, value.casefold()) in have:
            present.append(line)
    return sorted(present)


def make_answer(
    key: bytes, manifest: Dict[str, Any], present: List[str], at: str
) -> Dict[str, Any]:
    asked = set(manifest["identifiers"])
    answer = {
        "policy": manifest["policy"],
        "manifest_hash": hashlib.sha256(canonical(manifest)).hexdigest(),
        "device_id": manifest["device_id"],
        "nonce": manifest["nonce"],
        "at": at,
        "present": sorted(p for p in present if p in asked),
    }
    return {"answer": answer, "mac": answer_mac(key, answer)}


# ── the client ──────────────────────────────────────────────────────────────────────────────


class AgentError(Exception):
    pass


class Config:
    """`[agent]` server, agent_id, device_key: written 0600, since the key proves who answers."""

    def __init__(self, server: str, agent_id: str, device_key: str) -> None:
        self.server, self.agent_id, self.device_key = server.rstrip("/"), agent_id, device_key

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.device_key)

    @classmethod
    def load(cls, path: str) -> "Config":
        parser = configparser.ConfigParser()
        if not parser.read(path):
            raise AgentError(f"{path}: no configuration; run `appwarden-agent enroll` first")
        try:
            section = parser["agent"]
            return cls(section["server"], section["agent_id"], section["device_key"])
        except KeyError as exc:
            raise AgentError(f"{path}: missing {exc}") from None

    def save(self, path: str) -> None:
        parser = configparser.ConfigParser()
        parser["agent"] = {
            "server": self.server,
            "agent_id": self.agent_id,
            "device_key": self.device_key,
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.chmod(path, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            parser.write(handle)


def _http(method: str, url: str, body: bytes, headers: Dict[str, str]) -> Dict[str, Any]:
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise AgentError(f"{url}: the server must be an https:// (or http://) address")
    data = body if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - checked above
    request.add_header("Content-Type", "application/json")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            result: Dict[str, Any] = json.loads(response.read().decode("utf-8"))
            return result
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise AgentError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise AgentError(f"{method} {url}: {exc.reason}") from None


def signed(config: Config, method: str, path: str, body: bytes = b"") -> Dict[str, Any]:
    timestamp = now_rfc3339()
    headers = {
        "X-Appwarden-Agent": config.agent_id,
        "X-Appwarden-Timestamp": timestamp,
        "X-Appwarden-Signature": request_signature(config.key, method, path, timestamp, body),
    }
    return _http(method, config.server + path, body, headers)


def enroll(server: str, code: str, config_path: str) -> Config:
    answer = _http("POST", server.rstrip("/") + "/agent/enroll", canonical({"code": code}), {})
    config = Config(server, answer["agent_id"], answer["device_key"])
    config.save(config_path)
    return config


def report(config: Config, platform: Optional[str] = None) -> Dict[str, Any]:
    body = canonical(inventory_document(config.agent_id, collect(platform), now_rfc3339()))
    return signed(config, "POST", "/agent/report", body)


def check(config: Config, policy: str, platform: Optional[str] = None) -> Dict[str, Any]:
    """Fetch the manifest, verify the server's MAC, answer which of its lines are present."""
    path = "/checks/manifest?" + urllib.parse.urlencode({"policy": policy})
    issued = signed(config, "GET", path)
    manifest = issued.get("manifest")
    if not isinstance(manifest, dict) or not hmac.compare_digest(
        manifest_mac(config.key, manifest), str(issued.get("mac"))
    ):
        raise AgentError("the manifest's MAC does not verify: not answering")
    present = present_lines(manifest["identifiers"], collect(platform))
    answer = make_answer(config.key, manifest, present, now_rfc3339())
    return _http("POST", config.server + "/checks/answer", canonical(answer), {})


def default_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "appwarden-agent", "agent.ini")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="appwarden-agent", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=default_config_path(), help="the config file")
    commands = parser.add_subparsers(dest="command", required=True)
    enrol = commands.add_parser("enroll", help="enrol this device with a one-time code")
    enrol.add_argument("--server", required=True)
    enrol.add_argument("--code", required=True)
    commands.add_parser("report", help="send this device's installed apps")
    checking = commands.add_parser("check", help="answer a policy's targeted check")
    checking.add_argument("--policy", required=True)
    commands.add_parser("list", help="print the apps this device would report (sends nothing)")
    args = parser.parse_args(argv)
    try:
        if args.command == "enroll":
            config = enroll(args.server, args.code, args.config)
            result: Any = {"agent_id": config.agent_id, "config": args.config}
        elif args.command == "list":
            result = dedupe(collect())
        elif args.command == "report":
            result = report(Config.load(args.config))
        else:
            result = check(Config.load(args.config), args.policy)
    except AgentError as exc:
        print(f"appwarden-agent: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
