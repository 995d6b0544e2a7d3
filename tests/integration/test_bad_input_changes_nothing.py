"""Malformed policy and inventory files: a located message, a non-zero exit, and not one row
changed in any table (docs/architecture.md: bad input gets a clear error and changes nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import table_digest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "inventory"
BASE = "2020-07-10T09:00:00-07:00"

GOOD_POLICY = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: no-tiktok
  title: No TikTok
spec:
  apps: [tiktok]
  deadline: 2020-07-20T17:00:00-07:00
  enforcement:
    deny: [email]
"""

BAD_POLICIES = [
    (
        "unknown-key",
        GOOD_POLICY.replace("  apps:", "  colour: red\n  apps:"),
        "7:11",
        "unknown key",
    ),
    ("duplicate-key", GOOD_POLICY + "kind: AppPolicy\n", "11:1", "duplicate key 'kind'"),
    (
        "no-as-false",
        GOOD_POLICY.replace("deny: [email]", "deny: [email]\n  notices: {blocked: no}"),
        "11:22",
        "ambiguous value 'no'",
    ),
    (
        "naive-deadline",
        GOOD_POLICY.replace("2020-07-20T17:00:00-07:00", "2020-07-20T17:00:00"),
        "8:13",
        "offset",
    ),
    ("bare-date", GOOD_POLICY.replace("2020-07-20T17:00:00-07:00", "2020-07-20"), "8:13", "date"),
    (
        "month-duration",
        GOOD_POLICY.replace("  enforcement:", "  grace: P1M\n  enforcement:"),
        "9:10",
        "P1M",
    ),
    ("unknown-app", GOOD_POLICY.replace("[tiktok]", "[tik-tok]"), "7:10", "tik-tok"),
    (
        "empty-platforms",
        GOOD_POLICY.replace("  deadline:", "  scope: {platforms: []}\n  deadline:"),
        "8:22",
        "omit the key",
    ),
    ("not-yaml", "apiVersion: [unclosed\n", "2:1", ""),
]


@pytest.fixture
def loaded(cli):
    assert cli("demo", "--base-time", BASE).code == 0
    assert cli("admin", "create", "author@example.com", "--role", "author").code == 0
    return cli


@pytest.mark.parametrize(
    ("name", "text", "position", "message"), BAD_POLICIES, ids=[b[0] for b in BAD_POLICIES]
)
def test_a_malformed_policy_is_located_and_changes_nothing(
    loaded, store, tmp_path, name, text, position, message
):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    before = table_digest(store.engine)
    for command in (
        ["policy", "validate", str(path)],
        ["policy", "apply", str(path), "--as", "author@example.com"],
    ):
        result = loaded(*command)
        assert result.code == 2, result.err
        first = result.err.splitlines()[0]
        assert first.startswith(f"{path}:{position}: "), first
        assert message in result.err
    assert table_digest(store.engine) == before


def test_a_valid_policy_validates(loaded, tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD_POLICY)
    result = loaded("policy", "validate", str(path))
    assert result.code == 0
    assert "ok (no-tiktok," in result.err


@pytest.mark.parametrize(
    ("source", "fixture", "where"),
    [
        ("native", "not-json.json", "not-json.json:"),
        ("native", "wrong-format.json", "wrong-format.json:"),
        ("native", "bad-entries.json", "bad-entries.json:"),
        ("csv", "bad-header.csv", "bad-header.csv:"),
        ("csv", "bad-rows.csv", "bad-rows.csv:"),
    ],
)
def test_a_malformed_inventory_file_in_strict_mode_changes_nothing(
    loaded, store, source, fixture, where
):
    before = table_digest(store.engine)
    result = loaded(
        "import", source, str(FIXTURES / fixture), "--strict", "--at", "2020-07-10T10:00:00-07:00"
    )
    assert result.code == 2, result.err
    assert where in result.err
    assert table_digest(store.engine) == before


def test_without_strict_a_bad_entry_skips_only_its_device(loaded, store):
    result = loaded(
        "import",
        "native",
        str(FIXTURES / "bad-entries.json"),
        "--at",
        "2020-07-10T10:00:00-07:00",
        "--json",
    )
    assert result.code == 2
    (summary,) = result.json()
    assert summary["skipped"]
    assert all("bad-entries.json:" in line for line in summary["skipped"])


def test_a_valid_native_file_imports(loaded):
    result = loaded(
        "import", "native", str(FIXTURES / "valid.json"), "--at", "2030-01-01T00:00:00Z", "--json"
    )
    assert result.code == 0, result.err
    (summary,) = result.json()
    assert summary["reports_applied"] >= 1
    assert summary["skipped"] == []


def test_an_unreadable_file_is_a_clear_error(loaded, store, tmp_path):
    before = table_digest(store.engine)
    result = loaded("import", "native", str(tmp_path / "missing.json"))
    assert result.code == 2
    assert "missing.json: cannot read" in result.err
    assert table_digest(store.engine) == before


def test_a_naive_at_is_refused(loaded):
    result = loaded("status", "--at", "2020-07-10T12:00:00")
    assert result.code == 2
    assert "--at: expected an RFC 3339 time with an offset" in result.err


@pytest.mark.parametrize(
    ("source", "good", "bads", "strict"),
    [
        ("native", "valid.json", ["not-json.json"], False),
        ("native", "valid.json", ["wrong-format.json", "missing.json", "not-json.json"], False),
        ("native", "valid.json", ["bad-entries.json"], True),
        ("csv", "valid.csv", ["bad-header.csv"], False),
        ("csv", "valid.csv", ["bad-rows.csv", "missing.csv"], True),
    ],
)
def test_a_multi_file_import_checks_every_file_before_applying_any(
    loaded, store, source, good, bads, strict
):
    """`import native good.json bad.json` used to commit good.json and then report bad.json."""
    before = table_digest(store.engine)
    files = [str(FIXTURES / good), *(str(FIXTURES / bad) for bad in bads)]
    flags = ["--strict"] if strict else []
    result = loaded("import", source, *files, *flags, "--at", "2030-01-01T00:00:00Z")
    assert result.code == 2, result.err
    for bad in bads:
        assert f"{FIXTURES / bad}:" in result.err, bad  # every bad file is named
    assert f"{len(bads)} of {len(files)} file(s) refused, nothing imported" in result.err
    assert table_digest(store.engine) == before
    # The same good file alone still imports, in one go with another good file.
    twice = loaded("import", source, str(FIXTURES / good), str(FIXTURES / good), "--json")
    assert twice.code == 0, twice.err
    assert [r["file"] for r in twice.json()] == [str(FIXTURES / good)] * 2
    assert table_digest(store.engine) != before
