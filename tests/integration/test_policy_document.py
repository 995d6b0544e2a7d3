"""The policy as approved, back out: `policy show --document` prints the stored document byte for
byte (an author edits the next version from it), and `policy show` names who approved which
content hash."""

from __future__ import annotations

import io

from appwarden.catalog.loader import load_catalog
from appwarden.cli import consoles, render
from appwarden.notifications.templates import templates_digest
from appwarden.policies.document import parse_policy
from appwarden.policies.service import content_hash, resolve_identifiers
from appwarden.settings import Settings
from appwarden.timeutil import parse_instant
from appwarden.usecases.demo import APPROVER, AUTHOR, POLICY_ID, policy_text

BASE = "2020-07-10T09:00:00-07:00"
AFTER = "2020-07-11T09:00:00Z"


def _demo(cli):
    loaded = cli("demo", "--base-time", BASE)
    assert loaded.code == 0, loaded.err


def _hash_of(text: str) -> str:
    """The content hash an approval binds (policies.service.content_hash), for this text."""
    catalog = load_catalog(Settings().catalog_file)
    doc = parse_policy(text, "printed.yaml", known_apps=catalog.slugs())
    return content_hash(doc, resolve_identifiers(doc, catalog), templates_digest())


def test_the_approved_document_comes_back_byte_for_byte(cli, tmp_path):
    _demo(cli)
    printed = cli("policy", "show", POLICY_ID, "--document", "--at", AFTER)
    assert printed.code == 0, printed.err
    assert printed.out == policy_text(parse_instant(BASE))  # as applied, comments and all
    path = tmp_path / "next.yaml"
    path.write_bytes(printed.out.encode())
    assert cli("policy", "validate", str(path)).code == 0
    shown = cli("policy", "show", POLICY_ID, "--json", "--at", AFTER).json()
    [approval] = shown["approvals"]
    assert approval["valid"] is True
    assert _hash_of(printed.out) == approval["content_hash"] == shown["content_hash"]


def test_an_older_version_by_number(cli, tmp_path):
    _demo(cli)
    first = cli("policy", "show", POLICY_ID, "--document", "--at", AFTER).out
    # The next version, edited from the printed one: CRLF line ends, a tab in a comment and a
    # new title, all of which must come back exactly as written.
    edited = first.replace("title: ", "title: Revised ", 1).replace("\n", "\r\n") + "#\tnext\r\n"
    path = tmp_path / "v2.yaml"
    path.write_bytes(edited.encode())
    applied = cli("policy", "apply", str(path), "--as", AUTHOR, "--at", AFTER, "--json")
    assert applied.code == 0, applied.err
    assert applied.json()["version"] == 2
    latest = cli("policy", "show", POLICY_ID, "--document", "--at", AFTER)
    assert latest.out == edited
    older = cli("policy", "show", POLICY_ID, "--version", "1", "--document", "--at", AFTER)
    assert older.code == 0, older.err
    assert older.out == first
    missing = cli("policy", "show", POLICY_ID, "--version", "9", "--document", "--at", AFTER)
    assert missing.code != 0
    assert "has no version 9" in missing.err
    assert missing.out == ""


def test_show_names_the_approver_and_the_content_hash(cli):
    _demo(cli)
    shown = cli("policy", "show", POLICY_ID, "--json", "--at", AFTER).json()
    [approval] = shown["approvals"]
    assert approval["approver"] == APPROVER
    assert approval["content_hash"] == shown["content_hash"]
    assert len(shown["content_hash"]) == 64
    text = cli("policy", "show", POLICY_ID, "--at", AFTER)
    assert text.code == 0, text.err
    assert f"content hash {shown['content_hash']}" in text.out
    assert f"approved by {APPROVER}" in text.out


def test_document_and_json_are_one_or_the_other(cli):
    _demo(cli)
    both = cli("policy", "show", POLICY_ID, "--document", "--json")
    assert both.code != 0
    assert both.out == ""
    assert "--document" in both.err


def test_on_a_terminal_the_document_is_literal_text(monkeypatch):
    """The document is user text: on a terminal no markup is interpreted and no control
    character reaches it; piped, it is written exactly."""
    screen = io.StringIO()
    terminal = consoles.PlainConsole(file=screen, force_terminal=True, width=200)
    monkeypatch.setattr(render, "console", terminal)
    render.emit_document("title: [bold]x[/bold] [link=https://evil.example]y[/link]\x1b[2J\n")
    shown = screen.getvalue()
    assert "[bold]x[/bold] [link=https://evil.example]y[/link]" in shown
    assert "\x1b[2J" not in shown
    assert "\\x1b[2J" in shown
