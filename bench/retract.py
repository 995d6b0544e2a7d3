"""A diagnostic, no bar: how long `appwarden policy retract` takes over a fleet.

`python -m bench.retract [--db URL] [--phones N]` builds the W2/W4 fleet (`bench.fleet`: the
reference organisation plus N phones, every third with TikTok, decisions materialised after the
deadline), tells every owner (a sent announcement each, inserted untimed, as if the memo had gone
out), then retracts the memo in one unit of work wired as the CLI's, and prints the seconds with
what the retraction did: decisions changed, corrections queued, notices cancelled. bench/README.md
keeps the figures (before and after the fleet-wide steps went a chunk at a time).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

from bench.fleet import BENCH_ADMIN, BENCH_AT, prepared_fleet

if TYPE_CHECKING:
    from appwarden.wiring import Services


def _tell_every_owner(services: Services, at: datetime) -> int:
    """A sent announcement for each device owner not told yet; how many were added."""
    from sqlalchemy import select, update

    from appwarden.devices.models import Device
    from appwarden.identity.models import Person
    from appwarden.notifications import service as outbox
    from appwarden.notifications.models import Notice
    from appwarden.policies.service import versions_of
    from appwarden.usecases.demo import POLICY_ID

    with services.uow(at) as uow:
        version = versions_of(uow, POLICY_ID)[-1]
        told = set(outbox.first_notices(uow, POLICY_ID))
        owners = uow.session.execute(
            select(Person.id, Person.email).join(Device, Device.owner_id == Person.id).distinct()
        ).all()
        notices = [
            {
                "person_id": person_id,
                "address": email,
                "policy_id": POLICY_ID,
                "version_id": version.id,
                "kind": "announce",
                "due_slot": "release",
                "due_at": uow.now,
                "rendered": None,
                "domain": "bench.example.com",
                "payload": None,
            }
            for person_id, email in owners
            if person_id not in told
        ]
        outbox.enqueue_all(uow, notices)
        uow.session.execute(
            update(Notice)
            .where(Notice.status == "pending", Notice.kind == "announce")
            .values(status="sent", sent_at=uow.now)
        )
    return len(notices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retract", description=__doc__)
    parser.add_argument("--db", help="a PostgreSQL URL (default: a scratch SQLite file)")
    parser.add_argument("--phones", type=int, default=10_000)
    args = parser.parse_args(argv)
    with prepared_fleet(args.db, args.phones) as fleet:
        from appwarden.db.engine import make_engine
        from appwarden.settings import Settings
        from appwarden.timeutil import parse_instant
        from appwarden.usecases.demo import POLICY_ID
        from appwarden.usecases.retract import retract
        from appwarden.wiring import Services

        engine = make_engine(fleet.url)
        try:
            settings = Settings(database_url=fleet.url, maildir=fleet.workdir / "mail")
            services = Services(settings, engine)
            at = parse_instant(BENCH_AT)
            told = _tell_every_owner(services, at)
            started = time.perf_counter()
            with services.uow(at, actor=BENCH_ADMIN) as uow:
                result = retract(
                    uow, POLICY_ID, message="Sent in error.", config=services.notice_config
                )
            seconds = time.perf_counter() - started
        finally:
            engine.dispose()
    sys.stdout.write(
        f"retract over {args.phones:,} phones ({fleet.backend}, {told:,} owners told): "
        f"{seconds:.2f} s; {result.decisions_changed:,} decisions changed, "
        f"{result.corrections:,} corrections queued, {result.cancelled:,} notices cancelled\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
