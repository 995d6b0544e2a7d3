"""A long import run holds one file's reports at a time: past the bytes whose batches it keeps
from the check (`sources.files.KEEP_PARSED_BYTES`), each file is read and parsed again at its
turn, must still be the file that was checked, and a pipe is kept as it was read."""

from __future__ import annotations

import os
import weakref
from dataclasses import fields
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from appwarden.devices.models import DeviceIdentifier
from appwarden.devices.schemas import InventoryBatch
from appwarden.sources import files as import_files
from appwarden.usecases import ingest as ingest_module

AT = "2020-07-11T18:00:00Z"


def _page(n: int) -> bytes:
    """A native page of two phones of its own (`PAGE<n>-0`, `PAGE<n>-1`)."""
    devices = [
        {
            "identifiers": [{"namespace": "udid", "value": f"PAGE{n}-{i}"}],
            "platform": "ios",
            "form_factor": "phone",
            "ownership": "corporate",
            "resources": ["email"],
            "report": {
                "evidence_kind": "inventory",
                "observed_at": "2020-07-11T12:00:00Z",
                "apps": [
                    {"namespace": "apple_bundle_id", "value": f"com.example.a{n}{i}"},
                ],
            },
        }
        for i in range(2)
    ]
    return orjson.dumps(
        {"format": "appwarden.inventory/v1", "source": "mdm-export", "devices": devices}
    )


def _pages(tmp_path: Path, count: int) -> list[str]:
    paths = []
    for n in range(count):
        path = tmp_path / f"page-{n}.json"
        path.write_bytes(_page(n))
        paths.append(str(path))
    return paths


def _udids(store) -> set[str]:
    with store.engine.connect() as connection:
        return set(
            connection.scalars(
                select(DeviceIdentifier.value).where(DeviceIdentifier.value.like("PAGE%"))
            )
        )


class _Watched(InventoryBatch):
    """A batch a weak reference can watch (the dataclass has slots)."""


def _watched(monkeypatch: pytest.MonkeyPatch, on_ingest=None) -> list[int]:
    """Live parsed batches counted at each file's ingest (every batch a parser made is
    watched); `on_ingest(k)` runs before the k-th file's ingest."""
    made: weakref.WeakSet = weakref.WeakSet()
    alive: list[int] = []
    parser_for, ingest = import_files.parser_for, ingest_module.ingest

    def watching_parser(source):
        parse = parser_for(source)

        def parsed(*args, **kwargs):
            batch = parse(*args, **kwargs)
            watched = _Watched(**{f.name: getattr(batch, f.name) for f in fields(batch)})
            made.add(watched)
            return watched

        return parsed

    def counting_ingest(uow, batch, **kwargs):
        if on_ingest is not None:
            on_ingest(len(alive))
        alive.append(len(made))
        return ingest(uow, batch, **kwargs)

    monkeypatch.setattr(import_files, "parser_for", watching_parser)
    monkeypatch.setattr(ingest_module, "ingest", counting_ingest)
    return alive


def test_past_the_kept_bytes_a_run_holds_one_file_at_a_time(
    demo, cli, store, tmp_path, monkeypatch
):
    paths = _pages(tmp_path, 4)
    alive = _watched(monkeypatch)
    monkeypatch.setattr(import_files, "KEEP_PARSED_BYTES", len(_page(0)))  # the first file's
    result = cli("import", "native", *paths, "--at", AT, "--json")
    assert result.code == 0, result.err
    assert [r["file"] for r in result.json()] == paths
    assert [r["reports_applied"] for r in result.json()] == [2, 2, 2, 2]
    assert _udids(store) == {f"PAGE{n}-{i}" for n in range(4) for i in range(2)}
    # the first file kept from the check, alone by the time the second is ingested
    assert alive == [1, 1, 1, 1]


def test_within_the_kept_bytes_every_file_is_parsed_once(demo, cli, store, tmp_path, monkeypatch):
    paths = _pages(tmp_path, 3)
    alive = _watched(monkeypatch)
    result = cli("import", "native", *paths, "--at", AT)
    assert result.code == 0, result.err
    assert alive[0] == 3  # all three kept from the check, none read again
    assert _udids(store) == {f"PAGE{n}-{i}" for n in range(3) for i in range(2)}


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda path: path.write_bytes(_page(1) + b" "), "{} changed after it was checked"),
        (Path.unlink, "{}: cannot read (No such file or directory), after it was checked"),
    ],
    ids=["changed", "removed"],
)
def test_a_file_changed_after_the_check_stops_the_run_at_that_file(
    demo, cli, store, tmp_path, monkeypatch, change, said
):
    paths = _pages(tmp_path, 3)

    def change_the_second(k: int) -> None:
        if k == 0:  # the first file is being applied: the second is changed under the run
            change(Path(paths[1]))

    _watched(monkeypatch, change_the_second)
    monkeypatch.setattr(import_files, "KEEP_PARSED_BYTES", 0)
    result = cli("import", "native", *paths, "--at", AT, "--json")
    assert result.code == 2
    stopped = "the 1 file(s) before it were imported, it and the 1 after it were not"
    assert f"{said.format(paths[1])}: {stopped}" in " ".join(result.err.split())  # unwrapped
    assert [r["file"] for r in result.json()] == paths[:1]  # what was applied is told
    assert _udids(store) == {"PAGE0-0", "PAGE0-1"}


def test_a_pipe_past_the_kept_bytes_is_kept_as_read(demo, cli, store, tmp_path, monkeypatch):
    """A pipe cannot be read twice: `import native a.json /dev/stdin` with stdin a pipe."""
    paths = _pages(tmp_path, 1)
    read_end, write_end = os.pipe()
    os.write(write_end, _page(7))  # well under the pipe's buffer: no reader needed yet
    os.close(write_end)
    saved = os.dup(0)
    os.dup2(read_end, 0)
    os.close(read_end)
    try:
        monkeypatch.setattr(import_files, "KEEP_PARSED_BYTES", 0)
        result = cli("import", "native", paths[0], "/dev/stdin", "--at", AT, "--json")
    finally:
        os.dup2(saved, 0)
        os.close(saved)
    assert result.code == 0, result.err
    assert [r["reports_applied"] for r in result.json()] == [2, 2]
    assert _udids(store) == {"PAGE0-0", "PAGE0-1", "PAGE7-0", "PAGE7-1"}
