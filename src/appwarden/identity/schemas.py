"""What a source says about a person, before it touches the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from appwarden.vocabulary import PersonStatus


@dataclass(frozen=True, slots=True)
class PersonFacts:
    email: str
    display_name: str | None = None
    aliases: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()  # account names the mail server accepts (UPN, DOMAIN\\sam)
    groups: tuple[str, ...] | None = None  # None: leave memberships as they are
    time_zone: str | None = None
    status: PersonStatus = PersonStatus.ACTIVE
    left_at: datetime | None = None
