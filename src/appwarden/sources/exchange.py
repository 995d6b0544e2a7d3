"""Exchange ActiveSync partnerships (`appwarden import exchange`): `Get-MobileDevice` output
converted by PowerShell's `ConvertTo-Json`, with the columns the export line of
docs/sources/exchange.md adds beside each device. docs/sources/exchange.md is the contract.

Exchange sees no apps: every report has evidence `none`. What it proves is mail access: a
partnership that synced recently holds the `email` resource. It names the mailbox's owner and the
account names the mail server accepts, so the gate can tell who is asking.

PowerShell writes files in more than one way: Windows PowerShell 5 writes UTF-16LE with a byte
order mark through `>`, `Out-File -Encoding utf8` writes UTF-8 with one, PowerShell 7 writes UTF-8
without one; one device is an object, several an array; times are `\\/Date(ms)\\/` (Windows
PowerShell 5) or ISO 8601 (PowerShell 7). All of these are read.
"""

from __future__ import annotations

import codecs
import re
from datetime import UTC, datetime
from typing import Final

from appwarden.devices.schemas import DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.documents import too_large
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.common import (
    Collector,
    FieldError,
    Fields,
    ImportOptions,
    load_json_text,
    parse_vendor_instant,
)
from appwarden.sources.native import (
    MAX_BYTES,
    MAX_NAME_CHARS,
    check_account,
    decode_input,
    dedupe,
    show,
    type_name,
)
from appwarden.vocabulary import DeviceNamespace, EvidenceKind, FormFactor, Platform

SOURCE: Final = "exchange"
RESOURCES: Final = ("email",)
# The account-name columns: the export line adds UserPrincipalName; LogonName (`DOMAIN\sam`) is an
# optional column for on-premises servers whose clients log on with the down-level name.
ACCOUNT_COLUMNS: Final = ("UserPrincipalName", "LogonName")
UTF16_BOMS: Final = ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# .NET's JSON date: milliseconds since 1970 (UTC), maybe with the writer's offset, which
# does not change the instant: `/Date(1741000000000)/`, `/Date(1741000000000+0100)/`.
NET_DATE = re.compile(r"^/Date\((-?\d{1,15})(?:[+-]\d{4})?\)/$")


def parse_exchange(
    text: str | bytes,
    filename: str,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> InventoryBatch:
    """One `Get-MobileDevice | ConvertTo-Json` file → one `none` report per partnership."""
    options = options or ImportOptions()
    value = load_json_text(_decode(text, filename, max_bytes), filename)
    out = Collector(filename, SOURCE)
    path: tuple[str | int, ...] = ()
    if isinstance(value, dict) and set(value) == {"value", "Count"}:
        value, path = value["value"], ("value",)  # how Windows PowerShell 5 wraps some arrays
    if isinstance(value, list):
        out.each(value, path, lambda record: _partnership(out, record, options))
    elif isinstance(value, dict):
        out.one(value, path, lambda record: _partnership(out, record, options))
    else:
        message = f"expected Get-MobileDevice output (an object or a list), not {type_name(value)}"
        raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
    return out.finish(strict=strict)


def _decode(text: str | bytes, filename: str, max_bytes: int) -> str:
    """UTF-16 (either byte order) by its byte order mark, else UTF-8; the size limit is on the
    bytes as written."""
    if isinstance(text, bytes):
        for bom, codec in UTF16_BOMS:
            if text.startswith(bom):
                if len(text) > max_bytes:
                    raise too_large(filename, len(text), max_bytes)
                try:
                    return text[len(bom) :].decode(codec)
                except UnicodeDecodeError as exc:
                    message = f"not valid UTF-16 ({exc.reason} at byte {exc.start + len(bom)})"
                    problem = Problem(filename, message)
                    raise InvalidInput(f"{filename}: {message}", problems=[problem]) from exc
        if text[:2].count(0) == 1:
            message = (
                "looks like UTF-16 without a byte order mark; "
                "write it with Out-File -Encoding utf8 (docs/sources/exchange.md)"
            )
            raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
    return decode_input(text, filename, max_bytes=max_bytes)


def _partnership(out: Collector, record: Fields, options: ImportOptions) -> None:
    device_id = record.required_text("DeviceId")
    owner = record.email("PrimarySmtpAddress")
    accounts = dedupe(
        a for a in (record.checked(key, check_account) for key in ACCOUNT_COLUMNS) if a
    )
    if owner is not None:
        out.person(PersonFacts(email=owner, accounts=accounts))
    platform, form_factor = _platform(record)
    device = DeviceFacts(
        identifiers=((DeviceNamespace.EAS_DEVICE_ID.value, device_id),),
        platform=platform,
        form_factor=form_factor,
        owner_email=owner,
        resources=_resources(record, options),
        name=record.text("FriendlyName", max_chars=MAX_NAME_CHARS),
    )
    out.report(
        ReportFacts(
            device=device,
            source=SOURCE,
            evidence_kind=EvidenceKind.NONE,
            observed_at=None,  # no app data, so no time of app data: the import's time
            where=record.where,
        )
    )


def _resources(record: Fields, options: ImportOptions) -> tuple[str, ...] | None:
    """`email` when the partnership synced within the activity window of the import; else leave
    the device's resources as stored: without the statistics column nothing is known, and an old
    partnership may still sync tomorrow (it is not proof that mail is gone)."""
    # [U] LastSuccessSync is a property of Get-MobileDeviceStatistics, not of Get-MobileDevice:
    # the export line adds it as a column. Exchange's own docs name it; its form is PowerShell's.
    synced = _time(record, "LastSuccessSync")
    if synced is None:
        return None
    return RESOURCES if options.received_at - synced <= options.email_activity_window else None


def _time(record: Fields, key: str) -> datetime | None:
    """A time as PowerShell's ConvertTo-Json writes it: `/Date(ms)/` or ISO 8601 with an offset.
    An ISO time without an offset is refused: it could be any zone, and the export line writes
    UTC."""
    text = record.text(key)
    if text is None:
        return None
    match = NET_DATE.match(text)
    try:
        if match:
            return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
        return parse_vendor_instant(text)
    except (ValueError, OverflowError, OSError):
        raise record.fail(key, f"{show(text)} is out of range") from None
    except FieldError as exc:
        raise record.fail(key, f"{exc.message} (or /Date(ms)/)") from None


def _platform(record: Fields) -> tuple[Platform, FormFactor | None]:
    """From DeviceType, DeviceModel and DeviceOS as ActiveSync clients send them: Apple's Mail says
    `iPhone`/`iPad`; Outlook says `Outlook` with DeviceOS `iOS 18.3` or `Android 14`."""
    kind, model, os_text = (
        (record.text(key) or "").casefold() for key in ("DeviceType", "DeviceModel", "DeviceOS")
    )
    if kind == "ipad" or model.startswith("ipad") or os_text.startswith("ipados"):
        return Platform.IPADOS, FormFactor.TABLET
    if kind == "iphone" or model.startswith("iphone"):
        return Platform.IOS, FormFactor.PHONE
    if os_text.startswith("ios"):
        return Platform.IOS, None  # an iPhone or an iPad running the iOS name: no form factor
    if "android" in kind or os_text.startswith("android"):
        return Platform.ANDROID, None
    if os_text.startswith("windows"):
        return Platform.WINDOWS, None
    return Platform.UNKNOWN, None


__all__ = ["parse_exchange"]
