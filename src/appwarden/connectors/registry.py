"""The sources `appwarden sync` can fetch, and how each connector is built from the settings
(credentials come from there only). A source that is not configured is an `InvalidInput` naming
the settings it lacks; nothing is fetched and no run is recorded."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from appwarden.connectors import Connector
from appwarden.connectors.amapi import SCOPE as AMAPI_SCOPE
from appwarden.connectors.amapi import AmapiConnector, enterprise_name
from appwarden.connectors.client import ApiClient, RetryPolicy
from appwarden.connectors.fleet import FleetConnector
from appwarden.connectors.google import SCOPE_MOBILE_READONLY, GoogleConnector
from appwarden.connectors.intune import GRAPH_SCOPE, IntuneConnector
from appwarden.connectors.jamf import TOKEN_PATH, JamfConnector
from appwarden.errors import InvalidInput
from appwarden.oauth import (
    ClientCredentialsTokenSource,
    ServiceAccount,
    ServiceAccountTokenSource,
    StaticTokenSource,
    TokenSource,
    entra_token_url,
)
from appwarden.settings import Settings
from appwarden.vocabulary import SYNC_SOURCES as SYNC_SOURCES  # re-exported: the tests ask here


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a connector needs besides the settings: the HTTP client, and the hooks tests and
    the sync's claim renewal inject."""

    http: httpx.Client
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random
    wall: Callable[[], float] = time.time
    heartbeat: Callable[[], None] | None = None


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        timeout=settings.sync_timeout_seconds,
        max_attempts=settings.sync_max_attempts,
        base_delay=settings.sync_backoff_seconds,
        max_delay=settings.sync_max_backoff_seconds,
        max_retry_after=settings.sync_max_retry_after_seconds,
    )


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Every secret value in the settings: scrubbed from anything a sync writes or prints."""
    values = (settings.fleet_api_token, settings.intune_client_secret, settings.jamf_client_secret)
    return tuple(v.get_secret_value() for v in values if v is not None and v.get_secret_value())


def connector_for(source: str, settings: Settings, runtime: Runtime) -> Connector:
    if source not in SYNC_SOURCES:
        raise InvalidInput(
            f"{source!r} cannot be synced; sources with an API: {', '.join(SYNC_SOURCES)}"
        )
    build = {
        "fleet": _fleet,
        "intune": _intune,
        "google": _google,
        "amapi": _amapi,
        "jamf": _jamf,
    }[source]
    return build(settings, runtime)


def _client(settings: Settings, runtime: Runtime, tokens: TokenSource) -> ApiClient:
    return ApiClient(
        runtime.http,
        tokens,
        secrets=secrets_of(settings),
        policy=retry_policy(settings),
        sleep=runtime.sleep,
        jitter=runtime.jitter,
        wall=runtime.wall,
        heartbeat=runtime.heartbeat,
    )


def _require(source: str, **values: object) -> None:
    missing = [f"APPWARDEN_{name.upper()}" for name, value in values.items() if not value]
    if missing:
        raise InvalidInput(f"{source} is not configured for a sync: set {', '.join(missing)}")


def _fleet(settings: Settings, runtime: Runtime) -> Connector:
    _require("fleet", fleet_url=settings.fleet_url, fleet_api_token=settings.fleet_api_token)
    assert settings.fleet_url
    assert settings.fleet_api_token
    tokens = StaticTokenSource(settings.fleet_api_token.get_secret_value())
    return FleetConnector(
        _client(settings, runtime, tokens), settings.fleet_url, page_size=settings.fleet_page_size
    )


def _intune(settings: Settings, runtime: Runtime) -> Connector:
    _require(
        "intune",
        intune_tenant_id=settings.intune_tenant_id,
        intune_client_id=settings.intune_client_id,
        intune_client_secret=settings.intune_client_secret,
    )
    assert settings.intune_tenant_id
    assert settings.intune_client_id
    assert settings.intune_client_secret
    tokens = ClientCredentialsTokenSource(
        runtime.http,
        settings.intune_token_url or entra_token_url(settings.intune_tenant_id),
        settings.intune_client_id,
        settings.intune_client_secret.get_secret_value(),
        GRAPH_SCOPE,
        timeout=settings.sync_timeout_seconds,
    )
    tokens.service = "Entra OAuth"
    return IntuneConnector(_client(settings, runtime, tokens), settings.intune_graph_url)


def _service_account(path: Path, subject: str | None) -> ServiceAccount:
    try:
        return ServiceAccount.from_file(path, subject=subject)
    except ValueError as exc:  # names the file, never its content
        raise InvalidInput(str(exc)) from None


def _google(settings: Settings, runtime: Runtime) -> Connector:
    _require(
        "google",
        google_sync_service_account_file=settings.google_sync_service_account_file,
        google_sync_admin_subject=settings.google_sync_admin_subject,
    )
    assert settings.google_sync_service_account_file
    account = _service_account(
        settings.google_sync_service_account_file, settings.google_sync_admin_subject
    )
    tokens = _signed_tokens(runtime, account, SCOPE_MOBILE_READONLY, settings)
    return GoogleConnector(
        _client(settings, runtime, tokens),
        settings.google_api_base,
        customer_id=settings.google_customer_id,
    )


def _amapi(settings: Settings, runtime: Runtime) -> Connector:
    _require(
        "amapi",
        amapi_service_account_file=settings.amapi_service_account_file,
        amapi_enterprise=settings.amapi_enterprise,
    )
    assert settings.amapi_service_account_file
    assert settings.amapi_enterprise
    try:
        enterprise = enterprise_name(settings.amapi_enterprise)
    except ValueError as exc:
        raise InvalidInput(f"APPWARDEN_AMAPI_ENTERPRISE: {exc}") from None
    account = _service_account(settings.amapi_service_account_file, None)
    tokens = _signed_tokens(runtime, account, AMAPI_SCOPE, settings)
    return AmapiConnector(
        _client(settings, runtime, tokens),
        settings.amapi_api_url,
        enterprise,
        page_size=settings.amapi_page_size,
    )


def _signed_tokens(
    runtime: Runtime, account: ServiceAccount, scope: str, settings: Settings
) -> ServiceAccountTokenSource:
    try:
        return ServiceAccountTokenSource(
            runtime.http, account, (scope,), timeout=settings.sync_timeout_seconds
        )
    except ValueError as exc:  # a key that does not load: says so, never shows it
        raise InvalidInput(str(exc)) from None


def _jamf(settings: Settings, runtime: Runtime) -> Connector:
    _require(
        "jamf",
        jamf_url=settings.jamf_url,
        jamf_client_id=settings.jamf_client_id,
        jamf_client_secret=settings.jamf_client_secret,
    )
    assert settings.jamf_url
    assert settings.jamf_client_id
    assert settings.jamf_client_secret
    tokens = ClientCredentialsTokenSource(
        runtime.http,
        settings.jamf_url + TOKEN_PATH,
        settings.jamf_client_id,
        settings.jamf_client_secret.get_secret_value(),
        timeout=settings.sync_timeout_seconds,
    )
    tokens.service = "Jamf Pro OAuth"
    return JamfConnector(
        _client(settings, runtime, tokens), settings.jamf_url, page_size=settings.jamf_page_size
    )
