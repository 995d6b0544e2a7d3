"""Enforcement adapters: turn a (device, resource) decision into an action at the mail provider.

- `appwarden.enforcement.google`: the Google Workspace Directory API blocks or approves a
  mobile device (`mobiledevices.action`), with a service-account token.
- `appwarden.enforcement.exchange`: Exchange ActiveSync per-mailbox block lists
  (`Set-CASMailbox -ActiveSyncBlockedDeviceIDs`), as a PowerShell script for the current state
  and through the Exchange Online admin API.

Actions are driven by `DecisionChanged` through the transactional outbox (docs/architecture.md):
delivery is at least once, so every action here is idempotent (blocking twice leaves the device
blocked). A failure is a `DeliveryError` whose `permanent` flag tells the dispatcher whether a
retry can help, exactly as for the notification channels.

These modules depend only on the standard library, httpx, `cryptography` (imported when a
service-account key is loaded), `appwarden.oauth` and `appwarden.notifications.channels`. They know
nothing about the database: the caller resolves the device's identifiers and owner first.

What both adapters share (the `TokenSource` protocol, an OAuth 2.0 token cache, and one place
that maps HTTP outcomes to `DeliveryError`) lives in `appwarden.oauth`, which the inventory
connectors use too; it is re-exported here. Secrets (private keys, client secrets, access
tokens) never appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

from appwarden.oauth import (
    CachingTokenSource,
    DeliveryError,
    TokenSource,
    send_authorized,
    status_error,
)

__all__ = [
    "CachingTokenSource",
    "DeliveryError",
    "TokenSource",
    "send_authorized",
    "status_error",
]
