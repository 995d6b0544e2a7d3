"""Exchange enforcement: per-mailbox Exchange ActiveSync device lists.

    Set-CASMailbox -Identity 'alice@example.com' `
        -ActiveSyncBlockedDeviceIDs @{Add='6F24CAD599A5BF1A690246B8C68FAE8D'} `
        -ActiveSyncAllowedDeviceIDs @{Remove='6F24CAD599A5BF1A690246B8C68FAE8D'}

A `deny` adds the device's EAS DeviceId to the mailbox's blocked list and takes it off the
allowed list; an `allow` takes it off the blocked list (and, with `add_to_allowed=True`, puts it
on the allowed list, which exempts it from org-wide device access rules and quarantine). The
`@{Add=...; Remove=...}` form changes only the named value, never the rest of the list, so a
command can be repeated: it is idempotent.

Two ways to apply it:

- `cas_mailbox_commands` / `current_state_script` (pure): PowerShell text for an admin to run
  in Exchange Online PowerShell or the Exchange Management Shell. Every value is a single-quoted
  PowerShell literal, escaped the way PowerShell's own `CodeGeneration` does it; values with
  control or invisible formatting characters are refused.
- `ExchangeAdminClient` (HTTP): the Exchange Online admin API that the ExchangeOnlineManagement
  v3 module itself uses (`POST https://outlook.office365.com/adminapi/beta/{tenant}/InvokeCommand`
  with `{"CmdletInput": {"CmdletName": ..., "Parameters": {...}}}`). Microsoft does not document
  it as a public API: verify it against your tenant before relying on it.

The mailbox is the device owner's primary email address; the DeviceId is the `eas_device_id`
identifier (from `Get-MobileDevice`, Intune `easDeviceId`, Apple `EASDeviceIdentifier`, ...).
"""

from __future__ import annotations

import logging
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias
from urllib.parse import quote

import httpx

from appwarden import oauth
from appwarden.notifications.channels import origin
from appwarden.oauth import TokenSource, entra_token_url, send_authorized

__all__ = [
    "EXCHANGE_ADMIN_BASE_URL",
    "EXCHANGE_SCOPE",
    "ClientCredentialsTokenSource",
    "ExchangeAdminClient",
    "ExchangeChange",
    "ExchangeState",
    "cas_mailbox_command",
    "cas_mailbox_commands",
    "cas_mailbox_parameters",
    "current_state_script",
    "entra_token_url",
    "powershell_quote",
]

log = logging.getLogger(__name__)

EXCHANGE_ADMIN_BASE_URL = "https://outlook.office365.com"
EXCHANGE_SCOPE = "https://outlook.office365.com/.default"
# The mailbox the ExchangeOnlineManagement module routes app-only requests through.
_APP_ONLY_ANCHOR = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
_GENERIC_HASH_TABLE = "#Exchange.GenericHashTable"

BLOCKED = "ActiveSyncBlockedDeviceIDs"
ALLOWED = "ActiveSyncAllowedDeviceIDs"

Decision = Literal["allow", "deny"]

# Characters PowerShell reads as a single quote: ' and the typographic U+2018..U+201B.
_SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")
# Control (Cc), formatting (Cf: bidi overrides, zero-width), line/paragraph separators,
# surrogates: none belongs in a mailbox address or a device id, and all can mislead a reader.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


# --- what is applied --------------------------------------------------------------------------


def _check_value(what: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise ValueError(f"{what} contains a control character (U+{ord(ch):04X}); refused")
    return value


@dataclass(frozen=True, slots=True)
class ExchangeChange:
    """Set the EAS device `eas_device_id` of `mailbox` to `decision`. Validated on creation:
    no empty values, no control characters, a decision of 'allow' or 'deny'."""

    mailbox: str
    eas_device_id: str
    decision: Decision

    def __post_init__(self) -> None:
        _check_value("mailbox", self.mailbox)
        _check_value("eas_device_id", self.eas_device_id)
        if self.decision not in ("allow", "deny"):
            raise ValueError(f"decision must be 'allow' or 'deny', not {self.decision!r}")

    @property
    def key(self) -> tuple[str, str]:
        """(mailbox, device) with the mailbox compared case-insensitively, as Exchange does."""
        return (self.mailbox.casefold(), self.eas_device_id)


# A row of the current state has the same shape: the decision now in force for (mailbox, device).
ExchangeState: TypeAlias = ExchangeChange


def _list_edits(change: ExchangeChange, *, add_to_allowed: bool) -> dict[str, dict[str, str]]:
    """Which list gets which edit: {parameter: {"Add"|"Remove": device id}}."""
    device = change.eas_device_id
    if change.decision == "deny":
        return {BLOCKED: {"Add": device}, ALLOWED: {"Remove": device}}
    if add_to_allowed:
        return {BLOCKED: {"Remove": device}, ALLOWED: {"Add": device}}
    return {BLOCKED: {"Remove": device}}


def powershell_quote(value: str) -> str:
    """A single-quoted PowerShell string literal. Every character PowerShell treats as a single
    quote (' and U+2018..U+201B) is doubled, as `CodeGeneration.EscapeSingleQuotedStringContent`
    does; inside single quotes nothing else is special ($ and ` are literal)."""
    _check_value("a PowerShell value", value)
    return "'" + "".join(ch * 2 if ch in _SINGLE_QUOTES else ch for ch in value) + "'"


def cas_mailbox_command(change: ExchangeChange, *, add_to_allowed: bool = False) -> str:
    """The one `Set-CASMailbox` line for a change."""
    parts = ["Set-CASMailbox", "-Identity", powershell_quote(change.mailbox)]
    for parameter, edit in _list_edits(change, add_to_allowed=add_to_allowed).items():
        ((verb, device),) = edit.items()
        parts += [f"-{parameter}", f"@{{{verb}={powershell_quote(device)}}}"]
    return " ".join(parts)


def _latest_per_device(changes: Iterable[ExchangeChange]) -> list[ExchangeChange]:
    latest: dict[tuple[str, str], ExchangeChange] = {}
    for change in changes:
        if not isinstance(change, ExchangeChange):
            raise TypeError(f"expected ExchangeChange, got {type(change).__name__}")
        latest.pop(change.key, None)
        latest[change.key] = change
    return sorted(latest.values(), key=lambda c: (c.key, c.mailbox))


def cas_mailbox_commands(
    changes: Iterable[ExchangeChange], *, add_to_allowed: bool = False
) -> list[str]:
    """One `Set-CASMailbox` line per (mailbox, device), sorted by mailbox (case-insensitive)
    then DeviceId. When the same pair appears more than once, its last change wins: each
    command sets the pair's whole state, so only the latest matters."""
    return [
        cas_mailbox_command(change, add_to_allowed=add_to_allowed)
        for change in _latest_per_device(changes)
    ]


def current_state_script(
    rows: Iterable[ExchangeState], *, generated_at: datetime, add_to_allowed: bool = False
) -> str:
    """A complete PowerShell script that puts every listed (mailbox, device) in its current
    state. Idempotent: running it twice changes nothing the second time. Two rows that give
    the same pair different decisions are refused (the caller's state is inconsistent)."""
    if generated_at.tzinfo is None:
        raise ValueError("generated_at must be timezone-aware")
    decided: dict[tuple[str, str], ExchangeState] = {}
    for row in rows:
        if not isinstance(row, ExchangeChange):
            raise TypeError(f"expected ExchangeState, got {type(row).__name__}")
        previous = decided.get(row.key)
        if previous is not None and previous.decision != row.decision:
            raise ValueError(
                f"conflicting decisions for one device of {row.mailbox}: "
                f"{previous.decision} and {row.decision}"
            )
        decided.setdefault(row.key, row)
    ordered = sorted(decided.values(), key=lambda c: (c.key, c.mailbox))
    denied = sum(1 for row in ordered if row.decision == "deny")
    stamp = generated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "# appwarden: Exchange ActiveSync device access for the current decisions.",
        f"# Generated at {stamp}: {len(ordered)} (mailbox, device) pairs, "
        f"{denied} deny, {len(ordered) - denied} allow.",
        "# Idempotent: each command sets one device of one mailbox to its current state,",
        "# leaving every other entry of the mailbox's lists alone. Run it in Exchange Online",
        "# PowerShell (Connect-ExchangeOnline) or the Exchange Management Shell.",
        "$ErrorActionPreference = 'Stop'",
        "",
    ]
    lines += [cas_mailbox_command(row, add_to_allowed=add_to_allowed) for row in ordered]
    return "\n".join(lines) + "\n"


def cas_mailbox_parameters(
    change: ExchangeChange, *, add_to_allowed: bool = False
) -> dict[str, Any]:
    """The `Set-CASMailbox` parameters for the admin API: the same edits as the script, each
    list edit as an `#Exchange.GenericHashTable` ({"Add": [...]} / {"Remove": [...]})."""
    parameters: dict[str, Any] = {"Identity": change.mailbox}
    for parameter, edit in _list_edits(change, add_to_allowed=add_to_allowed).items():
        ((verb, device),) = edit.items()
        parameters[parameter] = {"@odata.type": _GENERIC_HASH_TABLE, verb: [device]}
    return parameters


# --- over the API -----------------------------------------------------------------------------


class ClientCredentialsTokenSource(oauth.ClientCredentialsTokenSource):
    """OAuth 2.0 client credentials with a client secret (an Entra app registration with the
    `Exchange.ManageAsApp` application permission and an Exchange admin role). For Exchange
    Online: `token_url=entra_token_url(tenant)`, `scope=EXCHANGE_SCOPE` (the default)."""

    service = "Entra OAuth"

    def __init__(
        self,
        http: httpx.Client,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str = EXCHANGE_SCOPE,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            http,
            token_url,
            client_id,
            client_secret,
            scope,
            clock=clock,
            refresh_margin=refresh_margin,
            timeout=timeout,
        )


class ExchangeAdminClient:
    """Runs cmdlets through the Exchange Online admin API (`InvokeCommand`), as the
    ExchangeOnlineManagement v3 module does. Undocumented by Microsoft: verify against your
    tenant. Errors map like every enforcement call: 401 → new token and one retry; 4xx →
    permanent; 408, 429, 5xx and network failures → temporary.

    `tenant_id` is the tenant's GUID or its `*.onmicrosoft.com` domain. `anchor_mailbox` is sent
    as `X-AnchorMailbox`; by default the system mailbox the module uses for app-only sessions.
    """

    def __init__(
        self,
        http: httpx.Client,
        token_source: TokenSource,
        tenant_id: str,
        *,
        base_url: str = EXCHANGE_ADMIN_BASE_URL,
        anchor_mailbox: str | None = None,
        add_to_allowed: bool = False,
        timeout: float = 60.0,
    ) -> None:
        _check_value("tenant_id", tenant_id)
        self._http = http
        self._tokens = token_source
        self._tenant_id = tenant_id
        self._base_url = base_url.rstrip("/")
        self._anchor = anchor_mailbox or f"{_APP_ONLY_ANCHOR}@{tenant_id}"
        self._add_to_allowed = add_to_allowed
        self._timeout = timeout

    def __repr__(self) -> str:
        return (
            f"ExchangeAdminClient(tenant_id={self._tenant_id!r}, "
            f"base_url={origin(self._base_url)!r})"
        )

    @property
    def invoke_url(self) -> str:
        return f"{self._base_url}/adminapi/beta/{quote(self._tenant_id, safe='')}/InvokeCommand"

    def invoke(self, cmdlet: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Run one cmdlet; returns the decoded JSON answer (`{"value": [...]}` for cmdlets that
        return objects, often `{}` or an empty body for `Set-*`)."""
        _check_value("cmdlet", cmdlet)
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}}
        response = send_authorized(
            self._http,
            self._tokens,
            "POST",
            self.invoke_url,
            what=f"Exchange admin API {cmdlet}",
            json_body=body,
            headers={
                "X-CmdletName": cmdlet,
                "X-AnchorMailbox": f"UPN:{self._anchor}",
                "client-request-id": str(uuid.uuid4()),
            },
            timeout=self._timeout,
        )
        if not response.content.strip():
            return {}
        try:
            answer = response.json()
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {"value": answer}

    def apply(self, change: ExchangeChange) -> dict[str, Any]:
        """`Set-CASMailbox` with the same list edits as the script."""
        answer = self.invoke(
            "Set-CASMailbox", cas_mailbox_parameters(change, add_to_allowed=self._add_to_allowed)
        )
        log.info(
            "Exchange: %s EAS device %s of %s",
            "blocked" if change.decision == "deny" else "unblocked",
            change.eas_device_id,
            change.mailbox,
        )
        return answer
