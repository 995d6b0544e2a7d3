"""`collector_paused`: the cycle collector is off inside, back on after the last block ends, and
left off when it was off before."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from appwarden.collector import collector_paused


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_off_inside_and_on_again_after():
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_on_again_after_an_exception():
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the page failed")
    assert gc.isenabled()


def test_blocks_in_two_threads_share_the_switch():
    gc.enable()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        assert inside.wait(5)
    assert not gc.isenabled()  # the other thread's block still runs
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_an_import_run_is_parsed_with_the_collector_paused(monkeypatch):
    from appwarden.devices.schemas import InventoryBatch
    from appwarden.sources import registry
    from appwarden.sources.common import ImportOptions

    during: list[bool] = []

    def parse(data: bytes, filename: str, **_: object) -> InventoryBatch:
        during.append(gc.isenabled())
        return InventoryBatch()

    monkeypatch.setattr(registry, "parser_for", lambda _name: parse)
    gc.enable()
    files = [("a.json", b"{}"), ("b.json", b"{}")]
    parsed, refused = registry.parse_files(
        "native", files, strict=True, max_bytes=1 << 20, options=ImportOptions()
    )
    assert [name for name, _ in parsed] == ["a.json", "b.json"]
    assert not refused
    assert during == [False, False]
    assert gc.isenabled()
