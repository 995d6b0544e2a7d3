"""Identifier normalisation and matching rules, per namespace (appwarden.catalog.matching)."""

from __future__ import annotations

import re
import sqlite3

import pytest

from appwarden.catalog.matching import (
    PATTERN_NAMESPACES,
    is_pattern,
    key_matches,
    like_pattern,
    match_key,
    rule_key,
    windows_program_value,
)
from appwarden.vocabulary import AppNamespace

ZOOM_UPGRADE = "{C819B794-A45C-4F27-9860-0C86492A52CC}"


@pytest.mark.parametrize(
    ("namespace", "value", "key"),
    [
        ("apple_bundle_id", " com.zhiliaoapp.musically ", "com.zhiliaoapp.musically"),
        ("apple_bundle_id", "com.ss.iphone.ugc.Ame", "com.ss.iphone.ugc.ame"),
        ("apple_bundle_id", "US.ZOOM.XOS", "us.zoom.xos"),
        ("android_package", " com.zhiliaoapp.musically\n", "com.zhiliaoapp.musically"),
        ("android_package", "com.Zhiliaoapp.musically", "com.Zhiliaoapp.musically"),
        ("windows_upgrade_code", ZOOM_UPGRADE, ZOOM_UPGRADE),
        ("windows_upgrade_code", ZOOM_UPGRADE.lower(), ZOOM_UPGRADE),
        ("windows_upgrade_code", "c819b794-a45c-4f27-9860-0c86492a52cc", ZOOM_UPGRADE),
        (
            "windows_product_code",
            " {0a1b2c3d-1111-2222-3333-444455556666} ",
            "{0A1B2C3D-1111-2222-3333-444455556666}",
        ),
        (
            "windows_package_family",
            "BytedancePte.Ltd.TikTok_6yccndn6064se",
            "bytedancepte.ltd.tiktok_6yccndn6064se",
        ),
        (
            "windows_program",
            "Zoom Workplace  (64-bit)|Zoom Video Communications,   Inc.",
            "zoom workplace (64-bit)|zoom video communications, inc.",
        ),
        ("windows_program", "  WeChat |\tTencent  ", "wechat|tencent"),
        ("windows_program", "CapCut", "capcut|"),
        ("windows_program", "CapCut|", "capcut|"),
        (
            "windows_program",
            "zoom*|Zoom Video Communications, Inc.",
            "zoom*|zoom video communications, inc.",
        ),
        ("deb_package", "Zoom", "zoom"),
        ("rpm_package", " zoom ", "zoom"),
        ("snap_package", "telegram-desktop", "telegram-desktop"),
        ("flatpak_app", "org.telegram.desktop", "org.telegram.desktop"),
        ("flatpak_app", "us.zoom.Zoom", "us.zoom.Zoom"),
        (
            "chrome_extension_id",
            "ABCDEFGHIJKLMNOPABCDEFGHIJKLMNOP",
            "abcdefghijklmnopabcdefghijklmnop",
        ),
        ("web_domain", "TikTok.com.", "tiktok.com"),
        ("web_domain", "*.TikTok.com", "*.tiktok.com"),
        ("web_domain", "bücher.example", "xn--bcher-kva.example"),
        ("display_name", "  TikTok   Lite ", "tiktok lite"),
        ("display_name", "微信", "微信"),
        ("display_name", "STRASSE", "strasse"),
        ("display_name", "Straße", "strasse"),
    ],
)
def test_match_key_normalises_per_namespace(namespace: str, value: str, key: str) -> None:
    assert match_key(namespace, value) == key
    # normalising a key again changes nothing
    assert match_key(namespace, key) == key


@pytest.mark.parametrize(
    ("namespace", "value", "message"),
    [
        ("bundle_id", "com.example", "unknown identifier namespace 'bundle_id'"),
        ("android_package", "", "android_package value is empty"),
        ("apple_bundle_id", "   ", "apple_bundle_id value is empty"),
        ("android_package", "com.example app", "must not contain whitespace"),
        ("android_package", "com.example.*", "must not contain '*'"),
        ("apple_bundle_id", "com.example\x00", "control character"),
        ("windows_upgrade_code", "C819B794-A45C-4F27-9860", "is not a GUID"),
        ("windows_upgrade_code", "{C819B794-A45C-4F27-9860-0C86492A52CC", "is not a GUID"),
        ("windows_product_code", "ZoomUMX", "is not a GUID"),
        ("windows_program", "|Zoom Video Communications, Inc.", "has no program name"),
        ("chrome_extension_id", "abcdefghijklmnopabcdefghijklmnoq", "not an extension id"),
        ("chrome_extension_id", "abcdefghijklmnop", "not an extension id"),
        ("web_domain", "https://tiktok.com/", "not a URL"),
        ("web_domain", "tiktok..com", "not a domain name"),
        ("web_domain", "tik tok.com", "not a domain name"),
        ("display_name", "x" * 513, "the limit is 512"),
    ],
)
def test_match_key_rejects_invalid_values(namespace: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        match_key(namespace, value)


def test_every_vocabulary_namespace_has_a_rule() -> None:
    for namespace in AppNamespace:
        sample = {
            AppNamespace.WINDOWS_UPGRADE_CODE: ZOOM_UPGRADE,
            AppNamespace.WINDOWS_PRODUCT_CODE: ZOOM_UPGRADE,
            AppNamespace.CHROME_EXTENSION_ID: "a" * 32,
        }.get(namespace, "example.app")
        assert match_key(namespace, sample)


@pytest.mark.parametrize(
    ("namespace", "catalog_value", "observed_value", "matches"),
    [
        # Apple bundle ids are case-insensitive
        ("apple_bundle_id", "com.ss.iphone.ugc.Ame", "COM.SS.IPHONE.UGC.AME", True),
        ("apple_bundle_id", "com.zhiliaoapp.musically", "com.zhiliaoapp.musically.go", False),
        # Android packages are exact
        ("android_package", "com.zhiliaoapp.musically", "com.zhiliaoapp.musically", True),
        ("android_package", "com.zhiliaoapp.musically", "com.Zhiliaoapp.musically", False),
        ("android_package", "com.zhiliaoapp.musically", "com.zhiliaoapp.musically.go", False),
        # GUIDs with or without braces, any case
        ("windows_upgrade_code", ZOOM_UPGRADE, "c819b794-a45c-4f27-9860-0c86492a52cc", True),
        ("windows_product_code", ZOOM_UPGRADE, "{C819B794-A45C-4F27-9860-0C86492A52CD}", False),
        # name + publisher patterns
        (
            "windows_program",
            "zoom*|zoom video communications, inc.",
            "Zoom Workplace (64-bit)|Zoom Video Communications, Inc.",
            True,
        ),
        (
            "windows_program",
            "zoom*|zoom video communications, inc.",
            "Zoom(64bit)|Zoom Video Communications, Inc.",
            True,
        ),
        (
            "windows_program",
            "zoom*|zoom video communications, inc.",
            "Zoom Workplace (64-bit)|Zoomer Ltd.",
            False,
        ),
        (
            "windows_program",
            "zoom*|zoom video communications, inc.",
            "Zoom Workplace (64-bit)|",
            False,
        ),
        ("windows_program", "zoom*|zoom video communications, inc.", "ZoomIt|Sysinternals", False),
        (
            "windows_program",
            "WeChat|Tencent*",
            "WeChat|Tencent Technology (Shenzhen) Company Limited",
            True,
        ),
        ("windows_program", "WeChat|Tencent*", "WeChat Work|Tencent", False),
        (
            "windows_program",
            "telegram desktop*|telegram*",
            "Telegram Desktop version 5.2.3|Telegram FZ-LLC",
            True,
        ),
        ("windows_program", "capcut|bytedance pte. ltd.", "CapCut|Bytedance Pte. Ltd.", True),
        # display names
        ("display_name", "TikTok", "  tiktok ", True),
        ("display_name", "TikTok", "TikTok Lite", False),
        ("display_name", "TikTok*", "TikTok Lite", True),
        # web domains: "*.tiktok.com" does not cover the apex
        ("web_domain", "*.tiktok.com", "www.TikTok.com.", True),
        ("web_domain", "*.tiktok.com", "a.b.tiktok.com", True),
        ("web_domain", "*.tiktok.com", "tiktok.com", False),
        ("web_domain", "*.tiktok.com", "nottiktok.com", False),
        ("web_domain", "tiktok.com", "www.tiktok.com", False),
        # chrome extensions: exact, case-insensitive input
        ("chrome_extension_id", "a" * 32, "A" * 32, True),
    ],
)
def test_key_matches(
    namespace: str, catalog_value: str, observed_value: str, matches: bool
) -> None:
    catalog_key = match_key(namespace, catalog_value)
    observed_key = match_key(namespace, observed_value)
    assert key_matches(namespace, catalog_key, observed_key) is matches


def test_glob_metacharacters_other_than_star_are_literal() -> None:
    key = match_key("display_name", "App [Beta]? (x)*")
    assert key_matches("display_name", key, match_key("display_name", "App [Beta]? (x) 2"))
    assert not key_matches("display_name", key, match_key("display_name", "App B? (x) 2"))


def test_star_is_literal_outside_pattern_namespaces() -> None:
    # a key of a non-pattern namespace is never a glob (and match_key refuses '*' there anyway)
    assert not is_pattern("apple_bundle_id", "com.*")
    assert not key_matches("apple_bundle_id", "com.*", "com.example")


@pytest.mark.parametrize(
    ("namespace", "key", "expected"),
    [
        ("windows_program", "zoom*|zoom video communications, inc.", True),
        ("windows_program", "capcut|bytedance pte. ltd.", False),
        ("display_name", "tiktok*", True),
        ("display_name", "tiktok", False),
        ("web_domain", "*.tiktok.com", True),
        ("web_domain", "tiktok.com", False),
        ("android_package", "com.*", False),
        ("chrome_extension_id", "*", False),
    ],
)
def test_is_pattern(namespace: str, key: str, expected: bool) -> None:
    assert is_pattern(namespace, key) is expected


def test_only_three_namespaces_take_patterns() -> None:
    assert {"windows_program", "display_name", "web_domain"} == PATTERN_NAMESPACES


@pytest.mark.parametrize(
    ("key", "like"),
    [
        ("*.tiktok.com", "%.tiktok.com"),
        ("zoom*|zoom video communications, inc.", "zoom%|zoom video communications, inc."),
        ("100%_free*", "100\\%\\_free%"),
        ("back\\slash*", "back\\\\slash%"),
        ("no pattern", "no pattern"),
    ],
)
def test_like_pattern_escapes(key: str, like: str) -> None:
    assert like_pattern(key) == like


@pytest.mark.parametrize(
    ("namespace", "catalog_value", "observed"),
    [
        (
            "windows_program",
            "zoom*|zoom video communications, inc.",
            "Zoom Workplace (64-bit)|Zoom Video Communications, Inc.",
        ),
        ("windows_program", "zoom*|zoom video communications, inc.", "ZoomIt|Sysinternals"),
        ("display_name", "100%_free*", "100%_free app"),
        ("display_name", "100%_free*", "100x free app"),
        ("display_name", "100%_free*", "100%xfree app"),
        ("display_name", "back\\slash*", "back\\slash app"),
        ("web_domain", "*.tiktok.com", "www.tiktok.com"),
        ("web_domain", "*.tiktok.com", "tiktok.com"),
        ("web_domain", "*tiktokv.us", "api.tiktokv.us"),
    ],
)
def test_like_pattern_agrees_with_key_matches_in_sqlite(
    namespace: str, catalog_value: str, observed: str
) -> None:
    catalog_key = match_key(namespace, catalog_value)
    observed_key = match_key(namespace, observed)
    with sqlite3.connect(":memory:") as db:
        (sql_match,) = db.execute(
            "SELECT ? LIKE ? ESCAPE '\\'", (observed_key, like_pattern(catalog_key))
        ).fetchone()
    assert bool(sql_match) is key_matches(namespace, catalog_key, observed_key)


@pytest.mark.parametrize(
    ("namespace", "value"),
    [
        ("web_domain", "*"),
        ("web_domain", "*.com"),
        ("display_name", "*"),
        ("display_name", "ab*"),
        ("windows_program", "*|*"),
        ("windows_program", "*|tencent*"),
    ],
)
def test_rule_key_rejects_patterns_that_match_too_much(namespace: str, value: str) -> None:
    match_key(namespace, value)  # a valid key ...
    with pytest.raises(ValueError, match=r"too broad|must name the program"):
        rule_key(namespace, value)  # ... but not a rule an administrator may write


def test_rule_key_accepts_specific_patterns() -> None:
    assert rule_key("windows_program", "tiktok*|tiktok*") == "tiktok*|tiktok*"
    assert rule_key("web_domain", "*tiktokv.us") == "*tiktokv.us"
    assert rule_key("display_name", "TikTok") == "tiktok"


def test_windows_program_value() -> None:
    assert windows_program_value("Zoom Workplace (64-bit)", "Zoom Video Communications, Inc.") == (
        "Zoom Workplace (64-bit)|Zoom Video Communications, Inc."
    )
    assert match_key("windows_program", windows_program_value("CapCut", None)) == "capcut|"
