"""osquery results (`appwarden import osquery FILE`): the filesystem logger's results and
snapshots logs (JSON lines), or one body osquery POSTs to a TLS server (a logger body
`{"node_key","log_type","data":[lines]}` or a distributed write body `{"node_key","queries",
"statuses"}`), recognised by shape. docs/sources/osquery.md is the contract.

A host is named only by its host UUID: `decorations.host_uuid` (or a top-level `host_uuid` with
`--decorations_top_level`), or the `uuid` of a `system_info` row. `hostIdentifier` is never used:
by default it is the hostname, and a file does not say which `--host_identifier` wrote it.

Which table a query read is inferred from the columns of its rows (`infer_table`). A full result
(a snapshot, or a differential query's counter-0 run) proves absence within the table's app
namespaces; later differential runs are applied to it in order, per (host, query name). A gap in
the counters, an epoch change without a new counter-0 run, or no counter-0 run in the file leaves
only the rows known present, with `coverage=()`: the missed runs may have removed anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.apps import usable_app, windows_program
from appwarden.sources.common import (
    Collector,
    FieldError,
    Fields,
    ImportOptions,
    load_json_text,
    parse_unix_time,
    read_json_lines,
    type_name,
)
from appwarden.sources.native import MAX_BYTES, decode_input, dedupe_apps, show
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    Platform,
)

SOURCE: Final = "osquery"
NO_HOST_IN_BODY: Final = (
    "no system_info row (uuid, hardware_serial) names the host; node_key is not a host id"
)

# The app tables and the namespaces each lists completely when its result is full.
TABLE_COVERAGE: Final[dict[str, tuple[AppNamespace, ...]]] = {
    "apps": (AppNamespace.APPLE_BUNDLE_ID,),
    "programs": (
        AppNamespace.WINDOWS_UPGRADE_CODE,
        AppNamespace.WINDOWS_PRODUCT_CODE,
        AppNamespace.WINDOWS_PACKAGE_FAMILY,
        AppNamespace.WINDOWS_PROGRAM,
    ),
    "deb_packages": (AppNamespace.DEB_PACKAGE,),
    "rpm_packages": (AppNamespace.RPM_PACKAGE,),
    "chrome_extensions": (AppNamespace.CHROME_EXTENSION_ID,),
}
# The `programs` column that fills each namespace: older osquery has no `upgrade_code` or
# `package_family_name` column, and a result without the column cannot prove that value absent.
PROGRAM_COLUMNS: Final = {
    AppNamespace.WINDOWS_UPGRADE_CODE: "upgrade_code",
    AppNamespace.WINDOWS_PRODUCT_CODE: "identifying_number",
    AppNamespace.WINDOWS_PACKAGE_FAMILY: "package_family_name",
    AppNamespace.WINDOWS_PROGRAM: "name",
}
# The platform an app table implies when the file has no `os_version` row for the host.
TABLE_PLATFORM: Final = {
    "apps": Platform.MACOS,
    "programs": Platform.WINDOWS,
    "deb_packages": Platform.LINUX,
    "rpm_packages": Platform.LINUX,
}
# `os_version.platform` / Fleet's `platform` values of Linux distributions, and the
# `platform_like` words that mark one.
LINUX_PLATFORMS: Final = frozenset(
    {
        "linux",
        "ubuntu",
        "debian",
        "rhel",
        "centos",
        "fedora",
        "amzn",
        "arch",
        "manjaro",
        "gentoo",
        "suse",
        "opensuse",
        "opensuse-leap",
        "opensuse-tumbleweed",
        "sles",
        "ol",
        "rocky",
        "almalinux",
        "pop",
        "linuxmint",
        "kali",
        "nixos",
    }
)
LINUX_LIKES: Final = frozenset({"debian", "ubuntu", "rhel", "fedora", "centos", "suse", "arch"})
OTHER_PLATFORMS: Final = {
    "darwin": Platform.MACOS,
    "windows": Platform.WINDOWS,
    "chrome": Platform.CHROMEOS,
    "ios": Platform.IOS,
    "ipados": Platform.IPADOS,
    "android": Platform.ANDROID,
}


def platform_of(platform: str | None, platform_like: str | None = None) -> Platform:
    """The platform an osquery `os_version.platform` (Fleet's host `platform`) names."""
    name = (platform or "").strip().lower()
    if name in OTHER_PLATFORMS:
        return OTHER_PLATFORMS[name]
    likes = set((platform_like or "").lower().split())
    if name in LINUX_PLATFORMS or likes & LINUX_LIKES:
        return Platform.LINUX
    return Platform.UNKNOWN


def infer_table(columns: set[str]) -> str | None:
    """Which osquery table rows with these columns come from (None: not one appwarden reads)."""
    if "browser_type" in columns or {"identifier", "profile"} <= columns:
        return "chrome_extensions"
    if "bundle_identifier" in columns:
        return "apps"
    if {"uuid", "hardware_serial"} <= columns:
        return "system_info"
    if {"platform", "major"} <= columns:
        return "os_version"
    if (
        columns & {"identifying_number", "upgrade_code"}
        or {
            "publisher",
            "uninstall_string",
        }
        <= columns
    ):
        return "programs"
    if {"release", "epoch"} <= columns or "sha1" in columns:
        return "rpm_packages"
    if {"arch", "maintainer"} <= columns or {"status", "admindir"} <= columns:
        return "deb_packages"
    return None


# ── reading lines ───────────────────────────────────────────────────────────────────────────


Row = tuple[Fields, dict[str, Any]]


@dataclass
class ResultLine:
    """One result line (or one distributed query's answer): the rows it adds and removes."""

    label: str  # FILE:LINE, or FILE for a POSTed body (the path is in `fields`)
    fields: Fields
    host: str
    name: str
    snapshot: bool
    epoch: int | None
    counter: int | None
    observed_at: datetime | None
    added: list[Row]
    removed: list[Row]

    @property
    def where(self) -> str:
        return self.fields.where if self.fields.path else self.label


def _count(fields: Fields, key: str) -> int | None:
    """`epoch`/`counter`: a JSON number, or a numeric string as older osquery wrote them."""
    value = fields.raw(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise fields.fail(key, f"expected a whole number, not {show(value)}")


def _line_time(fields: Fields) -> datetime | None:
    if fields.raw("unixTime") is not None:
        try:
            return parse_unix_time(fields.raw("unixTime"))
        except FieldError as exc:
            raise fields.fail("unixTime", exc.message) from None
    text = fields.text("calendarTime")
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%a %b %d %H:%M:%S %Y UTC").replace(tzinfo=UTC)
    except ValueError:
        raise fields.fail(
            "calendarTime", f"{show(text)} is not like 'Tue Mar  3 14:02:11 2026 UTC'"
        ) from None


def _rows(fields: Fields, key: str) -> list[Row]:
    return [(row, dict(row.data)) for row in fields.objects(key)]


def _changes(fields: Fields) -> tuple[bool, list[Row], list[Row]]:
    """(is a snapshot, rows added, rows removed) of one result line."""
    action = fields.text("action")
    if action == "snapshot":
        if fields.raw("columns") is not None:  # --logger_snapshot_event_type: a row per line
            columns = fields.obj("columns")
            assert columns is not None
            return True, [(columns, dict(columns.data))], []
        return True, _rows(fields, "snapshot"), []
    if action in ("added", "removed"):
        columns = fields.obj("columns")
        if columns is None:
            raise fields.fail("columns", "is required with an added or removed action")
        rows = [(columns, dict(columns.data))]
        return False, rows if action == "added" else [], rows if action == "removed" else []
    diff = fields.obj("diffResults")
    if diff is None:
        raise fields.fail(
            "action", "expected action snapshot, added or removed, or a diffResults object"
        )
    return False, _rows(diff, "added"), _rows(diff, "removed")


def _host_uuid(fields: Fields, rows: list[Row]) -> str:
    decorations = fields.obj("decorations")
    host = decorations.text("host_uuid") if decorations is not None else None
    host = host or fields.text("host_uuid")
    if host is None:  # a system_info row names its own host
        host = next((row.text("uuid") for row, data in rows if "hardware_serial" in data), None)
    if host is None:
        raise fields.fail(
            "decorations",
            "no host_uuid decoration and no system_info uuid: the line names no host "
            "(hostIdentifier is not used, it is the hostname by default)",
        )
    return host


def read_result_line(label: str, fields: Fields) -> ResultLine | None:
    """A result line; None for a status line (osquery's own log, no rows)."""
    if fields.raw("name") is None and fields.raw("severity") is not None:
        return None
    name = fields.required_text("name")
    snapshot, added, removed = _changes(fields)
    return ResultLine(
        label=label,
        fields=fields,
        host=_host_uuid(fields, added + removed),
        name=name,
        snapshot=snapshot,
        epoch=_count(fields, "epoch"),
        counter=_count(fields, "counter"),
        observed_at=_line_time(fields),
        added=added,
        removed=removed,
    )


def _guess_key(value: object) -> tuple[str, str] | None:
    """(host, query name) of a line that could not be read, when those two can be."""
    if not isinstance(value, dict):
        return None
    decorations = value.get("decorations")
    host = decorations.get("host_uuid") if isinstance(decorations, dict) else None
    host = host or value.get("host_uuid")
    name = value.get("name")
    return (host, name) if isinstance(host, str) and isinstance(name, str) else None


# ── rebuilding each query's result set ──────────────────────────────────────────────────────


def row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


@dataclass
class _Chain:
    """What one host's query is known to return, rebuilt from the lines of the file."""

    where: str
    present: dict[str, Row] = field(default_factory=dict)
    columns: set[str] = field(default_factory=set)
    complete: bool = False
    tainted: bool = False  # a line of this query could not be read
    run: tuple[Any, ...] | None = None
    epoch: int | None = None
    counter: int | None = None
    observed_at: datetime | None = None

    def apply(self, line: ResultLine) -> None:
        run = (line.snapshot, line.epoch, line.counter, line.observed_at)
        if run != self.run:
            self._start(line)
            self.run = run
        for _, row in line.removed:
            self.present.pop(row_key(row), None)
        for fields, row in line.added:
            self.present[row_key(row)] = (fields, row)
        for _, row in line.added + line.removed:
            self.columns.update(row)
        if line.observed_at is not None:
            self.observed_at = line.observed_at

    def _start(self, line: ResultLine) -> None:
        """A new run of the query: a full result replaces what is known; a run that does not
        follow the previous one keeps nothing, since the missed runs may have removed it."""
        if line.snapshot or line.counter == 0:
            self.present.clear()
            self.complete = True
        elif not (
            self.run is not None
            and not self.run[0]
            and line.epoch == self.epoch
            and line.counter is not None
            and self.counter is not None
            and line.counter == self.counter + 1
        ):
            self.present.clear()
            self.complete = False
        self.epoch, self.counter = line.epoch, line.counter

    def proves_absence(self, file_tainted: bool) -> bool:
        return self.complete and not self.tainted and not file_tainted


@dataclass
class _Results:
    chains: dict[tuple[str, str], _Chain] = field(default_factory=dict)
    tainted: bool = False  # a line whose host and query could not even be read

    def add(self, line: ResultLine) -> None:
        key = (line.host, line.name)
        chain = self.chains.get(key)
        if chain is None:
            chain = self.chains[key] = _Chain(where=line.where)
        chain.apply(line)

    def lost(self, value: object) -> None:
        key = _guess_key(value)
        if key is None:
            self.tainted = True
            return
        chain = self.chains.setdefault(key, _Chain(where=""))
        chain.tainted = True
        chain.present.clear()


def _read_lines(lines: Iterator[tuple[str, Fields | Any]], collector: Collector) -> _Results:
    results = _Results()
    for label, value in lines:
        if isinstance(value, InvalidInput):
            problem = value.problems[0] if value.problems else Problem(label, value.message)
            collector.skip(problem.where, problem.message)
            results.lost(None)
            continue
        try:
            fields = value if isinstance(value, Fields) else Fields.of(value, label, ())
            line = read_result_line(label, fields)
        except FieldError as exc:
            path, _, message = exc.message.partition(": ")
            collector.skip(f"{label}: {path}", message)
            results.lost(value.data if isinstance(value, Fields) else value)
            continue
        if line is not None:
            results.add(line)
    return results


# ── mapping rows to apps ────────────────────────────────────────────────────────────────────


def _version(row: Fields, *keys: str) -> str | None:
    for key in keys:
        value = row.raw(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # --logger_numerics writes typed columns
        text = row.text(key)
        if text:
            return text
    return None


def _installed_deb(row: Fields) -> bool:
    """dpkg keeps removed packages' config files as `deinstall ok config-files`: not installed."""
    status = row.text("status")
    return status is None or status.split()[-1] == "installed"


def row_apps(table: str, row: Fields) -> list[AppSeen | None]:
    """The apps one row of an app table shows (None where a value is not an identifier)."""
    text = row.text
    if table == "apps":
        name = text("display_name") or text("bundle_name") or text("name")
        version = _version(row, "bundle_short_version", "bundle_version")
        return [
            usable_app(
                AppNamespace.APPLE_BUNDLE_ID, text("bundle_identifier"), version=version, name=name
            )
        ]
    if table == "programs":
        name, version = text("name"), _version(row, "version")
        return [
            usable_app(ns, text(PROGRAM_COLUMNS[ns]), version=version, name=name)
            for ns in TABLE_COVERAGE["programs"][:3]
        ] + [windows_program(name, text("publisher"), version)]
    if table == "deb_packages":
        if not _installed_deb(row):
            return []
        return [
            usable_app(
                AppNamespace.DEB_PACKAGE, text("name"), version=_version(row, "version"), name=None
            )
        ]
    if table == "rpm_packages":
        version, release = _version(row, "version"), _version(row, "release")
        full = f"{version}-{release}" if version and release else version
        return [usable_app(AppNamespace.RPM_PACKAGE, text("name"), version=full, name=None)]
    assert table == "chrome_extensions"
    return [
        usable_app(
            AppNamespace.CHROME_EXTENSION_ID,
            text("identifier"),
            version=_version(row, "version"),
            name=text("name"),
        )
    ]


def table_coverage(table: str, columns: set[str]) -> tuple[str, ...]:
    namespaces = TABLE_COVERAGE[table]
    if table == "programs":
        namespaces = tuple(ns for ns in namespaces if PROGRAM_COLUMNS[ns] in columns)
    return tuple(str(ns) for ns in namespaces)


# ── building the batch ──────────────────────────────────────────────────────────────────────


@dataclass
class _Host:
    serial: str | None = None
    name: str | None = None
    platform: Platform | None = None
    implied: Platform | None = None  # from the app tables, when no os_version row says


@dataclass
class _TableReport:
    where: str
    apps: list[AppSeen] = field(default_factory=list)
    columns: set[str] = field(default_factory=set)
    complete: bool = False
    observed_at: datetime | None = None


class _RowProblem(Exception):
    def __init__(self, row: Fields, error: FieldError) -> None:
        path, _, message = error.message.partition(": ")
        super().__init__(message)
        self.where, self.message = f"{row.filename}: {path}", message


def _chain_apps(table: str, chain: _Chain) -> list[AppSeen]:
    apps: list[AppSeen] = []
    for row, _ in chain.present.values():
        try:
            apps += [app for app in row_apps(table, row) if app is not None]
        except FieldError as exc:
            raise _RowProblem(row, exc) from None
    return apps


def _host_facts(table: str, chain: _Chain, host: _Host) -> None:
    """Identifiers and platform from `system_info` and `os_version` rows."""
    for row, _ in chain.present.values():
        try:
            _host_row(table, row, host)
        except FieldError as exc:
            raise _RowProblem(row, exc) from None


def _host_row(table: str, row: Fields, host: _Host) -> None:
    if table == "system_info":
        host.serial = row.text("hardware_serial") or host.serial
        host.name = row.text("computer_name") or host.name
    else:
        host.platform = platform_of(row.text("platform"), row.text("platform_like"))


def _collect(
    results: _Results, collector: Collector
) -> tuple[dict[str, _Host], dict[tuple[str, str], _TableReport]]:
    hosts: dict[str, _Host] = {}
    tables: dict[tuple[str, str], _TableReport] = {}
    bad: set[tuple[str, str]] = set()
    for (host_uuid, _), chain in results.chains.items():
        table = infer_table(chain.columns)
        if table is None or (host_uuid, table) in bad:
            continue  # another query, or rows appwarden does not read
        host = hosts.setdefault(host_uuid, _Host())
        try:
            if table in ("system_info", "os_version"):
                _host_facts(table, chain, host)
                continue
            apps = _chain_apps(table, chain)
        except _RowProblem as problem:
            collector.skip(problem.where, problem.message)
            bad.add((host_uuid, table))
            tables.pop((host_uuid, table), None)
            continue
        host.implied = host.implied or TABLE_PLATFORM.get(table)
        report = tables.setdefault((host_uuid, table), _TableReport(where=chain.where))
        report.apps += apps
        report.columns |= chain.columns
        report.complete = report.complete or chain.proves_absence(results.tainted)
        if chain.observed_at and (not report.observed_at or chain.observed_at > report.observed_at):
            report.observed_at = chain.observed_at
    return hosts, tables


def _device(host_uuid: str, host: _Host) -> DeviceFacts:
    identifiers = [(str(DeviceNamespace.OSQUERY_HOST), host_uuid)]
    if host.serial:
        identifiers.append((str(DeviceNamespace.SERIAL), host.serial))
    return DeviceFacts(
        identifiers=tuple(identifiers),
        platform=host.platform or host.implied,
        name=host.name,
        status=DeviceStatus.ACTIVE,
    )


def _finish(results: _Results, collector: Collector, *, strict: bool) -> InventoryBatch:
    hosts, tables = _collect(results, collector)
    reported = {host_uuid for host_uuid, _ in tables}
    for host_uuid, host in hosts.items():
        if host_uuid not in reported:
            collector.devices.append(_device(host_uuid, host))
    for (host_uuid, table), report in tables.items():
        collector.report(
            ReportFacts(
                device=_device(host_uuid, hosts[host_uuid]),
                source=SOURCE,
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=report.observed_at,
                apps=dedupe_apps(report.apps),
                coverage=table_coverage(table, report.columns) if report.complete else (),
                where=report.where,
            )
        )
    return collector.finish(strict=strict)


# ── the three shapes of input ───────────────────────────────────────────────────────────────


def _distributed_results(body: Fields, collector: Collector) -> _Results:
    """A distributed write body: each query answered with status 0 is a full result of its
    query, for the one host the body comes from, named by a `system_info` row of the body
    (`node_key` is a session secret, not a host id). Failed queries prove nothing."""
    results = _Results()
    queries, statuses = body.obj("queries"), body.obj("statuses")
    assert queries is not None
    answered = [
        query_id
        for query_id in queries.data
        if statuses is None or statuses.raw(query_id) in (0, "0")
    ]
    host = _body_host(queries, answered)
    if host is None:
        if answered:
            collector.skip(f"{collector.filename}: $.queries", NO_HOST_IN_BODY)
        return results
    for query_id in answered:
        where = Fields({}, collector.filename, ("queries", query_id))
        try:
            rows = [(row, dict(row.data)) for row in queries.objects(query_id)]
        except FieldError as exc:
            path, _, message = exc.message.partition(": ")
            collector.skip(f"{collector.filename}: {path}", message)
            continue
        results.add(
            ResultLine(collector.filename, where, host, query_id, True, None, None, None, rows, [])
        )
    return results


def _body_host(queries: Fields, answered: list[str]) -> str | None:
    for query_id in answered:
        rows = queries.raw(query_id)
        for index, row in enumerate(rows if isinstance(rows, list) else []):
            if isinstance(row, dict) and {"uuid", "hardware_serial"} <= row.keys():
                try:
                    return Fields(row, queries.filename, (query_id, index)).text("uuid")
                except FieldError:
                    return None
    return None


def _logger_lines(body: Fields, filename: str) -> Iterator[tuple[str, Fields | Any]]:
    if body.text("log_type") != "result":
        return  # a status body: osquery's own log messages, no results
    data = body.raw("data")
    if not isinstance(data, list):
        raise InvalidInput(
            f"{filename}: $.data: expected a list of result lines, not {type_name(data)}",
            problems=[Problem(f"{filename}: $.data", "expected a list of result lines")],
        )
    for index, item in enumerate(data):
        if isinstance(item, dict):
            yield filename, Fields(item, filename, ("data", index))
        else:
            yield filename, InvalidInput(f"$.data[{index}]: expected an object")


def _file_lines(decoded: str, filename: str, max_bytes: int) -> Iterator[tuple[str, Any]]:
    objects = 0
    lines = 0
    for label, value in read_json_lines(decoded, filename, max_bytes=max_bytes):
        lines += 1
        objects += isinstance(value, dict)
        yield label, value
    if lines and not objects:
        message = "not an osquery results log: no line is a JSON object"
        raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])


def _whole_body(decoded: str, filename: str) -> Fields | None:
    """The input as one body osquery POSTs (it has a `node_key`); None for a results log."""
    if not decoded.lstrip().startswith("{"):
        return None
    try:
        body = load_json_text(decoded, filename)
    except InvalidInput:
        return None  # more than one line (or a bad one): a results log, read line by line
    if isinstance(body, dict) and "node_key" in body:
        return Fields(body, filename, ())
    return None


def parse_osquery(
    text: str | bytes,
    filename: str,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> InventoryBatch:
    """Map one osquery results file or POSTed body to an inventory batch."""
    del options  # osquery needs no import option: its times are in each line
    decoded = decode_input(text, filename, max_bytes=max_bytes)
    collector = Collector(filename, SOURCE)
    body = _whole_body(decoded, filename)
    if body is not None and isinstance(body.raw("queries"), dict):
        results = _distributed_results(body, collector)
    elif body is not None:
        results = _read_lines(_logger_lines(body, filename), collector)
    else:
        results = _read_lines(_file_lines(decoded, filename, max_bytes), collector)
    return _finish(results, collector, strict=strict)


__all__ = [
    "ResultLine",
    "infer_table",
    "parse_osquery",
    "platform_of",
    "read_result_line",
    "row_apps",
    "row_key",
    "table_coverage",
]
