"""The layer rules of docs/architecture.md hold (import-linter), and the migrations match the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from appwarden.db import migrate
from appwarden.wiring import metadata

ROOT = Path(__file__).parent.parent


def test_import_layers_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_migrations_have_one_head():
    assert migrate.head_revision() is not None


def test_migrated_schema_matches_the_models(store):
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata())
    assert diff == []
    assert migrate.is_current(store.engine)
