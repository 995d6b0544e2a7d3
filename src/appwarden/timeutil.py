"""Instants and durations exactly as docs/policy.md allows them: RFC 3339 with an offset, and
durations made only of W, D, H, M, S (a day is 24 h). Pure, standard library only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?(Z|z|[+-]\d{2}:\d{2})$"
)
_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def parse_instant(text: str) -> datetime:
    """Parse an RFC 3339 timestamp that carries an offset; naive times and bare dates are errors."""
    if not _RFC3339.match(text.strip()):
        raise ValueError(
            "expected an RFC 3339 time with an offset, like 2020-07-10T23:59:59-07:00, "
            f"got {text!r}"
        )
    value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    return value.astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration restricted to W, D, H, M, S (no years or months: they vary)."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(
            f"expected a duration made of W, D, H, M, S such as P1D or PT12H, got {text!r}"
        )
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The canonical text of a duration (P1D, PT12H, P1DT2H)."""
    total = int(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    date_part = f"{days}D" if days else ""
    time_part = "".join(
        f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n
    )
    if not date_part and not time_part:
        return "PT0S"
    return "P" + date_part + (("T" + time_part) if time_part else "")


def utc(value: datetime) -> datetime:
    """Return an aware datetime in UTC; naive input is a programming error."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: every instant in appwarden carries an offset")
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, as every output of appwarden writes instants."""
    if value is None:
        return None
    return utc(value).isoformat().replace("+00:00", "Z")
