"""Files built to hurt the reader: nested past any sensible depth, endless (/dev/zero), huge and
sparse, or a FIFO. Each is refused quickly with a located message, exit code 2, no traceback, and
not one row changed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from tests.conftest import table_digest

from appwarden.db.uow import unit_of_work
from appwarden.documents import MAX_DOCUMENT_BYTES
from appwarden.identity.tokens import create_token
from appwarden.settings import Settings
from appwarden.web.app import create_app

DEEP = 100_000  # 200 kB to 500 kB: under every size limit
DEEP_DOCUMENTS = {
    "flow-sequences.yaml": "[" * DEEP + "]" * DEEP,
    "flow-mappings.yaml": "{a: " * DEEP + "1" + "}" * DEEP,
    "block-mappings.yaml": "".join(f"{'  ' * i}a:\n" for i in range(500)) + "  " * 500 + "b\n",
    "json.json": '{"a": ' * DEEP + "1" + "}" * DEEP,
}
# Three levels (the top object, the devices list, a device); the 62nd list inside is the 65th.
INVENTORY_HEAD = '{"format": "appwarden.inventory/v1", "devices": [{"name": '


def _deep_inventory(depth: int) -> str:
    return INVENTORY_HEAD + "[" * depth + "]" * depth + "}]}"


def _refused(result, path) -> None:
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert "RecursionError" not in result.err
    assert f"{path}:" in result.err, result.err


@pytest.fixture
def loaded(cli):
    assert cli("db", "upgrade").code == 0
    return cli


@pytest.mark.parametrize("name", sorted(DEEP_DOCUMENTS))
def test_deeply_nested_policy_and_catalog_files_are_refused(
    loaded, store, tmp_path, monkeypatch, name
):
    path = tmp_path / name
    path.write_text(DEEP_DOCUMENTS[name])
    assert path.stat().st_size < MAX_DOCUMENT_BYTES
    before = table_digest(store.engine)
    validated = loaded("policy", "validate", str(path))
    _refused(validated, path)
    assert "nested deeper than 64 levels" in validated.err
    first = validated.err.splitlines()[0]
    assert first.startswith(f"{path}:"), first
    assert first.removeprefix(f"{path}:").split(":")[1].isdigit(), first  # FILE:LINE:COL
    monkeypatch.setenv("APPWARDEN_CATALOG_FILE", str(path))
    listed = loaded("catalog", "list")
    _refused(listed, path)
    assert "nested deeper than 64 levels" in listed.err
    assert table_digest(store.engine) == before


@pytest.mark.parametrize("depth", [65, 900, 5000, DEEP])
def test_deeply_nested_inventory_files_are_refused(loaded, store, tmp_path, depth):
    path = tmp_path / f"deep-{depth}.json"
    path.write_text(_deep_inventory(depth))
    before = table_digest(store.engine)
    for strict in ((), ("--strict",)):
        result = loaded("import", "native", str(path), *strict)
        _refused(result, path)
        assert f"{path}:1:{len(INVENTORY_HEAD) + 62}: nested deeper than 64 levels" in result.err
    assert table_digest(store.engine) == before


def test_nesting_within_the_limit_is_fine(loaded, tmp_path):
    path = tmp_path / "deep-64.json"
    path.write_text(_deep_inventory(61))  # 61 lists in the top object, devices list, device: 64
    result = loaded("import", "native", str(path))
    assert result.code == 2  # the device is skipped for its own reasons, not for the depth
    assert "nested deeper" not in result.err


def test_a_deeply_nested_inventory_body_is_a_422(store):
    settings = Settings(database_url=store.url, env="test", clock="fixed:2020-07-11T12:00:00Z")
    with unit_of_work(store.engine, now=datetime(2020, 7, 11, 12, tzinfo=UTC)) as uow:
        _, secret = create_token(uow, "writer", ["inventory:write"], source="mdm-export")
    before = None
    with TestClient(create_app(settings)) as client:
        for depth in (100, 100, 2000, DEEP):
            response = client.post(
                "/v1/inventory",
                content=_deep_inventory(depth).encode(),
                headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            )
            assert response.status_code == 422, response.text
            assert "nested deeper than 64 levels" in response.json()["detail"]
            # After the first request: authenticating records the token's last use.
            before = before or table_digest(store.engine)
    assert table_digest(store.engine) == before


# ── endless, huge and blocking files ──────────────────────────────────────────────────────────

SPARSE_BYTES = 4 * 1024**3  # 4 GiB of holes: nothing on disk, everything in memory if read whole
FILE_COMMANDS = {
    "import native": ("import", "native", "{path}"),
    "import native --strict": ("import", "native", "{path}", "--strict"),
    "import csv": ("import", "csv", "{path}"),
    "policy validate": ("policy", "validate", "{path}"),
    "policy apply": ("policy", "apply", "{path}"),
    "catalog": ("catalog", "list"),  # the file comes from APPWARDEN_CATALOG_FILE
    "audit anchor": ("audit", "verify", "--anchor", "{path}"),
}


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(params=["dev-zero", "sparse", "fifo"])
def hostile(request, tmp_path) -> tuple[str, str]:
    """(kind, path) of a file no command may read whole or wait on."""
    if request.param == "dev-zero":
        return request.param, "/dev/zero"
    path = tmp_path / request.param
    if request.param == "sparse":
        with open(path, "wb") as handle:
            handle.truncate(SPARSE_BYTES)
    else:
        os.mkfifo(path)  # nobody will ever write to it
    return request.param, str(path)


@pytest.mark.parametrize("command", sorted(FILE_COMMANDS))
def test_endless_huge_and_blocking_files_are_refused_quickly(
    loaded, store, monkeypatch, hostile, command
):
    kind, path = hostile
    assert loaded("admin", "create", "author@example.com", "--role", "author").code == 0
    monkeypatch.setenv("APPWARDEN_ACTOR", "author@example.com")
    args = [arg.format(path=path) for arg in FILE_COMMANDS[command]]
    if command == "catalog":
        monkeypatch.setenv("APPWARDEN_CATALOG_FILE", path)
    before = table_digest(store.engine)
    started = time.monotonic()
    with _deadline(10):  # a FIFO opened the blocking way would wait for a writer forever
        result = loaded(*args)
    assert time.monotonic() - started < 10, "the file was read far past its limit"
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert result.err.removeprefix("error: ").startswith(path), result.err  # the file, first
    if kind == "sparse":
        assert f"the file is {SPARSE_BYTES} bytes; the limit is" in result.err, result.err
    elif kind == "dev-zero":
        assert "the file is more than" in result.err, result.err
    assert table_digest(store.engine) == before
