"""The Exchange adapter: PowerShell rendering (pure) and the admin API client against a fake
Entra token endpoint and a fake Exchange Online admin API on loopback."""

from __future__ import annotations

import http.server
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from appwarden.enforcement.exchange import (
    EXCHANGE_SCOPE,
    ClientCredentialsTokenSource,
    ExchangeAdminClient,
    ExchangeChange,
    cas_mailbox_command,
    cas_mailbox_commands,
    cas_mailbox_parameters,
    current_state_script,
    entra_token_url,
    powershell_quote,
)
from appwarden.notifications.channels import DeliveryError

JANE_PHONE = "6F24CAD599A5BF1A690246B8C68FAE8D"
GENERATED = datetime(2020, 7, 11, 7, 0, tzinfo=UTC)

# --- PowerShell -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "add_to_allowed", "expected"),
    [
        (
            "deny",
            False,
            "Set-CASMailbox -Identity 'jane.doe@example.com' "
            f"-ActiveSyncBlockedDeviceIDs @{{Add='{JANE_PHONE}'}} "
            f"-ActiveSyncAllowedDeviceIDs @{{Remove='{JANE_PHONE}'}}",
        ),
        (
            "deny",
            True,
            "Set-CASMailbox -Identity 'jane.doe@example.com' "
            f"-ActiveSyncBlockedDeviceIDs @{{Add='{JANE_PHONE}'}} "
            f"-ActiveSyncAllowedDeviceIDs @{{Remove='{JANE_PHONE}'}}",
        ),
        (
            "allow",
            False,
            "Set-CASMailbox -Identity 'jane.doe@example.com' "
            f"-ActiveSyncBlockedDeviceIDs @{{Remove='{JANE_PHONE}'}}",
        ),
        (
            "allow",
            True,
            "Set-CASMailbox -Identity 'jane.doe@example.com' "
            f"-ActiveSyncBlockedDeviceIDs @{{Remove='{JANE_PHONE}'}} "
            f"-ActiveSyncAllowedDeviceIDs @{{Add='{JANE_PHONE}'}}",
        ),
    ],
)
def test_a_change_renders_one_set_casmailbox_line(decision, add_to_allowed, expected):
    change = ExchangeChange("jane.doe@example.com", JANE_PHONE, decision)
    assert cas_mailbox_command(change, add_to_allowed=add_to_allowed) == expected


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("o'brien@example.com", "'o''brien@example.com'"),
        ("o\u2019brien@example.com", "'o\u2019\u2019brien@example.com'"),  # PowerShell reads ’ as '
        ("\u2018\u201a\u201b", "'\u2018\u2018\u201a\u201a\u201b\u201b'"),
        ("$(Remove-Mailbox x)@example.com", "'$(Remove-Mailbox x)@example.com'"),  # literal in '…'
        ('a"b`c@example.com', "'a\"b`c@example.com'"),
        ("zoë@example.com", "'zoë@example.com'"),
    ],
)
def test_values_are_single_quoted_powershell_literals(value, literal):
    assert powershell_quote(value) == literal


def test_a_quote_in_the_mailbox_cannot_end_the_literal():
    change = ExchangeChange("o'brien'; Remove-Mailbox -Identity boss; '@example.com", "ID1", "deny")
    line = cas_mailbox_command(change)
    assert line.startswith(
        "Set-CASMailbox -Identity 'o''brien''; Remove-Mailbox -Identity boss; ''@example.com' "
    )
    # Outside the doubled quotes, the line holds exactly the three literals it should.
    assert line.replace("''", "").count("'") == 6


@pytest.mark.parametrize(
    "bad",
    [
        "jane\n@example.com",
        "jane\r@example.com",
        "jane\x00@example.com",
        "jane\x1b[2J@example.com",
        "jane\u2028@example.com",  # line separator
        "jane\u202e@example.com",  # right-to-left override
        "jane\u200b@example.com",  # zero-width space
        "",
        "   ",
    ],
)
def test_control_characters_and_empty_values_are_refused(bad):
    with pytest.raises(ValueError, match=r"control character|non-empty"):
        ExchangeChange(bad, JANE_PHONE, "deny")
    with pytest.raises(ValueError, match=r"control character|non-empty"):
        ExchangeChange("jane@example.com", bad, "deny")
    with pytest.raises(ValueError, match=r"control character|non-empty"):
        powershell_quote(bad)


def test_a_decision_must_be_allow_or_deny():
    with pytest.raises(ValueError, match="'allow' or 'deny'"):
        ExchangeChange("jane@example.com", JANE_PHONE, "block")  # type: ignore[arg-type]


def test_commands_are_sorted_and_one_per_mailbox_and_device():
    changes = [
        ExchangeChange("carol@example.com", "C1", "deny"),
        ExchangeChange("Bob@example.com", "B2", "deny"),
        ExchangeChange("alice@example.com", "A1", "deny"),
        ExchangeChange("bob@example.com", "B1", "deny"),
        ExchangeChange("alice@example.com", "A1", "allow"),  # later: wins
    ]
    expected = [
        "Set-CASMailbox -Identity 'alice@example.com' -ActiveSyncBlockedDeviceIDs @{Remove='A1'}",
        "Set-CASMailbox -Identity 'bob@example.com' -ActiveSyncBlockedDeviceIDs @{Add='B1'} "
        "-ActiveSyncAllowedDeviceIDs @{Remove='B1'}",
        "Set-CASMailbox -Identity 'Bob@example.com' -ActiveSyncBlockedDeviceIDs @{Add='B2'} "
        "-ActiveSyncAllowedDeviceIDs @{Remove='B2'}",
        "Set-CASMailbox -Identity 'carol@example.com' -ActiveSyncBlockedDeviceIDs @{Add='C1'} "
        "-ActiveSyncAllowedDeviceIDs @{Remove='C1'}",
    ]
    assert cas_mailbox_commands(changes) == expected


def test_the_order_of_independent_changes_does_not_matter():
    changes = [
        ExchangeChange(f"user{n % 7}@example.com", f"DEV{n:03d}", "deny" if n % 3 else "allow")
        for n in range(40)
    ]
    expected = cas_mailbox_commands(changes)
    shuffled = list(changes)
    random.Random(7).shuffle(shuffled)
    assert cas_mailbox_commands(shuffled) == expected
    assert len(expected) == 40


def test_the_current_state_script():
    rows = [
        ExchangeChange("o'brien@example.com", "B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4", "allow"),
        ExchangeChange("jane.doe@example.com", JANE_PHONE, "deny"),
        ExchangeChange("jane.doe@example.com", JANE_PHONE, "deny"),  # a duplicate row
    ]
    script = current_state_script(
        rows, generated_at=datetime(2020, 7, 11, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    )
    assert script == (
        "# appwarden: Exchange ActiveSync device access for the current decisions.\n"
        "# Generated at 2020-07-11T07:00:00Z: 2 (mailbox, device) pairs, 1 deny, 1 allow.\n"
        "# Idempotent: each command sets one device of one mailbox to its current state,\n"
        "# leaving every other entry of the mailbox's lists alone. Run it in Exchange Online\n"
        "# PowerShell (Connect-ExchangeOnline) or the Exchange Management Shell.\n"
        "$ErrorActionPreference = 'Stop'\n"
        "\n"
        f"Set-CASMailbox -Identity 'jane.doe@example.com' -ActiveSyncBlockedDeviceIDs @{{Add='{JANE_PHONE}'}} "
        f"-ActiveSyncAllowedDeviceIDs @{{Remove='{JANE_PHONE}'}}\n"
        "Set-CASMailbox -Identity 'o''brien@example.com' "
        "-ActiveSyncBlockedDeviceIDs @{Remove='B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4'}\n"
    )
    assert current_state_script(reversed(rows), generated_at=GENERATED) == script


def test_an_empty_state_is_a_script_that_does_nothing():
    script = current_state_script([], generated_at=GENERATED)
    assert "0 (mailbox, device) pairs" in script
    assert "Set-CASMailbox" not in script
    assert script.endswith("$ErrorActionPreference = 'Stop'\n\n")


def test_conflicting_state_rows_are_refused():
    rows = [
        ExchangeChange("jane.doe@example.com", JANE_PHONE, "deny"),
        ExchangeChange("JANE.DOE@example.com", JANE_PHONE, "allow"),
    ]
    with pytest.raises(ValueError, match="conflicting decisions"):
        current_state_script(rows, generated_at=GENERATED)


def test_the_script_needs_an_aware_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        current_state_script([], generated_at=datetime(2020, 7, 11, 7, 0))


@pytest.mark.parametrize(
    ("decision", "add_to_allowed", "expected"),
    [
        (
            "deny",
            False,
            {
                "ActiveSyncBlockedDeviceIDs": {"Add": [JANE_PHONE]},
                "ActiveSyncAllowedDeviceIDs": {"Remove": [JANE_PHONE]},
            },
        ),
        ("allow", False, {"ActiveSyncBlockedDeviceIDs": {"Remove": [JANE_PHONE]}}),
        (
            "allow",
            True,
            {
                "ActiveSyncBlockedDeviceIDs": {"Remove": [JANE_PHONE]},
                "ActiveSyncAllowedDeviceIDs": {"Add": [JANE_PHONE]},
            },
        ),
    ],
)
def test_api_parameters_make_the_same_edits_as_the_script(decision, add_to_allowed, expected):
    change = ExchangeChange("jane.doe@example.com", JANE_PHONE, decision)
    parameters = cas_mailbox_parameters(change, add_to_allowed=add_to_allowed)
    assert parameters == {
        "Identity": "jane.doe@example.com",
        **{
            name: {"@odata.type": "#Exchange.GenericHashTable", **edit}
            for name, edit in expected.items()
        },
    }


def test_the_entra_token_url():
    assert entra_token_url("contoso.onmicrosoft.com") == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )


# --- the admin API on loopback ------------------------------------------------------------------

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "00000000-1111-2222-3333-444444444444"
CLIENT_SECRET = "s3cr3t~Value.from-Entra"


@dataclass
class FakeExchange:
    token_requests: list[dict[str, str]] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)
    forced: list[tuple[int, Any]] = field(default_factory=list)
    token_failure: tuple[int, Any] | None = None
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        with self.lock:
            if method == "POST" and path == f"/{TENANT}/oauth2/v2.0/token":
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                self.token_requests.append(form)
                if self.token_failure is not None:
                    return self.token_failure
                if form != {
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "scope": EXCHANGE_SCOPE,
                }:
                    return 401, {"error": "invalid_client", "error_description": "bad client"}
                token = f"eyJ0.exchange-token-{len(self.token_requests)}"
                self.valid_tokens.add(token)
                return 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
            if method == "POST" and path == f"/adminapi/beta/{TENANT}/InvokeCommand":
                if (
                    headers.get("Authorization", "").removeprefix("Bearer ")
                    not in self.valid_tokens
                ):
                    return 401, {"error": {"code": "401", "message": "Unauthorized"}}
                payload = json.loads(body)
                self.calls.append(
                    {
                        "body": payload,
                        "cmdlet_header": headers.get("X-CmdletName"),
                        "anchor": headers.get("X-AnchorMailbox"),
                        "request_id": headers.get("client-request-id"),
                        "content_type": headers.get("Content-Type"),
                    }
                )
                if self.forced:
                    return self.forced.pop(0)
                return 200, {
                    "@odata.context": "https://outlook.office365.com/adminapi/beta/$metadata#Collection(Exchange.GenericHashTable)",
                    "value": [],
                }
            self.problems.append(f"unexpected {method} {path}")
            return 404, None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload = self.server.fake.handle(
            self.command, urlsplit(self.path).path, self.headers, body
        )
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeExchange


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def exchange(server) -> Iterator[FakeExchange]:
    fake = FakeExchange()
    server.fake = fake
    yield fake
    assert fake.problems == []


@pytest.fixture
def base_url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def client(base_url, exchange) -> Iterator[ExchangeAdminClient]:
    with httpx.Client() as http:
        tokens = ClientCredentialsTokenSource(
            http, f"{base_url}/{TENANT}/oauth2/v2.0/token", CLIENT_ID, CLIENT_SECRET
        )
        yield ExchangeAdminClient(http, tokens, TENANT, base_url=base_url)


def test_apply_posts_set_casmailbox_with_a_bearer_token(exchange, client):
    answer = client.apply(ExchangeChange("jane.doe@example.com", JANE_PHONE, "deny"))

    assert answer["value"] == []
    (call,) = exchange.calls
    assert call["body"] == {
        "CmdletInput": {
            "CmdletName": "Set-CASMailbox",
            "Parameters": {
                "Identity": "jane.doe@example.com",
                "ActiveSyncBlockedDeviceIDs": {
                    "@odata.type": "#Exchange.GenericHashTable",
                    "Add": [JANE_PHONE],
                },
                "ActiveSyncAllowedDeviceIDs": {
                    "@odata.type": "#Exchange.GenericHashTable",
                    "Remove": [JANE_PHONE],
                },
            },
        }
    }
    assert call["cmdlet_header"] == "Set-CASMailbox"
    assert call["anchor"] == f"UPN:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{TENANT}"
    assert call["content_type"].startswith("application/json")
    assert call["request_id"]
    assert len(exchange.token_requests) == 1


def test_the_token_is_reused_and_refreshed_after_a_401(exchange, client):
    client.apply(ExchangeChange("a@example.com", "D1", "deny"))
    client.apply(ExchangeChange("b@example.com", "D2", "allow"))
    assert len(exchange.token_requests) == 1

    exchange.valid_tokens.clear()
    client.apply(ExchangeChange("c@example.com", "D3", "deny"))

    assert len(exchange.token_requests) == 2
    assert [c["body"]["CmdletInput"]["Parameters"]["Identity"] for c in exchange.calls] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]


@pytest.mark.parametrize(
    ("status", "body", "permanent"),
    [
        (
            400,
            {
                "error": {
                    "code": "BadRequest",
                    "message": "|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|"
                    "The operation couldn't be performed because object 'x@example.com' couldn't be found.",
                }
            },
            True,
        ),
        (403, {"error": {"code": "Forbidden", "message": "missing Exchange.ManageAsApp"}}, True),
        (429, {"error": {"code": "TooManyRequests", "message": "throttled"}}, False),
        (503, None, False),
    ],
)
def test_api_errors_are_mapped(exchange, client, status, body, permanent):
    exchange.forced.append((status, body))
    with pytest.raises(DeliveryError) as caught:
        client.apply(ExchangeChange("x@example.com", "D1", "deny"))
    assert caught.value.permanent is permanent
    assert str(status) in caught.value.message


def test_a_rejected_client_secret_is_permanent_and_never_echoed(exchange, client):
    exchange.token_failure = (
        401,
        {
            "error": "invalid_client",
            "error_description": f"AADSTS7000215: Invalid client secret {CLIENT_SECRET}",
        },
    )
    with pytest.raises(DeliveryError) as caught:
        client.apply(ExchangeChange("x@example.com", "D1", "deny"))
    assert caught.value.permanent
    assert "invalid_client" in caught.value.message
    assert CLIENT_SECRET not in caught.value.message
    assert CLIENT_SECRET not in repr(client)
    assert exchange.calls == []


def test_reprs_hold_no_secret(base_url):
    with httpx.Client() as http:
        tokens = ClientCredentialsTokenSource(
            http, entra_token_url(TENANT), CLIENT_ID, CLIENT_SECRET
        )
        assert CLIENT_SECRET not in repr(tokens)
        assert CLIENT_ID in repr(tokens)
