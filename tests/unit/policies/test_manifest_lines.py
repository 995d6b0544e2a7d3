"""What a targeted-check manifest asks each platform (docs/targeted-check.md, "The manifest"):
only lines the platform can answer for; on iOS the schemes and the bundle ids they cover; never
a pattern."""

from __future__ import annotations

from appwarden.policies.models import PolicyIdentifier
from appwarden.usecases.checks import manifest_lines


def row(namespace: str, value: str, *, pattern: bool = False, covered: bool = False):
    return PolicyIdentifier(
        namespace=namespace,
        value=value,
        like_pattern=value.replace("*", "%") if pattern else None,
        covered_by_scheme=covered,
    )


ROWS = [
    row("android_package", "com.zhiliaoapp.musically"),
    row("apple_bundle_id", "com.zhiliaoapp.musically", covered=True),
    row("apple_bundle_id", "com.example.uncovered"),
    row("ios_url_scheme", "snssdk1233"),
    row("windows_program", "tiktok*|tiktok*", pattern=True),
    row("windows_package_family", "bytedance.tiktok_6yccndn6064se"),
    row("deb_package", "tiktok"),
    row("web_domain", "tiktok.com"),
    row("display_name", "tiktok"),
]


def test_each_platform_is_asked_only_what_it_can_answer():
    assert manifest_lines(ROWS, "android") == ["android_package:com.zhiliaoapp.musically"]
    assert manifest_lines(ROWS, "ios") == [
        "apple_bundle_id:com.zhiliaoapp.musically",
        "ios_url_scheme:snssdk1233",
    ]
    assert manifest_lines(ROWS, "macos") == [
        "apple_bundle_id:com.example.uncovered",
        "apple_bundle_id:com.zhiliaoapp.musically",
    ]
    assert manifest_lines(ROWS, "windows") == [
        "windows_package_family:bytedance.tiktok_6yccndn6064se"
    ]
    assert manifest_lines(ROWS, "linux") == ["deb_package:tiktok"]
