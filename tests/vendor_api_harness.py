"""Stand-ins for the vendors' APIs (test helper): one threaded loopback server that answers as
Fleet, Microsoft Graph (Intune) with Entra's token endpoint, Google's Directory API and Android
Management API with Google's token endpoint, and Jamf Pro, page by page, with the documented
payloads (the examples of tests/fixtures/sources/, their ids varied per record).

Every request is logged (method, path with its query, the bearer credential, start and end);
`fail(part, answer...)` makes the next requests whose path contains `part` answer those instead
(a 429 with Retry-After, a 503, a 500 for ever...). `delay` slows every answer, so that two
clients running at once would overlap in the log.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.proxy_harness import ThreadedServer, serve_http

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
FLEET_TOKEN = "fleet-api-token-s3cr3t"
INTUNE_SECRET = "intune-client-s3cr3t"
JAMF_SECRET = "jamf-client-s3cr3t"
ENTERPRISE = "LC02abcd12"
ADMIN = "it-admin@example.com"
ACCESS_TOKENS = {"entra": "at-graph", "google": "at-google", "jamf": "at-jamf"}


def _fixture(source: str, name: str) -> Any:
    return json.loads((FIXTURES / source / name).read_text())


# ── records, from the documented examples ───────────────────────────────────────────────────


def fleet_host(n: int) -> dict[str, Any]:
    host = copy.deepcopy(_fixture("fleet", "hosts_page.json")["hosts"][0])
    host.update(
        id=412 + n,
        uuid=f"6F1E0C2A-8B5D-4C77-9E21-3A0B5C7D{n:04X}",
        hardware_serial=f"C02ZK1AB{n:04d}",
        display_name=f"jdoe-mbp-{n}",
    )
    return host


def intune_device(n: int) -> dict[str, Any]:
    device = copy.deepcopy(_fixture("intune", "managed-devices.json")["value"][0])
    device.update(
        id=f"2f6f1a3e-5b7c-4d21-9f0a-0c1d2e3f{n:04x}",
        azureADDeviceId=f"c1a2b3c4-d5e6-47f8-9a0b-1c2d3e4f{n:04x}",
        easDeviceId=f"6F24CAD599A5BF1A690246B8C68F{n:04X}",
        deviceName=f"Jane's iPhone {n}",
    )
    return device


def intune_app() -> dict[str, Any]:
    return copy.deepcopy(_fixture("intune", "detected-apps.json")["value"][0])


def google_device(n: int) -> dict[str, Any]:
    device = copy.deepcopy(_fixture("google", "formats-page.json")["mobiledevices"][0])
    device.update(
        resourceId=f"AFiQxQ8xY2k1c3Rvb2-{n}",
        deviceId=f"b7c1e9a04f3d{n:04x}",
        serialNumber=f"R5CW30A{n:04d}",
    )
    return device


def amapi_device(n: int) -> dict[str, Any]:
    device = copy.deepcopy(_fixture("amapi", "formats-device.json"))
    device["name"] = f"enterprises/{ENTERPRISE}/devices/3a8f2c1b9d7e{n:04x}"
    device["hardwareInfo"]["serialNumber"] = f"39021FDH20{n:04d}"
    return device


def jamf_computer(n: int) -> dict[str, Any]:
    computer = copy.deepcopy(_fixture("jamf", "computers_inventory.json")["results"][0])
    computer.update(id=str(118 + n), udid=f"5E2B7F10-94C3-4C0D-8E6A-1B2C3D4E{n:04X}")
    return computer


def jamf_mobile(n: int) -> dict[str, Any]:
    """A `/api/v2/mobile-devices/detail` result, with the keys docs/sources/jamf.md reads."""
    return {
        "mobileDeviceId": str(500 + n),
        "deviceType": "iOS",
        "hardware": {"serialNumber": f"F2LXK0AA{n:04d}", "model": "iPhone 15"},
        "general": {
            "udid": f"00008110-000A1B2C3D4E{n:04X}",
            "displayName": f"Ana's iPhone {n}",
            "supervised": True,
            "lastInventoryUpdateDate": "2026-03-02T08:00:00.123Z",
        },
        "userAndLocation": {"realname": "Ana Martin", "email": "ana.martin@example.com"},
        "applications": [{"identifier": "us.zoom.videomeetings", "shortVersion": "6.3.1"}],
    }


# ── the server ──────────────────────────────────────────────────────────────────────────────


@dataclass
class Answer:
    status: int = 200
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Logged:
    method: str
    path: str  # with its query, as sent
    credential: str | None  # the bearer token, or the grant type of a token request
    started: float
    finished: float

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


@dataclass
class Records:
    """What each vendor lists; tests change them between runs."""

    fleet: list[dict[str, Any]] = field(default_factory=list)
    intune: list[dict[str, Any]] = field(default_factory=list)
    intune_apps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # app id → devices
    google: list[dict[str, Any]] = field(default_factory=list)
    amapi: list[dict[str, Any]] = field(default_factory=list)
    jamf_computers: list[dict[str, Any]] = field(default_factory=list)
    jamf_mobiles: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class VendorApi(ThreadedServer):
    records: Records = field(default_factory=Records)
    log: list[Logged] = field(default_factory=list)
    faults: list[tuple[str, Answer]] = field(default_factory=list)
    page_size: int = 2  # what the server pages by where the client does not say
    delay: float = 0.0
    fleet_tokens: set[str] = field(default_factory=lambda: {FLEET_TOKEN})
    assertions: list[dict[str, Any]] = field(default_factory=list)  # JWT claims received
    token_lifetime: int = 3600  # the access tokens' expires_in
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, part: str, *answers: Answer) -> None:
        """The next requests whose path contains `part` get these answers, one each."""
        with self.lock:
            self.faults += [(part, answer) for answer in answers]

    def gets(self, part: str = "") -> list[Logged]:
        return [r for r in self.log if r.method == "GET" and part in r.path]

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> Answer:
        with self.lock:
            for index, (part, answer) in enumerate(self.faults):
                if part in path:
                    del self.faults[index]
                    return answer
        parts = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if method == "POST":
            return self._token(parts.path, body)
        if not self._authorised(parts.path, headers.get("Authorization", "")):
            return Answer(401, {"error": {"code": "Unauthorized", "message": "bad credentials"}})
        return _route(self, parts.path, query)

    def _authorised(self, path: str, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer":
            return False
        if path.startswith("/api/v1/fleet/"):
            return token in self.fleet_tokens
        if path.startswith("/v1.0/"):
            return token == ACCESS_TOKENS["entra"]
        if path.startswith("/api/"):
            return token == ACCESS_TOKENS["jamf"]
        return token == ACCESS_TOKENS["google"]

    def _token(self, path: str, body: bytes) -> Answer:
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        kind = {"/entra/token": "entra", "/google/token": "google", "/api/oauth/token": "jamf"}
        if path not in kind:
            return Answer(404, {"error": "not_found"})
        if kind[path] == "google":
            claims = form["assertion"].split(".")[1]
            self.assertions.append(json.loads(base64.urlsafe_b64decode(claims + "==")))
        elif form.get("client_secret") not in (INTUNE_SECRET, JAMF_SECRET):
            return Answer(401, {"error": "invalid_client"})
        token = ACCESS_TOKENS[kind[path]]
        return Answer(200, {"access_token": token, "expires_in": self.token_lifetime})


def _slice(records: list[Any], start: int, size: int) -> tuple[list[Any], int | None]:
    """One page of records from `start`, and where the next page starts (None: this is the last)."""
    end = start + size
    return records[start:end], (end if end < len(records) else None)


def _route(api: VendorApi, path: str, query: dict[str, str]) -> Answer:
    records = api.records
    if path == "/api/v1/fleet/hosts":
        size = int(query["per_page"])
        return Answer(200, {"hosts": records.fleet[int(query["page"]) * size :][:size]})
    if path.startswith("/v1.0/deviceManagement/"):
        return _graph(api, path.removeprefix("/v1.0/deviceManagement/"), query)
    if path == "/admin/directory/v1/customer/my_customer/devices/mobile":
        return _google_page(api, records.google, "mobiledevices", query)
    if path == f"/v1/enterprises/{ENTERPRISE}/devices":
        return _google_page(api, records.amapi, "devices", query)
    if path in ("/api/v1/computers-inventory", "/api/v2/mobile-devices/detail"):
        listed = records.jamf_computers if "computers" in path else records.jamf_mobiles
        size = int(query["page-size"])
        page = listed[int(query["page"]) * size :][:size]
        return Answer(200, {"totalCount": len(listed), "results": page})
    return Answer(404, {"error": {"code": "NotFound", "message": path}})


def _google_page(api: VendorApi, listed: list[Any], key: str, query: dict[str, str]) -> Answer:
    start = int(query.get("pageToken", "0").removeprefix("tok-"))
    page, following = _slice(listed, start, api.page_size)
    payload: dict[str, Any] = {key: page} if page else {}  # Google leaves out an empty list
    if key == "mobiledevices":
        payload["kind"] = "admin#directory#mobiledevices"
    if following is not None:
        payload["nextPageToken"] = f"tok-{following}"
    return Answer(200, payload)


def _graph(api: VendorApi, collection: str, query: dict[str, str]) -> Answer:
    records = api.records
    if collection == "managedDevices":
        listed, context = records.intune, "deviceManagement/managedDevices"
    elif collection == "detectedApps":
        listed, context = _apps(records), "deviceManagement/detectedApps"
    elif collection.startswith("detectedApps/") and collection.endswith("/managedDevices"):
        app_id = collection.split("/")[1]
        listed = records.intune_apps.get(app_id, [])
        context = f"deviceManagement/detectedApps('{app_id}')/managedDevices"
    else:
        return Answer(404, {"error": {"code": "ResourceNotFound", "message": collection}})
    start = int(query.get("$skiptoken", "0"))
    page, following = _slice(listed, start, api.page_size)
    payload: dict[str, Any] = {
        "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#{context}",
        "value": page,
    }
    if following is not None:
        payload["@odata.nextLink"] = (
            f"{api.url}/v1.0/deviceManagement/{collection}?$skiptoken={following}"
        )
    return Answer(200, payload)


def _apps(records: Records) -> list[dict[str, Any]]:
    apps = []
    for app_id, devices in records.intune_apps.items():
        app = intune_app()
        app.update(id=app_id, deviceCount=len(devices))
        apps.append(app)
    return apps


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def _serve(self) -> None:
        api: VendorApi = self.server.api
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if api.delay:
            time.sleep(api.delay)
        answer = api.answer(self.command, self.path, self.headers, body)
        data = json.dumps(answer.payload).encode() if answer.payload is not None else b""
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        credential = self.headers.get("Authorization", "").partition(" ")[2] or None
        if self.command == "POST":
            credential = parse_qs(body.decode()).get("grant_type", [None])[-1]
        with api.lock:
            api.log.append(Logged(self.command, self.path, credential, started, time.monotonic()))

    do_GET = do_POST = _serve  # noqa: N815 - the handler's names

    def log_message(self, format: str, *args: object) -> None:
        return


def start_vendor_api() -> VendorApi:
    server, thread = serve_http(_Handler, "vendor-api")
    api = VendorApi(server=server, thread=thread)
    server.api = api  # type: ignore[attr-defined]
    return api


# ── settings pointing at it ─────────────────────────────────────────────────────────────────

_KEY: list[str] = []


def _private_key() -> str:
    if not _KEY:  # one key for the session: generating RSA keys is slow
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _KEY.append(pem.decode())
    return _KEY[0]


def service_account_file(api: VendorApi, directory: Path) -> Path:
    path = directory / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "appwarden-sync@example-project.iam.gserviceaccount.com",
                "private_key_id": "k1",
                "private_key": _private_key(),
                "token_uri": f"{api.url}/google/token",
            }
        )
    )
    return path


def sync_settings(api: VendorApi, directory: Path) -> dict[str, str]:
    """Every source's sync settings, pointing at `api` (as APPWARDEN_* environment values)."""
    account = str(service_account_file(api, directory))
    values = {
        "fleet_url": api.url,
        "fleet_api_token": FLEET_TOKEN,
        "fleet_page_size": "2",
        "intune_tenant_id": "contoso.onmicrosoft.com",
        "intune_client_id": "11111111-2222-3333-4444-555555555555",
        "intune_client_secret": INTUNE_SECRET,
        "intune_graph_url": api.url,
        "intune_token_url": f"{api.url}/entra/token",
        "google_sync_service_account_file": account,
        "google_sync_admin_subject": ADMIN,
        "google_api_base": api.url,
        "amapi_service_account_file": account,
        "amapi_enterprise": ENTERPRISE,
        "amapi_api_url": api.url,
        "amapi_page_size": "2",
        "jamf_url": api.url,
        "jamf_client_id": "appwarden-sync",
        "jamf_client_secret": JAMF_SECRET,
        "jamf_page_size": "2",
        "sync_backoff_seconds": "0.01",
        "sync_max_backoff_seconds": "0.02",
    }
    return {f"APPWARDEN_{name.upper()}": value for name, value in values.items()}


def fill(api: VendorApi, count: int) -> None:
    """`count` records for every vendor (Intune: each device detected with the app)."""
    records = api.records
    records.fleet = [fleet_host(n) for n in range(count)]
    records.intune = [intune_device(n) for n in range(count)]
    records.intune_apps = {intune_app()["id"]: list(records.intune)}
    records.google = [google_device(n) for n in range(count)]
    records.amapi = [amapi_device(n) for n in range(count)]
    records.jamf_computers = [jamf_computer(n) for n in range(count)]
    records.jamf_mobiles = [jamf_mobile(n) for n in range(count)]
