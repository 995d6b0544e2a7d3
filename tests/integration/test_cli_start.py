"""`appwarden --help` starts without the stack a command may need (bench/README.md, CLI, says
how long each takes): which modules it imports is behaviour, how fast it is, the benchmark's.
The help itself stays complete: every command group is listed."""

from __future__ import annotations

import json
import subprocess
import sys

# What a command imports only when it runs: the migrations, the delivery stack, the server,
# HTTP clients, templates, the store's ORM and the settings model, the vendor formats, rich.
NOT_FOR_HELP = (
    "alembic",
    "appwarden.db.migrate",
    "appwarden.usecases.deliver",
    "appwarden.wiring",
    "appwarden.settings",
    "appwarden.sources.native",
    "appwarden.sources.registry",
    "fastapi",
    "uvicorn",
    "httpx",
    "jinja2",
    "pydantic_settings",
    "rich",
    "sqlalchemy",
)

PROBE = """
import json, sys
sys.argv = ["appwarden", *sys.argv[1:]]
from appwarden.cli.main import run
run(sys.argv[1:])
sys.stderr.write(json.dumps(sorted(sys.modules)))
"""


def _modules_after(*args: str) -> tuple[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=False
    )
    return done.stdout, set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_help_imports_none_of_what_commands_need():
    out, modules = _modules_after("--help")
    loaded = {
        m for m in modules for heavy in NOT_FOR_HELP if m == heavy or m.startswith(heavy + ".")
    }
    assert loaded == set()
    for group in ("policy", "notices", "exemption", "audit", "devices", "decide", "worker"):
        assert group in out


def test_a_group_help_imports_none_of_it_either():
    out, modules = _modules_after("policy", "--help")
    assert "publish" in out
    assert "retract" in out
    assert "sqlalchemy" not in modules
    assert {m for m in modules if m.startswith("appwarden.usecases.")} == {
        "appwarden.usecases.paging"
    }


def test_a_reading_command_on_sqlite_loads_no_postgresql_dialect_nor_yaml(tmp_path):
    """A table option for PostgreSQL on a model would load that dialect in every process that
    imports the models (about 20 ms of each start): `decide` on SQLite loads SQLite's alone.
    Nor does it read a document, so PyYAML (~10 ms) stays unloaded (`appwarden.strict_yaml`)."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    made = subprocess.run(
        [sys.executable, "-m", "appwarden", "--db", url, "demo"], capture_output=True, check=False
    )
    assert made.returncode == 0, made.stderr
    out, modules = _modules_after("--db", url, "decide", "udid:00008110-000A1B2C3D4E801E", "email")
    assert "email:" in out
    assert "sqlalchemy.dialects.sqlite" in modules
    assert {m for m in modules if m.startswith("sqlalchemy.dialects.postgresql")} == set()
    assert {m for m in modules if m == "yaml" or m.startswith("yaml.")} == set()


COLLECTION_PROBE = """
import gc, json, sys
from appwarden.cli.main import run
from appwarden.cli.options import pause_collection
pause_collection()
before = gc.isenabled()
code = run(sys.argv[1:])
sys.stderr.write(json.dumps([code, before, gc.isenabled(), gc.get_freeze_count()]))
"""


def test_a_command_collects_cycles_again_once_it_has_imported_what_it_runs(tmp_path):
    """`main` starts with the cycle collector off; a command that runs for hours (the server,
    the worker, an import) must not go on without it. It is back on, with what start-up made
    frozen, as soon as the command asks for its context."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    done = subprocess.run(
        [sys.executable, "-c", COLLECTION_PROBE, "--db", url, "db", "upgrade"],
        capture_output=True,
        text=True,
        check=False,
    )
    code, before, after, frozen = json.loads(done.stderr.strip().splitlines()[-1])
    assert code == 0
    assert (before, after) == (False, True)
    assert frozen > 10_000
