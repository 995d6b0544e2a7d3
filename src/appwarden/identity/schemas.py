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
    # None: the source does not say (a vendor's user record): leave as stored; a new person is
    # active. Only a source that knows who left (an HR export, the native format) says.
    status: PersonStatus | None = None
    left_at: datetime | None = None
