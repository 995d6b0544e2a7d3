"""Composition: which handler reacts to which event, and the complete metadata."""

from __future__ import annotations

from sqlalchemy import MetaData

from appwarden.access import models as _access_models  # noqa: F401 - registers tables
from appwarden.audit import models as _audit_models  # noqa: F401
from appwarden.compliance import models as _compliance_models  # noqa: F401
from appwarden.db.base import Base
from appwarden.devices import models as _devices_models  # noqa: F401
from appwarden.events import EventBus
from appwarden.exemptions import models as _exemptions_models  # noqa: F401
from appwarden.identity import models as _identity_models  # noqa: F401
from appwarden.notifications import models as _notifications_models  # noqa: F401
from appwarden.policies import models as _policies_models  # noqa: F401


def metadata() -> MetaData:
    return Base.metadata


def build_bus() -> EventBus:
    """Every in-process reaction to a domain event is registered here."""
    return EventBus()
