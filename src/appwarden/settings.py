"""Settings, read once at a composition root (CLI, server, worker) and passed down."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from appwarden.errors import InvalidInput
from appwarden.staleness import Staleness
from appwarden.timeutil import parse_duration
from appwarden.vocabulary import SOURCE_NAME, Fact

DEFAULT_DB_URL = "sqlite:///appwarden.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APPWARDEN_", extra="ignore")

    env: Literal["production", "development", "test", "demo"] = "development"
    database_url: str = DEFAULT_DB_URL
    clock: str | None = None
    actor: str | None = None
    catalog_file: Path | None = Field(
        default=None, description="Organisation catalog that extends or overrides the shipped one."
    )
    default_time_zone: str = "UTC"
    undo_window_seconds: int = 600
    required_approvals: int = 1
    minimise_personal_data: bool = True
    max_import_bytes: int = 64 * 1024 * 1024
    # Which source is authoritative for a fact, e.g. {"owner": "intune", "person_status":
    # "workday"}; a fact not named here belongs to the device's MDM of record (the source that
    # first reported it) or the source that first created the person (docs/inventory-native.md).
    fact_sources: dict[str, str] = Field(default_factory=dict)
    # The organisation's mail domains (comma-separated): a source's address in one of them creates
    # or matches a person; any other address leaves the device unowned and listed for admins.
    # Empty: every address belongs to the organisation.
    organisation_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # An Exchange partnership confers the `email` resource only if it synced this recently.
    email_activity_window: str = "P30D"
    # Sources' health (docs/sources/README.md, "Source health"): how long a source may go without
    # a complete run before it is stale, a JSON object of durations by source name (default: 3 ×
    # its sync interval, APPWARDEN_SYNC_<SOURCE>_INTERVAL); a source with neither is stale after
    # `source_stale_default`.
    source_stale_after: dict[str, str] = Field(default_factory=dict)
    source_stale_default: str = "P1D"
    fault: str | None = None

    # Notices and their delivery (docs/delivery.md).
    organisation: str = "Example Corp"
    # The origin people reach this server at (scheme, host and port, no path): notices link
    # `{public_url}/me/devices/{device}?policy=…`, sign-in links and OIDC redirects start here.
    public_url: str = "http://127.0.0.1:8000"
    # Replaced by APPWARDEN_PUBLIC_URL: still set, it stops start-up with a clear error rather
    # than being silently ignored (notices would link somewhere else than the operator thinks).
    legacy_portal_url: str | None = Field(
        default=None, validation_alias=AliasChoices("APPWARDEN_PORTAL_URL", "portal_url")
    )
    mail_domain: str = "appwarden.local"
    smtp_host: str | None = None  # unset: notices go to the maildir below, for reading locally
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "appwarden@localhost"
    # Unset: no limit of appwarden's own (a relay you run paces and queues itself). Set it when
    # submitting straight to a provider that throttles: README, "Delivery rate".
    smtp_max_per_minute: int | None = Field(default=None, ge=1)
    maildir: Path = Path("var/mail")
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    notice_lease_seconds: int = 300
    # Notices claimed, sent and recorded together: a transaction per batch, not per message; a
    # crash re-sends at most one batch (README, "Delivery rate").
    worker_batch: int = Field(default=50, ge=1)
    worker_interval_seconds: float = 5.0
    max_delivery_attempts: int = 8

    # Sign-in and the portal (docs/portal.md).
    # Session cookies carry `Secure` (and the `__Host-` name prefix). Chromium and Firefox keep
    # Secure cookies from http://127.0.0.1 and http://localhost; other browsers, and any other
    # plain-HTTP address, need `false` (the demo sets it).
    cookie_secure: bool = True
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)  # absolute lifetime
    session_idle_minutes: float = Field(default=120.0, gt=0)  # ends after this long unused
    # Proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed for
    # rate limits and logs; otherwise the socket peer is the client. The gate never reads it.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid email profile"
    oidc_name: str = "single sign-on"  # the sign-in button says "Sign in with …"
    # Sign-in attempts (email links and passwords) per address and per client address within
    # `sign_in_window_minutes`; counted in the store, so every process shares them.
    sign_in_per_address: int = Field(default=5, ge=1)
    sign_in_per_client: int = Field(default=20, ge=1)
    sign_in_window_minutes: float = Field(default=15.0, gt=0)

    # The forward-auth gate (docs/gates.md).
    gate_proxy_key: SecretStr | None = None  # the proxy's credential (X-Appwarden-Proxy-Key)
    gate_trust_loopback: bool = False  # or: trust a proxy whose socket peer is 127.0.0.0/8 or ::1
    # Which proxy asks: only the headers it sets are read (unset: all of them, and a request whose
    # copies disagree is refused). The header lists override its defaults.
    gate_proxy: Literal["nginx", "caddy", "traefik", "envoy"] | None = None
    gate_uri_headers: list[str] | None = None
    gate_method_headers: list[str] | None = None
    gate_user_header: str | None = (
        None  # the proxy's authenticated-user header (nginx $remote_user)
    )
    gate_device_header: str | None = None  # take the device id from this header instead of EAS
    gate_mode: Literal["enforce", "report"] = (
        "enforce"  # report: allow, and record what enforce would
    )
    gate_webmail_rule: Literal["device_header", "person"] = "device_header"
    gate_store_concurrency: int = Field(default=4, ge=1, le=64)  # store lookups at once
    # answers a second for callers the gate knows nothing about (unknown DeviceIds without
    # credentials, anything that needs the store); the rest wait, then get 503
    gate_unknown_per_second: float = Field(default=500.0, gt=0)
    unseen_device: Literal["allow", "deny"] = "allow"
    unseen_device_of_blocked_person: Literal["allow", "deny"] = "deny"
    unseen_device_of_unknown_person: Literal["allow", "deny"] = "deny"
    # When the store cannot be reached: answer from each process's in-memory copy of the
    # decisions (the gate's index, web/live_index.py), or allow, or deny everything.
    on_store_failure: Literal["last_known", "allow", "deny"] = "last_known"
    # How often the gate's index checks that it is current when nothing told it of a change
    # (PostgreSQL: its notification connection is checked every half of this, and the index is
    # not trusted after twice this without an answer).
    gate_index_seconds: float = 1.0
    # Which gate answers get an access-log line: every one, denials only (the default: an allowed
    # answer is counted in the metrics, and the proxy logs the request anyway), or none. Answers
    # that needed the store are always logged.
    gate_access_log: Literal["all", "deny", "none"] = "deny"

    # Push sources (docs/sources/osquery.md, docs/sources/apple-mdm.md). Unset: the routes answer
    # 404 and accept nothing.
    # The secret every osquery host presents to enrol (osqueryd --enroll_secret_path).
    osquery_enroll_secret: SecretStr | None = None
    # The path secret of /mdm/webhook/{secret} and /mdm/commands/{secret} (NanoMDM -webhook-url).
    mdm_webhook_secret: SecretStr | None = None
    # The server secret every agent's key is derived from (HMAC-SHA256 of the agent id;
    # docs/targeted-check.md). Unset: /agent/* and /checks/* answer 404.
    agent_secret: SecretStr | None = None

    # Enforcement at the mail provider (docs/enforcement.md), driven by decision changes.
    enforce_resource: str = "email"
    google_service_account_file: Path | None = None
    google_admin_subject: str | None = None
    google_customer_id: str = "my_customer"
    google_api_base: str = "https://admin.googleapis.com"
    exchange_tenant_id: str | None = None
    exchange_client_id: str | None = None
    exchange_client_secret: SecretStr | None = None
    exchange_api_base: str = "https://outlook.office365.com"
    exchange_token_url: str | None = None  # default: the tenant's Entra token endpoint

    # Live syncs (`appwarden sync SOURCE`, and the worker on a schedule; docs/sources/*.md, "Live
    # sync"). A source is synced on its schedule when its interval is set (an ISO 8601 duration
    # such as PT1H); unset, it is synced only by `appwarden sync`.
    sync_fleet_interval: str | None = None
    sync_intune_interval: str | None = None
    sync_google_interval: str | None = None
    sync_amapi_interval: str | None = None
    sync_jamf_interval: str | None = None
    # Every request: its timeout, how many attempts (429, 503, other 5xx, network failures are
    # retried; backoff with full jitter, or the server's Retry-After), and the longest
    # Retry-After honoured (a longer one ends the run, incomplete).
    sync_timeout_seconds: float = Field(default=30.0, gt=0)
    sync_max_attempts: int = Field(default=6, ge=1, le=20)
    sync_backoff_seconds: float = Field(default=1.0, ge=0)
    sync_max_backoff_seconds: float = Field(default=60.0, ge=0)
    sync_max_retry_after_seconds: float = Field(default=300.0, ge=0)
    # How long a worker's claim on a source lasts without renewal (renewed while its run goes on).
    sync_lease_seconds: int = Field(default=600, ge=30)
    # Fleet: an API-only user's token.
    fleet_url: str | None = None
    fleet_api_token: SecretStr | None = None
    fleet_page_size: int = Field(default=100, ge=1, le=10000)
    # Intune (Microsoft Graph): an Entra app registration with client credentials.
    intune_tenant_id: str | None = None
    intune_client_id: str | None = None
    intune_client_secret: SecretStr | None = None
    intune_graph_url: str = "https://graph.microsoft.com"
    intune_token_url: str | None = None  # default: the tenant's Entra token endpoint
    # Google Workspace (Directory API), a service account with domain-wide delegation acting as
    # an admin. Separate from the enforcement account above: reading needs no right to block.
    # The customer and the API base are google_customer_id and google_api_base.
    google_sync_service_account_file: Path | None = None
    google_sync_admin_subject: str | None = None
    # Android Management API: the service account of the enterprise's project (no delegation).
    amapi_service_account_file: Path | None = None
    amapi_enterprise: str | None = None  # LC02abcd12 or enterprises/LC02abcd12
    amapi_users_file: Path | None = None  # user names to addresses (docs/sources/amapi.md)
    amapi_api_url: str = "https://androidmanagement.googleapis.com"
    amapi_page_size: int = Field(default=100, ge=1, le=1000)
    # Jamf Pro: an API client (client credentials) with a read-only API role.
    jamf_url: str | None = None
    jamf_client_id: str | None = None
    jamf_client_secret: SecretStr | None = None
    jamf_page_size: int = Field(default=100, ge=1, le=2000)

    @field_validator("organisation_domains", mode="before")
    @classmethod
    def _domains(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            domains = [str(part).strip().lower().lstrip("@") for part in value]
            for domain in domains:
                if not domain or "@" in domain or any(c.isspace() for c in domain):
                    raise ValueError(f"{domain!r} is not a mail domain (like example.com)")
            return domains
        return value

    @field_validator("public_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ValueError(
                f"{value!r} is not an origin: expected scheme://host[:port] with no path, "
                "e.g. https://appwarden.example.com"
            )
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for network in value:
                try:
                    ipaddress.ip_network(str(network), strict=False)
                except ValueError:
                    raise ValueError(
                        f"{network!r} is not an IP address or network (like 10.0.0.5 or "
                        "10.0.0.0/24)"
                    ) from None
        return value

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if parts.query or parts.fragment or not parts.hostname:
            raise ValueError(f"{value!r} is not an issuer URL (https://login.example.com/…)")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"{value!r}: an OIDC issuer is reached over https")
        return value.strip()

    @model_validator(mode="after")
    def _no_replaced_settings(self) -> Settings:
        if self.legacy_portal_url is not None:
            raise ValueError(
                "APPWARDEN_PORTAL_URL was replaced by APPWARDEN_PUBLIC_URL, the origin people "
                "reach appwarden at (e.g. https://appwarden.example.com): notices now link "
                "{PUBLIC_URL}/me/devices/…"
            )
        oidc = (self.oidc_issuer, self.oidc_client_id, self.oidc_client_secret)
        if any(v is not None for v in oidc) and not all(v is not None for v in oidc):
            raise ValueError(
                "OIDC needs APPWARDEN_OIDC_ISSUER, APPWARDEN_OIDC_CLIENT_ID and "
                "APPWARDEN_OIDC_CLIENT_SECRET together"
            )
        return self

    @property
    def portal_url(self) -> str:
        """The portal's home, as notices and the gate's explanations link it."""
        return f"{self.public_url}/me/"

    @property
    def oidc_enabled(self) -> bool:
        return self.oidc_issuer is not None

    @field_validator("email_activity_window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def email_activity(self) -> timedelta:
        return parse_duration(self.email_activity_window)

    @field_validator(
        "sync_fleet_interval",
        "sync_intune_interval",
        "sync_google_interval",
        "sync_amapi_interval",
        "sync_jamf_interval",
    )
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) <= timedelta(0):
            raise ValueError(f"a sync interval must be longer than zero, not {value!r}")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_waits(self) -> Settings:
        # A run renews its claim at most every third of the lease, and between two renewals it
        # may wait out one request or one Retry-After: the lease must outlast both.
        longest = max(
            self.sync_timeout_seconds,
            self.sync_max_retry_after_seconds,
            self.sync_max_backoff_seconds,
        )
        if self.sync_lease_seconds * 2 / 3 <= longest:
            raise ValueError(
                f"APPWARDEN_SYNC_LEASE_SECONDS ({self.sync_lease_seconds}) must be more than 1.5 "
                f"times the longest wait of a sync ({longest:g} s: the timeout, the longest "
                "Retry-After or backoff), or a claim could run out while its run waits"
            )
        return self

    @property
    def sync_intervals(self) -> dict[str, timedelta]:
        """The sources synced on a schedule, with their intervals."""
        intervals = {
            "fleet": self.sync_fleet_interval,
            "intune": self.sync_intune_interval,
            "google": self.sync_google_interval,
            "amapi": self.sync_amapi_interval,
            "jamf": self.sync_jamf_interval,
        }
        return {source: parse_duration(text) for source, text in intervals.items() if text}

    @field_validator(
        "fleet_url", "intune_graph_url", "intune_token_url", "amapi_api_url", "jamf_url"
    )
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if value is not None else None

    @field_validator("source_stale_after")
    @classmethod
    def _durations_by_source(cls, value: dict[str, str]) -> dict[str, str]:
        for source, duration in value.items():
            if not SOURCE_NAME.match(source):
                raise ValueError(f"{source!r} is not a source name: use 1 to 64 of a-z 0-9 . _ -")
            _positive(f"{source}: ", duration)
        return value

    @field_validator("source_stale_default")
    @classmethod
    def _stale_default(cls, value: str) -> str:
        _positive("", value)
        return value

    def staleness(self) -> Staleness:
        """The staleness bound of every source, from the three settings above."""
        return Staleness(
            stale_after={s: parse_duration(d) for s, d in self.source_stale_after.items()},
            intervals=self.sync_intervals,
            default=parse_duration(self.source_stale_default),
        )

    @field_validator("fact_sources")
    @classmethod
    def _known_facts(cls, value: dict[str, str]) -> dict[str, str]:
        facts = {f.value for f in Fact}
        for fact, source in value.items():
            if fact not in facts:
                raise ValueError(
                    f"{fact!r} is not a fact; expected one of: {', '.join(sorted(facts))}"
                )
            if not SOURCE_NAME.match(source):
                raise ValueError(f"{source!r} is not a source name: use 1 to 64 of a-z 0-9 . _ -")
        return value


def _positive(where: str, duration: str) -> None:
    if parse_duration(duration) <= timedelta(0):
        raise ValueError(f"{where}{duration!r} is not a positive duration")


def load_settings() -> Settings:
    """The settings from the environment; a bad value is an InvalidInput naming its variable."""
    try:
        return Settings()
    except SettingsError as exc:  # a value that is not the JSON its field needs
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"APPWARDEN_{field.group(1).upper()}" if field else "a setting"
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise InvalidInput(f"{name}: not valid JSON{cause}") from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = error["loc"][:1]
            name = "APPWARDEN_" + str(loc[0]).upper() if loc else "the settings"
            lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
        raise InvalidInput("; ".join(lines) or str(exc)) from None
