"""osquery's TLS remote API, the pure part (docs/sources/osquery.md, "Live: the remote API"): the
configuration appwarden serves, the ad-hoc queries of a first contact, and how a host's
differential results are carried from one logger request to the next.

The osquery mapping (`sources/osquery.py`) rebuilds each query's result set within one file. A
TLS logger sends the lines of a chain over many requests, so appwarden keeps, per (node, query),
the chain's position (epoch, counter, the run's time), whether an unbroken chain since a full
result stands behind it, and the rows known present (`ChainState`). `carry_request` applies one
request's lines to those states exactly as the mapping applies the lines of a file; `chain_body`
then writes a chain's state as one logger body (a counter-0 full result when the chain is
unbroken, otherwise rows known present without a counter), which the unchanged mapping reads
into the report. Nothing here touches the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from appwarden.errors import Problem
from appwarden.sources.common import FieldError, Fields
from appwarden.sources.osquery import (
    TABLE_COVERAGE,
    ResultLine,
    infer_table,
    platform_of,
    read_result_line,
    row_key,
)
from appwarden.vocabulary import Platform

# The tables that say who the host is rather than what it runs.
HOST_TABLES: Final = frozenset({"system_info", "os_version"})
APP_TABLES: Final = frozenset(TABLE_COVERAGE)

# One unfiltered query per table (a WHERE clause would make absence claims wrong). `apps` names
# its columns: `last_opened_time` changes whenever an app is opened, and a differential query
# would log every such change as a removed and an added row.
_QUERIES: Final[Mapping[str, str]] = {
    "apps": "SELECT name, path, bundle_identifier, bundle_name, display_name, "
    "bundle_short_version, bundle_version FROM apps;",
    "programs": "SELECT * FROM programs;",
    "deb_packages": "SELECT * FROM deb_packages;",
    "rpm_packages": "SELECT * FROM rpm_packages;",
    # Every user's browsers, not only those of the user osqueryd runs as.
    "chrome_extensions": "SELECT * FROM users CROSS JOIN chrome_extensions USING (uid);",
    "system_info": "SELECT * FROM system_info;",
    "os_version": "SELECT * FROM os_version;",
}
# osquery's schedule `platform` of each app table (absent: every platform).
_TABLE_PLATFORM: Final[Mapping[str, str]] = {
    "apps": "darwin",
    "programs": "windows",
    "deb_packages": "linux",
    "rpm_packages": "linux",
}
_PLATFORM_TABLES: Final[Mapping[Platform, tuple[str, ...]]] = {
    Platform.MACOS: ("apps", "chrome_extensions"),
    Platform.WINDOWS: ("programs", "chrome_extensions"),
    Platform.LINUX: ("deb_packages", "rpm_packages", "chrome_extensions"),
}
DIFFERENTIAL_INTERVAL: Final = 3600  # seconds: changes are logged within the hour
SNAPSHOT_INTERVAL: Final = 86400  # a daily full result restores a chain a lost request broke
HOST_INTERVAL: Final = 86400
QUERY_PREFIX: Final = "appwarden_"
FIRST_CONTACT_PREFIX: Final = "appwarden_first_"


def remote_config() -> dict[str, Any]:
    """The configuration `POST /osquery/config` answers: for each app table a differential query
    (hourly: its counter-0 run is a full result, each later run the changes) and a daily snapshot
    of the same query (a full result every day, so a chain broken by a lost request proves absence
    again within a day); the host's `system_info` and `os_version` daily; a `host_uuid`
    decoration naming the host in every line. Batch format keeps each run in one line, so a run
    is never split across two logger requests (an event-format run can be: a request would then
    seem to hold a whole counter-0 run that it holds only part of)."""
    schedule: dict[str, dict[str, Any]] = {}
    for table in APP_TABLES:
        platform = {"platform": _TABLE_PLATFORM[table]} if table in _TABLE_PLATFORM else {}
        schedule[f"{QUERY_PREFIX}{table}"] = {
            "query": _QUERIES[table],
            "interval": DIFFERENTIAL_INTERVAL,
            **platform,
        }
        schedule[f"{QUERY_PREFIX}{table}_snapshot"] = {
            "query": _QUERIES[table],
            "interval": SNAPSHOT_INTERVAL,
            "snapshot": True,
            **platform,
        }
    for table in sorted(HOST_TABLES):
        schedule[f"{QUERY_PREFIX}{table}"] = {
            "query": _QUERIES[table],
            "interval": HOST_INTERVAL,
            "snapshot": True,
        }
    return {
        "options": {"logger_event_type": False, "logger_snapshot_event_type": False},
        "decorators": {"load": ["SELECT uuid AS host_uuid FROM system_info;"]},
        "schedule": dict(sorted(schedule.items())),
    }


def first_contact_queries(platform: str | None) -> list[tuple[str, str]]:
    """(name, SQL) of the ad-hoc queries a newly enrolled host is asked: who it is, and every app
    table of its platform (all of them when its platform is not known: a table the host does not
    have answers with an error, which proves nothing and is not asked again)."""
    tables = _PLATFORM_TABLES.get(platform_of(platform), tuple(sorted(APP_TABLES)))
    return [
        (f"{FIRST_CONTACT_PREFIX}{table}", _QUERIES[table])
        for table in ("system_info", "os_version", *tables)
    ]


# ── carrying a chain across requests ───────────────────────────────────────────────────────


@dataclass
class ChainState:
    """What one query of one host is known to return (stored as `OsqueryChain`)."""

    table: str | None = None
    snapshot: bool = False
    epoch: int | None = None
    counter: int | None = None
    run_at: datetime | None = None
    complete: bool = False
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: bool = False  # a run was applied since the chain began or broke
    # This request only: whether a line touched the chain, and the rows it removed (their
    # columns still tell the mapping the table when no row is left present).
    touched: bool = False
    removed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def stored(
        cls,
        *,
        table: str | None,
        snapshot: bool,
        epoch: int | None,
        counter: int | None,
        run_at: datetime | None,
        complete: bool,
        rows: Iterable[dict[str, Any]],
    ) -> ChainState:
        started = snapshot or complete or counter is not None or run_at is not None
        return cls(
            table=table,
            snapshot=snapshot,
            epoch=epoch,
            counter=counter,
            run_at=run_at,
            complete=complete,
            rows={row_key(row): row for row in rows},
            started=started,
        )

    def _continues(self, line: ResultLine) -> bool:
        """Does this differential run follow the last one applied, with nothing missed?"""
        return (
            self.started
            and not self.snapshot
            and line.epoch == self.epoch
            and line.counter is not None
            and self.counter is not None
            and line.counter == self.counter + 1
        )

    def carry(self, line: ResultLine) -> None:
        """Apply one result line, as the mapping's chain rebuild does within a file: a new run
        that is a full result replaces what is known; one that does not follow the last run
        keeps nothing, since the missed runs may have removed anything."""
        same_run = self.started and (line.snapshot, line.epoch, line.counter, line.observed_at) == (
            self.snapshot,
            self.epoch,
            self.counter,
            self.run_at,
        )
        if not same_run:
            if line.snapshot or line.counter == 0:
                self.rows.clear()
                self.complete = True
            elif not self._continues(line):
                self.rows.clear()
                self.complete = False
        for _, row in line.removed:
            key = row_key(row)
            self.rows.pop(key, None)
            self.removed[key] = row
        columns: set[str] = set()
        for _, row in line.added:
            self.rows[row_key(row)] = row
        for _, row in line.added + line.removed:
            columns.update(row)
        self.table = infer_table(columns) or self.table
        self.snapshot, self.epoch, self.counter = line.snapshot, line.epoch, line.counter
        self.run_at = line.observed_at
        self.started = self.touched = True

    def lose(self) -> None:
        """A line of this query was lost: nothing it added or removed is known any more."""
        self.rows.clear()
        self.complete = self.started = self.snapshot = False
        self.epoch = self.counter = self.run_at = None
        self.touched = True


@dataclass
class Carried:
    """What one logger request did to a node's chains."""

    problems: list[Problem] = field(default_factory=list)
    lost_all: bool = False  # a line whose query could not be told: every chain lost


def _with_host(item: dict[str, Any], host_uuid: str) -> dict[str, Any]:
    """The line, naming the node's host when it names none (no `host_uuid` decoration)."""
    decorations = item.get("decorations")
    if item.get("host_uuid") is not None:
        return item
    if isinstance(decorations, dict):
        if decorations.get("host_uuid") is not None:
            return item
        return {**item, "decorations": {**decorations, "host_uuid": host_uuid}}
    if decorations is None:
        return {**item, "decorations": {"host_uuid": host_uuid}}
    return item  # a decorations value that is not an object: the mapping says where


def carry_request(
    states: dict[str, ChainState], data: list[Any], filename: str, host_uuid: str
) -> Carried:
    """Apply the `data` lines of one logger request to the node's chains (`states`, by query
    name; a query seen for the first time gets a new chain). A line that cannot be read is a
    located problem and loses its query's chain (every chain, when its query cannot be told); a
    line naming another host than the node's is refused the same way: a node speaks for the host
    it enrolled as."""
    out = Carried()
    for index, item in enumerate(data):
        path: tuple[str | int, ...] = ("data", index)
        name = item.get("name") if isinstance(item, dict) else None
        try:
            fields = Fields.of(item, filename, path)
            line = read_result_line(filename, Fields(_with_host(item, host_uuid), filename, path))
            if line is not None and line.host.casefold() != host_uuid.casefold():
                raise fields.fail(
                    "decorations", f"names the host {line.host!r}, not this node's {host_uuid!r}"
                )
        except FieldError as exc:
            where, _, message = exc.message.partition(": ")
            out.problems.append(Problem(f"{filename}: {where}", message))
            if isinstance(name, str) and name.strip():
                states.setdefault(name, ChainState()).lose()
            else:
                out.lost_all = True
                for state in states.values():
                    state.lose()
            continue
        if line is not None:  # None: a status line inside a result body
            states.setdefault(line.name, ChainState()).carry(line)
    return out


# ── writing a chain for the mapping ─────────────────────────────────────────────────────────


def chain_line(name: str, state: ChainState, host_uuid: str) -> dict[str, Any]:
    """One result line holding what the chain knows: a counter-0 batch line (a full result) when
    the chain is unbroken, otherwise a batch line without a counter (rows known present, which
    proves nothing absent)."""
    line: dict[str, Any] = {
        "name": name,
        "decorations": {"host_uuid": host_uuid},
        "diffResults": {
            "added": list(state.rows.values()),
            "removed": list(state.removed.values()),
        },
    }
    if state.run_at is not None:
        line["unixTime"] = state.run_at.timestamp()
    if state.complete:
        line["counter"] = 0
        if state.epoch is not None:
            line["epoch"] = state.epoch
    return line


def logger_body(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """A logger body the osquery mapping reads (`node_key` marks the shape; it is no host id)."""
    return {"node_key": "", "log_type": "result", "data": lines}


def host_lines(states: Mapping[str, ChainState], host_uuid: str) -> list[dict[str, Any]]:
    """The lines of the chains that say who the host is, oldest run first (the mapping keeps the
    last value it reads: the newest wins)."""
    known = [(name, s) for name, s in states.items() if s.table in HOST_TABLES and s.rows]
    known.sort(key=lambda item: (item[1].run_at is not None, item[1].run_at or 0))
    return [chain_line(name, state, host_uuid) for name, state in known]


def report_bodies(states: Mapping[str, ChainState], host_uuid: str) -> list[dict[str, Any]]:
    """One logger body per app chain this request touched (each its own report: chains of one
    table are not merged, since one may be a day older than another), each with the host's
    identity lines; one body of the identity lines alone when only those were touched."""
    identity = host_lines(states, host_uuid)
    bodies = [
        logger_body([*identity, chain_line(name, state, host_uuid)])
        for name, state in states.items()
        if state.touched and state.table in APP_TABLES
    ]
    if (
        not bodies
        and identity
        and any(s.touched and s.table in HOST_TABLES for s in states.values())
    ):
        bodies.append(logger_body(identity))
    return bodies


def distributed_body(
    answers: Mapping[str, Any], states: Mapping[str, ChainState], host_uuid: str
) -> dict[str, Any]:
    """A distributed write body the osquery mapping reads: first a `system_info` row naming the
    node's host (the mapping names the host of a body by its first such row), then the host's
    known identity rows, then the answers (each a full result of its query)."""
    queries: dict[str, Any] = {"appwarden_host": [{"uuid": host_uuid, "hardware_serial": ""}]}
    for name, state in states.items():
        if state.table in HOST_TABLES and state.rows and name not in answers:
            queries[name] = list(state.rows.values())
    queries.update(answers)
    return {"node_key": "", "queries": queries, "statuses": dict.fromkeys(queries, 0)}


__all__ = [
    "APP_TABLES",
    "HOST_TABLES",
    "Carried",
    "ChainState",
    "carry_request",
    "chain_line",
    "distributed_body",
    "first_contact_queries",
    "host_lines",
    "logger_body",
    "remote_config",
    "report_bodies",
]
