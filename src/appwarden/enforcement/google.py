"""Google Workspace enforcement: block or approve a mobile device through the Admin SDK
Directory API (`mobiledevices.action`), authorised by a service account with domain-wide
delegation.

    POST {base_url}/admin/directory/v1/customer/{customerId}/devices/mobile/{resourceId}/action
    Authorization: Bearer <token>           {"action": "block"}   (or "approve")

`block` stops the device syncing Workspace data (mail included); `approve` lets it sync again.
Both are idempotent: blocking a blocked device leaves it blocked, so an at-least-once redelivery
from the outbox is harmless.

The token comes from the OAuth 2.0 JWT bearer grant: an RS256-signed assertion (iss = the
service account, sub = the admin user it acts for, scope, aud = the token URI, exp = iat + 3600)
POSTed to the token URI with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`. The access
token is cached until shortly before it expires.

A device is addressed by its `resourceId` (the identifier namespace `google_resource_id` in
appwarden's inventory). When only the `deviceId` is known (`google_device_id`),
`find_resource_id` pages through `mobiledevices.list` and matches it exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, cast
from urllib.parse import quote

import httpx

from appwarden.notifications.channels import DeliveryError, origin
from appwarden.oauth import (
    GOOGLE_TOKEN_URI,
    JWT_BEARER_GRANT,
    ServiceAccount,
    ServiceAccountTokenSource,
    TokenSource,
    build_assertion,
    send_authorized,
)

__all__ = [
    "DIRECTORY_BASE_URL",
    "GOOGLE_TOKEN_URI",
    "JWT_BEARER_GRANT",
    "SCOPE_MOBILE_ACTION",
    "AccessTokenSource",
    "Action",
    "GoogleWorkspaceClient",
    "ServiceAccount",
    "build_assertion",
    "decision_to_action",
]

log = logging.getLogger(__name__)

DIRECTORY_BASE_URL = "https://admin.googleapis.com"
# Enough for both `mobiledevices.action` and `mobiledevices.list` (the lookup by deviceId).
SCOPE_MOBILE_ACTION = "https://www.googleapis.com/auth/admin.directory.device.mobile.action"

Action = Literal["block", "approve"]
_ACTIONS: frozenset[str] = frozenset({"block", "approve"})


def decision_to_action(new_decision: str) -> Action:
    """`deny` → `block`; `allow` → `approve`."""
    if new_decision == "deny":
        return "block"
    if new_decision == "allow":
        return "approve"
    raise ValueError(f"not a decision: {new_decision!r} (expected 'allow' or 'deny')")


class AccessTokenSource(ServiceAccountTokenSource):
    """`ServiceAccountTokenSource` with the scope enforcement needs by default."""

    def __init__(
        self,
        http: httpx.Client,
        account: ServiceAccount,
        scopes: Sequence[str] = (SCOPE_MOBILE_ACTION,),
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            http, account, scopes, clock=clock, refresh_margin=refresh_margin, timeout=timeout
        )


# --- the Directory API ------------------------------------------------------------------------


class GoogleWorkspaceClient:
    """Directory API calls for mobile devices. Every failure is a `DeliveryError`:

    - 401 → the cached token is dropped and the call retried once with a new one;
    - 400, 403, 404 (and other 4xx, a second 401, 3xx) → permanent;
    - 408, 429, 5xx, Google's 403 `rateLimitExceeded` / `userRateLimitExceeded`, network
      failures and timeouts → temporary.
    """

    def __init__(
        self,
        http: httpx.Client,
        tokens: TokenSource,
        *,
        customer_id: str = "my_customer",
        base_url: str = DIRECTORY_BASE_URL,
        timeout: float = 30.0,
    ) -> None:
        if not customer_id:
            raise ValueError("customer_id is required ('my_customer' means the admin's own)")
        self._http = http
        self._tokens = tokens
        self._customer_id = customer_id
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    def __repr__(self) -> str:
        return (
            f"GoogleWorkspaceClient(customer_id={self._customer_id!r}, "
            f"base_url={origin(self._base_url)!r})"
        )

    @property
    def devices_url(self) -> str:
        customer = quote(self._customer_id, safe="")
        return f"{self._base_url}/admin/directory/v1/customer/{customer}/devices/mobile"

    def action(self, resource_id: str, action: Action) -> None:
        """Block or approve one device. Returns when Google accepted the action."""
        if action not in _ACTIONS:
            raise ValueError(f"unsupported action {action!r}: only 'block' and 'approve'")
        if not resource_id:
            raise DeliveryError("no Google resourceId for the device", permanent=True)
        url = f"{self.devices_url}/{quote(resource_id, safe='')}/action"
        send_authorized(
            self._http,
            self._tokens,
            "POST",
            url,
            what=f"Google mobiledevices.action {action} for {resource_id}",
            json_body={"action": action},
            timeout=self._timeout,
        )
        log.info("Google Workspace: %s mobile device %s", action, resource_id)

    def apply_decision(self, resource_id: str, new_decision: str) -> Action:
        """`action(resource_id, decision_to_action(new_decision))`; returns the action taken."""
        action = decision_to_action(new_decision)
        self.action(resource_id, action)
        return action

    def iter_devices(
        self, *, query: str | None = None, projection: Literal["BASIC", "FULL"] = "BASIC"
    ) -> Iterator[dict[str, Any]]:
        """Every mobile device (`mobiledevices.list`), page by page (`nextPageToken`)."""
        page_token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            params = {"projection": projection, "maxResults": "100"}
            if query:
                params["query"] = query
            if page_token:
                params["pageToken"] = page_token
            response = send_authorized(
                self._http,
                self._tokens,
                "GET",
                self.devices_url,
                what="Google mobiledevices.list",
                params=params,
                timeout=self._timeout,
            )
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if not isinstance(payload, dict) or not isinstance(
                payload.get("mobiledevices", []), list
            ):
                raise DeliveryError(
                    "Google mobiledevices.list answered something that is not a device list",
                    permanent=False,
                )
            for device in payload.get("mobiledevices", []):
                if isinstance(device, dict):
                    yield cast(dict[str, Any], device)
            next_token = payload.get("nextPageToken")
            if not isinstance(next_token, str) or not next_token:
                return
            if next_token in seen_tokens:
                raise DeliveryError(
                    "Google mobiledevices.list repeated a page token", permanent=False
                )
            seen_tokens.add(next_token)
            page_token = next_token

    def find_resource_ids(
        self, device_id: str, *, email: str | None = None, query: str | None = None
    ) -> list[str]:
        """The resourceIds of the devices whose `deviceId` is exactly `device_id` (and, when
        `email` is given, whose owner emails include it, compared case-insensitively).

        Without `query` every device is listed: Google's search index may lag behind (its
        documentation warns of up to 36 hours), so the match is made here, on exact values.
        `query` (e.g. `email:alice@example.com`) only narrows what is fetched. The `BASIC`
        projection is documented to carry deviceId, model, status and type; with `email` the
        list asks for `FULL`, which certainly carries the owner emails."""
        if not device_id:
            return []
        wanted_email = email.casefold() if email else None
        found: list[str] = []
        projection: Literal["BASIC", "FULL"] = "BASIC" if wanted_email is None else "FULL"
        for device in self.iter_devices(query=query, projection=projection):
            if device.get("deviceId") != device_id:
                continue
            if wanted_email is not None:
                emails = device.get("email") or []
                if not any(isinstance(e, str) and e.casefold() == wanted_email for e in emails):
                    continue
            resource_id = device.get("resourceId")
            if isinstance(resource_id, str) and resource_id and resource_id not in found:
                found.append(resource_id)
        return found

    def find_resource_id(
        self, device_id: str, *, email: str | None = None, query: str | None = None
    ) -> str | None:
        """The one resourceId for `device_id`, or None. Several matches (one device synced by
        several accounts) are a permanent `DeliveryError` unless `email` tells them apart."""
        found = self.find_resource_ids(device_id, email=email, query=query)
        if len(found) > 1:
            raise DeliveryError(
                f"Google deviceId {device_id} matches {len(found)} devices; "
                "give the owner's email to choose one",
                permanent=True,
            )
        return found[0] if found else None
