"""Decisions pushed to the mail provider: Google Workspace (block/approve a mobile device) and
Exchange Online (Set-CASMailbox block/allow lists), through the outbox; and what the enforcement
adapters read from the store (the decision now in force, with the identifiers the provider knows
the device by).

A decision change queues one event per configured provider; when the worker sends it, the
*current* decision is read (not the one in the event), so retries that arrive out of order can
never leave a device in a stale state. Both actions are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from appwarden.access.models import DecisionRecord
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device, DeviceIdentifier
from appwarden.enforcement.exchange import (
    ClientCredentialsTokenSource,
    ExchangeAdminClient,
    ExchangeChange,
    ExchangeState,
    entra_token_url,
)
from appwarden.enforcement.google import AccessTokenSource, GoogleWorkspaceClient, ServiceAccount
from appwarden.identity.models import Person
from appwarden.notifications.channels import DeliveryError
from appwarden.notifications.models import OutboxEvent
from appwarden.settings import Settings
from appwarden.vocabulary import DeviceNamespace

GOOGLE = "enforce.google"
EXCHANGE = "enforce.exchange"

Send = Callable[[], None]


@dataclass
class Enforcers:
    google: GoogleWorkspaceClient | None = None
    exchange: ExchangeAdminClient | None = None
    http: httpx.Client | None = None

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(t for t, c in ((GOOGLE, self.google), (EXCHANGE, self.exchange)) if c)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()


def configured(settings: Settings) -> tuple[str, ...]:
    """The enforcement event types the settings turn on (what `wiring` queues)."""
    types = []
    if settings.google_service_account_file and settings.google_admin_subject:
        types.append(GOOGLE)
    if (
        settings.exchange_tenant_id
        and settings.exchange_client_id
        and settings.exchange_client_secret
    ):
        types.append(EXCHANGE)
    return tuple(types)


def enforcers_from_settings(settings: Settings) -> Enforcers:
    types = configured(settings)
    if not types:
        return Enforcers()
    http = httpx.Client(timeout=30.0, follow_redirects=False)
    google = exchange = None
    if GOOGLE in types:
        assert settings.google_service_account_file
        assert settings.google_admin_subject
        account = ServiceAccount.from_file(
            settings.google_service_account_file, subject=settings.google_admin_subject
        )
        google = GoogleWorkspaceClient(
            http,
            AccessTokenSource(http, account),
            customer_id=settings.google_customer_id,
            base_url=settings.google_api_base,
        )
    if EXCHANGE in types:
        assert settings.exchange_tenant_id
        assert settings.exchange_client_id
        assert settings.exchange_client_secret
        tokens = ClientCredentialsTokenSource(
            http,
            settings.exchange_token_url or entra_token_url(settings.exchange_tenant_id),
            settings.exchange_client_id,
            settings.exchange_client_secret.get_secret_value(),
        )
        exchange = ExchangeAdminClient(
            http, tokens, settings.exchange_tenant_id, base_url=settings.exchange_api_base
        )
    return Enforcers(google=google, exchange=exchange, http=http)


def _identifier(uow: UnitOfWork, device_id: int, namespace: str) -> str | None:
    return uow.session.scalars(
        select(DeviceIdentifier.value).where(
            DeviceIdentifier.device_id == device_id, DeviceIdentifier.namespace == namespace
        )
    ).first()


def prepare(uow: UnitOfWork, event: OutboxEvent, enforcers: Enforcers) -> Send:
    """Read what the provider must be told now, inside the claim's transaction; the returned
    call talks to the provider outside it. Raises DeliveryError(permanent) when it cannot."""
    body: dict[str, Any] = event.body
    device_id, resource = int(body["device_id"]), str(body["resource"])
    record = uow.session.get(DecisionRecord, (device_id, resource))
    decision = record.decision if record is not None else "allow"
    if event.event_type == GOOGLE and enforcers.google is not None:
        resource_id = _identifier(uow, device_id, DeviceNamespace.GOOGLE_RESOURCE_ID)
        if resource_id is None:
            raise DeliveryError("the device has no google_resource_id", permanent=True)
        client = enforcers.google

        def block_or_approve() -> None:
            client.apply_decision(resource_id, decision)

        return block_or_approve
    if event.event_type == EXCHANGE and enforcers.exchange is not None:
        eas = _identifier(uow, device_id, DeviceNamespace.EAS_DEVICE_ID)
        device = uow.session.get(Device, device_id)
        owner = uow.session.get(Person, device.owner_id) if device and device.owner_id else None
        if eas is None or owner is None:
            raise DeliveryError("the device has no eas_device_id or no owner", permanent=True)
        change = ExchangeChange(owner.email, eas, "deny" if decision == "deny" else "allow")
        exchange = enforcers.exchange

        def set_cas_mailbox() -> None:
            exchange.apply(change)

        return set_cas_mailbox
    raise DeliveryError(f"no adapter configured for {event.event_type}", permanent=True)


def exchange_state(uow: UnitOfWork, *, resource: str = "email") -> list[ExchangeState]:
    """(owner's mailbox, EAS DeviceId, decision) for every device Exchange knows (an
    `eas_device_id`) that has a materialised decision for `resource`."""
    rows = uow.session.execute(
        select(Person.email, DeviceIdentifier.value, DecisionRecord.decision)
        .join(Device, Device.id == DecisionRecord.device_id)
        .join(Person, Person.id == Device.owner_id)
        .join(DeviceIdentifier, DeviceIdentifier.device_id == Device.id)
        .where(
            DecisionRecord.resource == resource,
            DeviceIdentifier.namespace == DeviceNamespace.EAS_DEVICE_ID,
        )
        .order_by(Person.email, DeviceIdentifier.value)
    )
    return [
        ExchangeState(email, value, "deny" if decision == "deny" else "allow")
        for email, value, decision in rows
    ]
