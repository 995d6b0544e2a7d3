"""Each connector against a stand-in of its vendor's API on loopback, through the same httpx
client code production uses: every page to the end of every collection, each page's bytes
exactly as served, the documented query, the least-privilege credentials, and the shared retry
behaviour (429 + Retry-After, 503, 5xx backoff, bounded attempts) with an injected sleep."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from tests.vendor_api_harness import (
    ADMIN,
    FLEET_TOKEN,
    INTUNE_SECRET,
    JAMF_SECRET,
    Answer,
    VendorApi,
    fill,
    start_vendor_api,
    sync_settings,
)

from appwarden.connectors import Page
from appwarden.connectors.client import ConnectorError
from appwarden.connectors.registry import SYNC_SOURCES, Runtime, connector_for
from appwarden.errors import InvalidInput
from appwarden.settings import Settings

# The path of each source's second page of devices (what a fault is aimed at).
SECOND_PAGE = {
    "fleet": "page=1&",
    "intune": "deviceManagement/managedDevices?$skiptoken=2",
    "google": "pageToken=tok-2",
    "amapi": "pageToken=tok-2",
    "jamf": "computers-inventory?section=GENERAL&section=APPLICATIONS&section=USER_AND_LOCATION"
    "&section=HARDWARE&sort=id%3Aasc&page=1&",
}

# Pages of one run over 5 records per vendor, 2 per page (Fleet ends on an empty page; Intune
# crawls devices, the app list, then the app's devices; Jamf computers then mobile devices).
PAGES = {"fleet": 4, "intune": 7, "google": 3, "amapi": 3, "jamf": 6}


@pytest.fixture
def api() -> Iterator[VendorApi]:
    with start_vendor_api() as server:
        fill(server, 5)
        yield server


@pytest.fixture
def settings(api, tmp_path, monkeypatch) -> Settings:
    for name, value in sync_settings(api, tmp_path).items():
        monkeypatch.setenv(name, value)
    return Settings()


class Run:
    """A connector's pages, with the waits it asked for."""

    def __init__(self, settings: Settings, source: str, *, wall: float | None = None) -> None:
        self.sleeps: list[float] = []
        self.http = httpx.Client()
        runtime = Runtime(self.http, sleep=self.sleeps.append, jitter=lambda: 0.5)
        if wall is not None:
            runtime = Runtime(
                self.http, sleep=self.sleeps.append, jitter=lambda: 0.5, wall=lambda: wall
            )
        self.connector = connector_for(source, settings, runtime)

    def pages(self) -> list[Page]:
        try:
            return list(self.connector.pages())
        finally:
            self.http.close()


def records_of(pages: list[Page], key: str) -> list[dict]:
    return [record for page in pages for record in json.loads(page.body).get(key, [])]


def test_fleet_pages_until_an_empty_page(api, settings):
    pages = Run(settings, "fleet").pages()
    assert [r["id"] for r in records_of(pages, "hosts")] == [h["id"] for h in api.records.fleet]
    assert json.loads(pages[-1].body) == {"hosts": []}
    requests = api.gets("/api/v1/fleet/hosts")
    assert [r.query["page"] for r in requests] == [["0"], ["1"], ["2"], ["3"]]
    assert requests[0].query["populate_software"] == ["without_vulnerability_details"]
    assert requests[0].query["per_page"] == ["2"]
    assert {r.credential for r in requests} == {FLEET_TOKEN}


def test_intune_crawls_devices_then_apps_then_each_apps_devices_through_next_links(api, settings):
    pages = Run(settings, "intune").pages()
    app_id = next(iter(api.records.intune_apps))
    assert [p.label for p in pages] == [
        "intune managedDevices page 1",
        "intune managedDevices page 2",
        "intune managedDevices page 3",
        "intune detectedApps page 1",
        f"intune detectedApps('{app_id}')/managedDevices page 1",
        f"intune detectedApps('{app_id}')/managedDevices page 2",
        f"intune detectedApps('{app_id}')/managedDevices page 3",
    ]
    graph = [r.path for r in api.gets("/v1.0/")]
    # the next link is followed verbatim: the skip token Graph wrote, nothing rebuilt
    assert graph[:3] == [
        "/v1.0/deviceManagement/managedDevices",
        "/v1.0/deviceManagement/managedDevices?$skiptoken=2",
        "/v1.0/deviceManagement/managedDevices?$skiptoken=4",
    ]
    token_request = next(r for r in api.log if r.method == "POST")
    assert token_request.path == "/entra/token"
    assert token_request.credential == "client_credentials"


def test_google_lists_with_the_full_projection_as_an_admin_with_the_readonly_scope(api, settings):
    pages = Run(settings, "google").pages()
    ids = [d["resourceId"] for d in records_of(pages, "mobiledevices")]
    assert ids == [d["resourceId"] for d in api.records.google]
    requests = api.gets("/devices/mobile")
    assert [r.query.get("pageToken") for r in requests] == [None, ["tok-2"], ["tok-4"]]
    assert {r.query["projection"][0] for r in requests} == {"FULL"}
    (claims,) = api.assertions
    assert claims["sub"] == ADMIN
    assert (
        claims["scope"] == "https://www.googleapis.com/auth/admin.directory.device.mobile.readonly"
    )


def test_amapi_lists_the_enterprises_devices_as_the_service_account_itself(api, settings):
    pages = Run(settings, "amapi").pages()
    names = [d["name"] for d in records_of(pages, "devices")]
    assert names == [d["name"] for d in api.records.amapi]
    requests = api.gets("/v1/enterprises/LC02abcd12/devices")
    assert [r.query.get("pageToken") for r in requests] == [None, ["tok-2"], ["tok-4"]]
    (claims,) = api.assertions
    assert "sub" not in claims
    assert claims["scope"] == "https://www.googleapis.com/auth/androidmanagement"


def test_jamf_pages_computers_then_mobile_devices_until_the_total_count(api, settings):
    pages = Run(settings, "jamf").pages()
    ids = [r.get("id") or r.get("mobileDeviceId") for r in records_of(pages, "results")]
    expected = [c["id"] for c in api.records.jamf_computers]
    assert ids == expected + [m["mobileDeviceId"] for m in api.records.jamf_mobiles]
    computers = api.gets("/api/v1/computers-inventory")
    assert [r.query["page"] for r in computers] == [["0"], ["1"], ["2"]]  # 5 of 5 after 3 pages
    assert computers[0].query["section"] == [
        "GENERAL",
        "APPLICATIONS",
        "USER_AND_LOCATION",
        "HARDWARE",
    ]
    assert len(api.gets("/api/v2/mobile-devices/detail")) == 3
    assert [r.path for r in api.log if r.method == "POST"] == ["/api/oauth/token"]


def test_a_short_lived_token_is_kept_for_half_its_life(api, settings):
    api.token_lifetime = 60  # a Jamf API client can hand out one-minute tokens
    Run(settings, "jamf").pages()
    assert [r.path for r in api.log if r.method == "POST"] == ["/api/oauth/token"]


@pytest.mark.parametrize("source", SYNC_SOURCES)
def test_a_429_waits_exactly_its_retry_after_then_the_page_is_read(api, settings, source):
    api.fail(SECOND_PAGE[source], Answer(429, headers={"Retry-After": "7"}))
    run = Run(settings, source)
    pages = run.pages()
    assert run.sleeps == [7.0]
    assert len(api.gets(SECOND_PAGE[source])) == 2  # the 429, then the page itself
    assert len(pages) == PAGES[source]  # every page, as without the 429


def test_a_retry_after_given_as_an_http_date_is_honoured(api, settings):
    api.fail("page=1&", Answer(503, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:12 GMT"}))
    now = 1792567680.0  # 2026-10-21T07:28:00Z
    run = Run(settings, "fleet", wall=now)
    run.pages()
    assert run.sleeps == [12.0]


def test_a_503_without_retry_after_backs_off_with_jitter_then_succeeds(api, settings):
    api.fail("page=1&", Answer(503), Answer(502))
    run = Run(settings, "fleet")
    assert len(run.pages()) == 4
    # full jitter: jitter (0.5 here) × min(cap, base × 2^(attempt-1)), base 0.01 s, cap 0.02 s
    assert run.sleeps == pytest.approx([0.005, 0.01])


def test_a_server_that_keeps_failing_is_given_up_after_the_bounded_attempts(api, settings):
    api.fail("page=1&", *[Answer(500)] * 10)
    run = Run(settings, "fleet")
    with pytest.raises(ConnectorError, match=r"answered 500 \(gave up after 6 attempts\)"):
        run.pages()
    assert len(run.sleeps) == 5


def test_a_retry_after_longer_than_a_sync_waits_ends_the_run(api, settings):
    api.fail("page=1&", Answer(429, headers={"Retry-After": "86400"}))
    run = Run(settings, "fleet")
    with pytest.raises(ConnectorError, match="asked to retry after 86400 s"):
        run.pages()
    assert run.sleeps == []


def test_a_refusal_is_not_retried(api, settings):
    api.fail("page=1&", Answer(403, {"message": "forbidden"}))
    run = Run(settings, "fleet")
    with pytest.raises(ConnectorError, match="answered 403"):
        run.pages()
    assert run.sleeps == []
    assert len(api.gets("page=1&")) == 1


def test_a_next_link_to_another_server_is_not_followed(api, settings):
    api.fail(
        "managedDevices?$skiptoken=2",
        Answer(
            200,
            {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/managedDevices",
                "@odata.nextLink": "https://attacker.example/steal?$skiptoken=4",
                "value": [],
            },
        ),
    )
    with pytest.raises(ConnectorError, match="leaves the Graph server"):
        Run(settings, "intune").pages()


@pytest.mark.parametrize(
    ("source", "secret", "fault"),
    [
        ("fleet", FLEET_TOKEN, Answer(403, {"message": f"token {FLEET_TOKEN} is not allowed"})),
        (
            "intune",
            INTUNE_SECRET,
            Answer(400, {"error": "invalid_client", "error_description": f"bad {INTUNE_SECRET}"}),
        ),
        (
            "jamf",
            JAMF_SECRET,
            Answer(400, {"error": "invalid_client", "error_description": f"bad {JAMF_SECRET}"}),
        ),
    ],
)
def test_credentials_appear_in_no_error_and_no_log(api, settings, caplog, source, secret, fault):
    caplog.set_level(logging.DEBUG)
    api.fail("token" if source != "fleet" else "page=0&", fault)
    with pytest.raises(ConnectorError) as raised:
        Run(settings, source).pages()
    assert secret not in str(raised.value)
    assert "***" in str(raised.value)
    assert secret not in caplog.text
    assert "at-graph" not in caplog.text
    assert "at-jamf" not in caplog.text


def test_an_access_token_a_server_echoes_is_scrubbed(api, settings):
    echoed = {"error": {"code": "BadRequest", "message": "token at-graph is not valid here"}}
    api.fail("deviceManagement/managedDevices?$skiptoken=2", Answer(400, echoed))
    with pytest.raises(ConnectorError) as raised:
        Run(settings, "intune").pages()
    assert raised.value.message.endswith("answered 400: BadRequest token *** is not valid here")


def test_a_source_that_is_not_configured_names_the_settings_it_lacks():
    with httpx.Client() as http, pytest.raises(InvalidInput, match="APPWARDEN_JAMF_CLIENT_ID"):
        connector_for("jamf", Settings(jamf_url="https://jamf.example.com"), Runtime(http))
    with httpx.Client() as http, pytest.raises(InvalidInput, match="cannot be synced"):
        connector_for("exchange", Settings(), Runtime(http))
