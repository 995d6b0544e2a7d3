"""Text from inventory files, policy and catalog files, the store or an error that quotes input is
printed literally: never interpreted as rich markup, never passed through as terminal escapes.

Rich markup such as `[link=https://evil.example]x[/link]` in a device name would otherwise become
a clickable terminal hyperlink (OSC 8) in `appwarden decide`, and a raw escape sequence in a JSON
string would reach the terminal as is. The consoles are made to behave like a colour terminal, so
our own styles are emitted and any injected one would be too.
"""

from __future__ import annotations

import orjson
import pytest
from rich.color import ColorSystem

from appwarden.cli import render
from appwarden.usecases.demo import POLICY_TEMPLATE

LINK = "[link=https://evil.example]click[/link]"
STYLE = "[bold red on white]loud[/]"
OSC8 = "\x1b]8;;https://evil.example\x1b\\osc\x1b]8;;\x1b\\"
CSI = "\x1b[5mblink\x1b[0m"
EVIL = f"{LINK} {STYLE}"


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's consoles as on a wide colour terminal (under pytest they write to a pipe)."""
    for console in (render.console, render.errors):
        monkeypatch.setattr(console, "_width", 400)
        monkeypatch.setattr(console, "_force_terminal", True)
        monkeypatch.setattr(console, "_color_system", ColorSystem.TRUECOLOR)


def _assert_literal(text: str, *expected: str) -> None:
    assert "\x1b]8;" not in text, "an OSC 8 hyperlink reached the terminal"
    for injected in ("\x1b[5m", "\x1b[7m", "\x1b[1;31;47m"):  # blink, reverse, bold red on white
        assert injected not in text, "an injected style reached the terminal"
    for item in expected:
        assert item in text, (item, text)


def _inventory(tmp_path):
    body = {
        "format": "appwarden.inventory/v1",
        "source": "mdm-export",
        "people": [{"email": "eve@example.com", "display_name": EVIL}],
        "devices": [
            {
                "identifiers": [{"namespace": "serial", "value": "EVIL0001"}],
                "platform": "ios",
                "form_factor": "phone",
                "ownership": "personal",
                "owner": "eve@example.com",
                "resources": ["email"],
                "name": EVIL,
                "report": {
                    "evidence_kind": "inventory",
                    "observed_at": "2020-07-10T08:00:00-07:00",
                    "apps": [
                        {
                            "namespace": "apple_bundle_id",
                            "value": "com.zhiliaoapp.musically",
                            "name": EVIL,
                        }
                    ],
                },
            },
            {  # refused (control characters): the error quotes the value, escaped
                "identifiers": [{"namespace": "serial", "value": "EVIL0002"}],
                "platform": "ios",
                "name": f"{OSC8} {CSI}",
                "report": {"evidence_kind": "inventory", "observed_at": "2020-07-10T08:00:00Z"},
            },
        ],
    }
    path = tmp_path / "[reverse]inventory.json"
    path.write_bytes(orjson.dumps(body))
    return path


def test_inventory_text_is_printed_literally(cli, tmp_path, terminal, demo):
    imported = cli("import", "native", str(_inventory(tmp_path)))
    assert imported.code == 2, imported.err  # the second device is skipped
    _assert_literal(imported.err, "[reverse]inventory.json", "1 report(s) applied", "\\x1b]8;")
    at = ("--at", "2020-07-11T12:00:00-07:00")
    status = cli("status", "--all", *at)
    assert status.code == 0
    _assert_literal(status.out, "[link=https://evil.example]", "[bold red on white]")
    decided = cli("decide", "serial:EVIL0001", "email", *at)
    assert decided.code == 0
    _assert_literal(decided.out, "serial:EVIL0001")
    # An error that quotes its input: the device reference comes from the command line.
    missing = cli("decide", f"serial:{LINK}", "email", *at)
    assert missing.code != 0
    _assert_literal(missing.err, LINK.upper())  # serial numbers are compared upper-cased


def test_policy_and_catalog_text_is_printed_literally(cli, tmp_path, terminal, monkeypatch):
    org = tmp_path / "org-catalog.yaml"
    org.write_text(
        "apiVersion: appwarden/v1\nkind: AppCatalog\napps:\n"
        f"  - slug: evil-app\n    name: '{EVIL}'\n    publisher: '{STYLE}'\n"
        f"    notes: '{LINK}'\n"
        "    identifiers: [{namespace: android_package, value: com.evil.app}]\n"
    )
    monkeypatch.setenv("APPWARDEN_CATALOG_FILE", str(org))
    listed = cli("catalog", "list")
    assert listed.code == 0, listed.err
    _assert_literal(listed.out, "[link=https://evil.example]", "[bold red on white]")
    shown = cli("catalog", "show", "evil-app")
    assert shown.code == 0, shown.err
    _assert_literal(shown.out, "[link=https://evil.example]click[/link]")

    good = tmp_path / "[blink]policy.yaml"
    good.write_text(
        POLICY_TEMPLATE.format(deadline="2020-07-11T06:59:59Z").replace(
            "title: Mandatory removal of TikTok", f"title: '{EVIL}'"
        )
    )
    validated = cli("policy", "validate", str(good))
    assert validated.code == 0, validated.err
    _assert_literal(validated.err, "[blink]policy.yaml: ok")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        POLICY_TEMPLATE.format(deadline="2020-07-11T06:59:59Z").replace(
            "apps: [tiktok]", f"apps: ['{LINK}']"
        )
    )
    refused = cli("policy", "validate", str(bad))
    assert refused.code == 2
    _assert_literal(refused.err, LINK)

    assert cli("admin", "create", "sam@example.com", "--role", "author").code == 0
    applied = cli("policy", "apply", str(good), "--as", "sam@example.com")
    assert applied.code == 0, applied.err
    _assert_literal(applied.err)
    listing = cli("policy", "list")
    _assert_literal(listing.out, "[link=https://evil.example]")
    show = cli("policy", "show", "tiktok-mobile-email")
    assert show.code == 0, show.err
    _assert_literal(show.out, EVIL)
