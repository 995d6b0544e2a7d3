"""Loading, validating and merging catalog files; resolution and the digest."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from appwarden.catalog.loader import load_catalog, parse_catalog, shipped_text
from appwarden.catalog.model import AppIdentifier, Catalog, CatalogApp
from appwarden.errors import InvalidInput, NotFound

HEADER = "apiVersion: appwarden/v1\nkind: AppCatalog\n"


def doc(body: str) -> str:
    return HEADER + textwrap.dedent(body).lstrip("\n")


def problems_of(text: str, filename: str = "cat.yaml", **kwargs: object) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        parse_catalog(text, filename, origin=kwargs.pop("origin", "shipped"), **kwargs)  # type: ignore[arg-type]
    return caught.value.lines()


def ident(namespace: str, value: str) -> AppIdentifier:
    return AppIdentifier.of(namespace, value)


def write(tmp_path: Path, body: str, name: str = "org-catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc(body), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the shipped catalog


def test_shipped_catalog_loads_and_has_the_reference_apps() -> None:
    catalog = load_catalog()
    for slug in (
        "tiktok",
        "tiktok-lite",
        "trill",
        "tiktok-now",
        "tiktok-tv",
        "tiktok-shop-seller",
        "douyin",
        "capcut",
        "wechat",
        "zoom",
        "telegram",
        "bytedance-family",
    ):
        assert slug in catalog
        assert catalog.get(slug).origin == "shipped"
        assert catalog.get(slug).notes  # every shipped entry states its evidence


def test_resolve_tiktok_is_tiktok_lite_trill_and_now() -> None:
    catalog = load_catalog()
    resolved = catalog.resolve(["tiktok"])
    expected = {
        ident("android_package", "com.zhiliaoapp.musically"),
        ident("apple_bundle_id", "com.zhiliaoapp.musically"),
        ident("android_package", "com.zhiliaoapp.musically.go"),
        ident("display_name", "TikTok Lite"),
        ident("android_package", "com.ss.android.ugc.trill"),
        ident("apple_bundle_id", "com.ss.iphone.ugc.Ame"),
        ident("android_package", "com.ss.android.ugc.now"),
        ident("display_name", "TikTok"),
        ident("web_domain", "*.tiktok.com"),
        ident("web_domain", "tiktok.com"),
    }
    assert expected <= resolved
    for slug in ("tiktok", "tiktok-lite", "trill", "tiktok-now"):
        assert set(catalog.get(slug).identifiers) <= resolved
    # not the TV app or Douyin
    assert ident("android_package", "com.tiktok.tv") not in resolved
    assert ident("android_package", "com.ss.android.ugc.aweme") not in resolved


def test_resolve_app_credits_each_identifier_to_its_app() -> None:
    catalog = load_catalog()
    rows = catalog.resolve_app("tiktok")
    by_identifier = {identifier: slug for slug, identifier in rows}
    assert by_identifier[ident("android_package", "com.ss.android.ugc.trill")] == "trill"
    assert by_identifier[ident("android_package", "com.zhiliaoapp.musically")] == "tiktok"
    assert rows[0][0] == "tiktok"  # the app's own identifiers come first
    assert len(rows) == len(by_identifier) == len(catalog.resolve(["tiktok"]))


def test_bytedance_family_is_transitive() -> None:
    catalog = load_catalog()
    resolved = catalog.resolve(["bytedance-family"])
    assert catalog.get("bytedance-family").identifiers == ()
    assert ident("android_package", "com.ss.android.ugc.trill") in resolved  # via tiktok
    assert ident("android_package", "com.ss.android.ugc.aweme") in resolved
    assert ident("android_package", "com.lemon.lvoverseas") in resolved
    assert catalog.expand(["bytedance-family"])[:2] == ["bytedance-family", "tiktok"]


def test_shipped_reference_identifiers() -> None:
    catalog = load_catalog()
    zoom = set(catalog.get("zoom").identifiers)
    assert ident("windows_upgrade_code", "{C819B794-A45C-4F27-9860-0C86492A52CC}") in zoom
    assert ident("windows_program", "zoom*|zoom video communications, inc.") in zoom
    assert ident("apple_bundle_id", "us.zoom.xos") in zoom
    wechat = set(catalog.get("wechat").identifiers)
    assert ident("apple_bundle_id", "com.tencent.xinWeChat") in wechat
    assert ident("windows_program", "WeChat|Tencent*") in wechat
    telegram = set(catalog.get("telegram").identifiers)
    assert ident("apple_bundle_id", "ru.keepcoder.Telegram") in telegram
    observed = ident("windows_program", "Zoom Workplace (64-bit)|Zoom Video Communications, Inc.")
    assert catalog.lookup(observed) == ["zoom"]
    assert catalog.lookup(ident("android_package", "com.example.unknown")) == []


def test_get_unknown_slug_suggests_close_matches() -> None:
    catalog = load_catalog()
    with pytest.raises(NotFound, match=r"no app 'tiktk' in the catalog; did you mean tiktok"):
        catalog.get("tiktk")
    with pytest.raises(NotFound, match="did you mean tiktok"):
        catalog.resolve(["TikTok"])
    with pytest.raises(NotFound, match="catalog list"):
        catalog.get("zzzzzzzzzz")


def test_digest_is_stable_across_loads() -> None:
    first, second = load_catalog(), load_catalog()
    assert first.digest == second.digest
    assert len(first.digest) == 64
    reparsed = Catalog(parse_catalog(shipped_text(), "again.yaml", origin="shipped"))
    assert reparsed.digest == first.digest


def test_catalog_is_read_only() -> None:
    catalog = load_catalog()
    with pytest.raises(TypeError):
        catalog.apps["x"] = catalog.get("tiktok")  # type: ignore[index]


# ------------------------------------------------------------------ organisation catalogs


def test_org_file_adds_an_app(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        apps:
          - slug: acme-chat
            name: Acme Chat
            identifiers:
              - {namespace: android_package, value: com.acme.chat}
          - slug: banned-bundle
            name: Our banned apps
            includes: [acme-chat, tiktok]
        """,
    )
    catalog = load_catalog(path)
    assert catalog.get("acme-chat").origin == "organisation"
    resolved = catalog.resolve(["banned-bundle"])
    assert ident("android_package", "com.acme.chat") in resolved
    assert ident("android_package", "com.ss.android.ugc.trill") in resolved
    assert catalog.get("tiktok").origin == "shipped"


def test_org_override_replaces_the_shipped_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        apps:
          - slug: tiktok
            name: TikTok (our definition)
            identifiers:
              - {namespace: android_package, value: com.zhiliaoapp.musically}
        """,
    )
    catalog = load_catalog(path)
    app = catalog.get("tiktok")
    assert app.origin == "organisation"
    assert app.name == "TikTok (our definition)"
    assert app.includes == ()
    assert app.publisher is None
    assert catalog.resolve(["tiktok"]) == {ident("android_package", "com.zhiliaoapp.musically")}
    # other shipped entries still include it
    assert ident("android_package", "com.zhiliaoapp.musically") in catalog.resolve(
        ["bytedance-family"]
    )


def test_org_extends_adds_identifiers_and_includes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        apps:
          - slug: tiktok
            extends: true
            includes: [tiktok-tv]
            identifiers:
              - {namespace: windows_package_family, value: BytedancePte.Ltd.TikTok_6yccndn6064se}
              - {namespace: android_package, value: com.zhiliaoapp.musically}
        """,
    )
    shipped = load_catalog().get("tiktok")
    app = load_catalog(path).get("tiktok")
    assert app.origin == "organisation"
    assert app.name == shipped.name
    assert app.notes == shipped.notes
    assert app.includes == (*shipped.includes, "tiktok-tv")
    pfn = ident("windows_package_family", "bytedancepte.ltd.tiktok_6yccndn6064se")
    assert app.identifiers == (*shipped.identifiers, pfn)  # the repeated one is not added twice
    resolved = load_catalog(path).resolve(["tiktok"])
    assert pfn in resolved
    assert ident("android_package", "com.tiktok.tv") in resolved


def test_digest_changes_when_the_org_file_changes_one_identifier(tmp_path: Path) -> None:
    body = """
        apps:
          - slug: acme-chat
            name: Acme Chat
            identifiers:
              - {namespace: android_package, value: %s}
        """
    one = write(tmp_path, body % "com.acme.chat", "one.yaml")
    two = write(tmp_path, body % "com.acme.chat2", "two.yaml")
    shipped = load_catalog().digest
    assert load_catalog(one).digest == load_catalog(one).digest
    assert load_catalog(one).digest != shipped
    assert load_catalog(two).digest not in (shipped, load_catalog(one).digest)
    # the same content under another file name gives the same digest
    same = write(tmp_path, body % "com.acme.chat", "same.yaml")
    assert load_catalog(same).digest == load_catalog(one).digest


def test_digest_changes_with_an_extension(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        apps:
          - slug: zoom
            extends: true
            identifiers:
              - {namespace: deb_package, value: zoom}
        """,
    )
    assert load_catalog(path).digest != load_catalog().digest


def test_missing_org_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read the organisation catalog"):
        load_catalog(tmp_path / "nope.yaml")


def test_org_include_cycle_through_shipped_entries(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        apps:
          - slug: trill
            name: trill, redefined
            includes: [tiktok]
        """,
    )
    with pytest.raises(InvalidInput) as caught:
        load_catalog(path)
    assert caught.value.lines() == [
        f"{path}:6:16: include cycle: tiktok -> trill -> tiktok",
    ]


def test_org_extends_needs_a_shipped_app(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        apps:
          - slug: not-shipped
            extends: true
            identifiers:
              - {namespace: android_package, value: com.example}
        """,
    )
    with pytest.raises(InvalidInput) as caught:
        load_catalog(path)
    assert caught.value.lines() == [
        f"{path}:5:14: extends: true needs a shipped app 'not-shipped' to extend; "
        "there is none (drop extends to add a new app)"
    ]


# ------------------------------------------------------------------ malformed files, located


GOOD_APP = """
  - slug: good
    name: Good
    identifiers:
      - {namespace: android_package, value: com.example.good}
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "apps: []\ncolour: blue\n",
            [
                "cat.yaml:4:9: unknown key 'colour' in the catalog; "
                "expected one of: apiVersion, kind, apps"
            ],
            id="unknown-top-level-key",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    identifers: []\n",
            [
                "cat.yaml:6:17: unknown key 'identifers' in an app; expected one of: slug, name, "
                "publisher, includes, identifiers, notes, extends, url_scheme_covers",
            ],
            id="unknown-app-key",
        ),
        pytest.param(
            "apps:\n  - slug: Bad_Slug\n    name: X\n    includes: [good]\n" + GOOD_APP,
            ["cat.yaml:4:11: slug 'Bad_Slug' must be 2-64 characters of a-z, 0-9 and '-'"],
            id="bad-slug",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: [X]\n    includes: [good]\n" + GOOD_APP,
            ["cat.yaml:5:11: name must be text, not a list"],
            id="name-wrong-type",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    includes: [good]\n" + GOOD_APP,
            ["cat.yaml:4:5: name is required"],
            id="name-missing",
        ),
        pytest.param(
            "apps: {slug: x1}\n",
            ["cat.yaml:3:7: apps must be a list of apps, not a mapping"],
            id="apps-not-a-list",
        ),
        pytest.param(
            "apps:\n" + GOOD_APP.lstrip("\n") + GOOD_APP.lstrip("\n"),
            ["cat.yaml:8:11: duplicate slug 'good' (first defined at cat.yaml:4:11)"],
            id="duplicate-slug",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    identifiers:\n"
            "      - {namespace: bundle_id, value: com.example}\n",
            [
                "cat.yaml:7:21: unknown identifier namespace 'bundle_id'; expected one of: "
                "android_package, apple_bundle_id, chrome_extension_id, deb_package, display_name, "
                "flatpak_app, ios_url_scheme, rpm_package, snap_package, web_domain, windows_package_family, "
                "windows_product_code, windows_program, windows_upgrade_code",
            ],
            id="unknown-namespace",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    identifiers:\n"
            "      - {namespace: windows_upgrade_code, value: 'C819B794-A45C'}\n",
            [
                "cat.yaml:7:50: windows_upgrade_code 'C819B794-A45C' is not a GUID "
                "(expected like {C819B794-A45C-4F27-9860-0C86492A52CC}, braces optional)",
            ],
            id="bad-guid",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    identifiers:\n"
            "      - {namespace: chrome_extension_id, value: not-an-id}\n",
            [
                "cat.yaml:7:49: chrome_extension_id 'not-an-id' is not an extension id "
                "(exactly 32 letters from a to p)",
            ],
            id="bad-extension-id",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    identifiers:\n"
            "      - {namespace: web_domain, value: '*.com'}\n",
            [
                "cat.yaml:7:40: web_domain pattern '*.com' is too broad: "
                "keep at least 4 characters besides '*'"
            ],
            id="too-broad-pattern",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    identifiers:\n"
            "      - {namespace: android_package, value: com.example}\n"
            "      - {namespace: android_package, value: ' com.example '}\n",
            [
                "cat.yaml:8:9: duplicate identifier android_package:com.example "
                "(also at cat.yaml:7:9)"
            ],
            id="duplicate-identifier",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    identifiers:\n"
            "      - {namespace: android_package, value: 12}\n",
            ["cat.yaml:7:45: value must be text, not a number"],
            id="value-not-text",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    identifiers:\n"
            "      - {namespace: android_package, value: com.example, platform: android}\n",
            [
                "cat.yaml:7:68: unknown key 'platform' in an identifier; "
                "expected one of: namespace, value"
            ],
            id="unknown-identifier-key",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    includes: [missing-app]\n" + GOOD_APP,
            ["cat.yaml:6:16: includes unknown app 'missing-app'"],
            id="unknown-include",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    includes: [goo]\n" + GOOD_APP,
            ["cat.yaml:6:16: includes unknown app 'goo'; did you mean good?"],
            id="unknown-include-suggests",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n",
            ["cat.yaml:4:5: app 'x1' has no identifiers and no includes: it would match nothing"],
            id="matches-nothing",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    includes: [x1]\n",
            ["cat.yaml:6:16: include cycle: x1 -> x1"],
            id="self-include",
        ),
        pytest.param(
            "apps:\n"
            "  - slug: tiktok\n    name: TikTok\n    includes: [trill]\n"
            "  - slug: trill\n    name: trill\n    includes: [tiktok]\n",
            ["cat.yaml:6:16: include cycle: tiktok -> trill -> tiktok"],
            id="cycle",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    extends: true\n    includes: [good]\n"
            + GOOD_APP,
            [
                "cat.yaml:6:14: extends is only allowed in an organisation catalog",
                "cat.yaml:5:11: 'name' cannot be changed by an entry with extends: true "
                "(it only adds includes and identifiers); "
                "drop extends to replace the shipped entry",
            ],
            id="extends-in-shipped",
        ),
        pytest.param(
            "apps:\n  - slug: x1\n    name: X\n    extends: yes\n    includes: [good]\n" + GOOD_APP,
            [
                "cat.yaml:6:14: ambiguous value 'yes': YAML reads it as a boolean; "
                "write true or false, or quote it if you mean the text",
            ],
            id="yaml-boolean-surprise",
        ),
    ],
)
def test_malformed_catalog_is_located(body: str, expected: list[str]) -> None:
    assert problems_of(HEADER + body) == expected


def test_wrong_api_version_and_kind() -> None:
    text = "apiVersion: appwarden/v2\nkind: AppPolicy\napps: []\n"
    assert problems_of(text) == [
        "cat.yaml:1:13: apiVersion must be 'appwarden/v1', not 'appwarden/v2'",
        "cat.yaml:2:7: kind must be 'AppCatalog', not 'AppPolicy'",
    ]


def test_missing_header_keys() -> None:
    assert problems_of("apps: []\n") == [
        "cat.yaml:1:1: apiVersion is required (expected 'appwarden/v1')",
        "cat.yaml:1:1: kind is required (expected 'AppCatalog')",
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = doc(
        """
        apps:
          - slug: a
            name: A
            identifiers:
              - {namespace: android_package, value: ''}
          - slug: b2
            name: ''
            includes: [good]
        """
    )
    assert problems_of(text) == [
        "cat.yaml:4:11: slug 'a' must be 2-64 characters of a-z, 0-9 and '-'",
        "cat.yaml:7:45: value must not be empty",
        "cat.yaml:9:11: name must not be empty",
    ]


def test_extends_entry_may_not_change_the_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        apps:
          - slug: tiktok
            extends: true
            name: TikTok 2
            identifiers:
              - {namespace: android_package, value: com.example}
        """,
    )
    with pytest.raises(InvalidInput) as caught:
        load_catalog(path)
    assert caught.value.lines() == [
        f"{path}:6:11: 'name' cannot be changed by an entry with extends: true (it only adds "
        "includes and identifiers); drop extends to replace the shipped entry"
    ]


def test_org_file_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(HEADER + "apps:\n  - slug: x1\n   name: X\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_catalog(path)
    (line,) = caught.value.lines()
    assert line.startswith(f"{path}:5:")


def test_parse_catalog_returns_apps_by_slug() -> None:
    apps = parse_catalog(HEADER + "apps:" + GOOD_APP, "x.yaml", origin="organisation")
    assert apps == {
        "good": CatalogApp(
            slug="good",
            name="Good",
            publisher=None,
            includes=(),
            identifiers=(AppIdentifier("android_package", "com.example.good"),),
            notes=None,
            origin="organisation",
        )
    }


def test_parse_catalog_rejects_unknown_origin() -> None:
    with pytest.raises(ValueError, match="origin"):
        parse_catalog(doc("apps: []"), "x.yaml", origin="vendor")


def test_resolve_guards_against_hand_built_cycles() -> None:
    a = CatalogApp("aa", "A", None, ("bb",), (AppIdentifier("display_name", "a"),), None, "shipped")
    b = CatalogApp("bb", "B", None, ("aa",), (AppIdentifier("display_name", "b"),), None, "shipped")
    catalog = Catalog({"aa": a, "bb": b})
    assert catalog.resolve(["aa"]) == {
        AppIdentifier("display_name", "a"),
        AppIdentifier("display_name", "b"),
    }
