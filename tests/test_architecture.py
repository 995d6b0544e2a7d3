"""The layer rules of docs/architecture.md hold (import-linter), the migrations match the models,
and no function is too long to hold in mind at once."""

from __future__ import annotations

import ast
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
    from alembic.script import ScriptDirectory

    # The start-up check reads the head from the files' revision lines; Alembic must agree.
    alembic_head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert migrate.head_revision() == alembic_head is not None


def test_migrated_schema_matches_the_models(store):
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata())
    assert diff == []
    assert migrate.is_current(store.engine)


MAX_FUNCTION_LINES = 80


def long_functions(package: Path) -> list[str]:
    """`path:line name (N lines)` for every function (methods and nested ones included) longer
    than MAX_FUNCTION_LINES under `package`, migrations excepted: they are generated, linear
    lists of operations."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if "migrations" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    where = path.relative_to(package.parent)
                    found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_src_is_longer_than_80_lines():
    assert long_functions(ROOT / "src" / "appwarden") == []


def test_the_length_check_sees_a_long_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "db" / "migrations").mkdir(parents=True)

    def body(lines: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(lines))

    # def line + 80 body lines = 81 lines: one too many, even as a nested async method.
    long_method = f"class C:\n    async def grown(self):\n{body(MAX_FUNCTION_LINES, ' ' * 8)}"
    (package / "long.py").write_text(long_method)
    (package / "short.py").write_text(f"def fits():\n{body(MAX_FUNCTION_LINES - 1, '    ')}")
    (package / "db" / "migrations" / "v1.py").write_text(f"def upgrade():\n{body(200, '    ')}")
    assert long_functions(package) == [f"pkg/long.py:2 grown ({MAX_FUNCTION_LINES + 1} lines)"]


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by basename (the test folders are not packages): two files
    of one name stop the whole suite at collection."""
    names: dict[str, list[str]] = {}
    for path in Path(__file__).parent.rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}
