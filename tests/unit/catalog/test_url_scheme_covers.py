"""iOS URL schemes in the catalog (docs/catalog.md, "iOS URL schemes"): their match keys, the
per-entry `url_scheme_covers` opt-in with its located errors, which bundle ids a policy's
resolved set marks as covered, and the approval hash binding the opt-in."""

from __future__ import annotations

import dataclasses

import pytest

from appwarden.catalog.loader import load_catalog, parse_catalog
from appwarden.catalog.matching import match_key
from appwarden.catalog.model import Catalog
from appwarden.errors import InvalidInput
from appwarden.policies.document import parse_policy
from appwarden.policies.service import content_hash, resolve_identifiers
from appwarden.vocabulary import platform_carries

HEADER = "apiVersion: appwarden/v1\nkind: AppCatalog\napps:\n"
POLICY = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata: {id: tiktok-phones, title: TikTok}
spec:
  apps: [tiktok]
  deadline: 2020-07-10T23:59:59-07:00
  enforcement: {deny: []}
"""


def test_a_scheme_is_lower_cased_and_must_be_a_scheme():
    assert match_key("ios_url_scheme", " SNSSDK1233 ") == "snssdk1233"
    for bad in ("snssdk1233://", "1tiktok", "tik tok", "tik/tok"):
        with pytest.raises(ValueError, match="is not a URL scheme"):
            match_key("ios_url_scheme", bad)


def test_no_platform_is_required_to_prove_a_scheme_absent():
    for platform in ("ios", "ipados", "macos", "unknown"):
        assert not platform_carries(platform, "ios_url_scheme")


def _problems(body: str) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        parse_catalog(HEADER + body, "cat.yaml", origin="organisation")
    return caught.value.lines()


def test_the_opt_in_needs_a_reason_and_both_namespaces():
    entry = "  - slug: x1\n    name: X\n    identifiers:\n"
    scheme = "      - {namespace: ios_url_scheme, value: xapp}\n"
    bundle = "      - {namespace: apple_bundle_id, value: com.example.x}\n"
    assert _problems(entry + scheme + bundle + "    url_scheme_covers: yes please\n") == [
        "cat.yaml:9:24: url_scheme_covers must be a mapping {reason}, not text"
    ]
    assert _problems(entry + scheme + bundle + "    url_scheme_covers: {}\n") == [
        "cat.yaml:9:24: reason is required"
    ]
    assert _problems(entry + bundle + "    url_scheme_covers: {reason: always}\n") == [
        "cat.yaml:8:24: url_scheme_covers needs the entry to list an ios_url_scheme identifier: "
        "it says an absent URL scheme proves the entry's bundle ids absent"
    ]


def _covered(catalog: Catalog) -> dict[str, bool]:
    doc = parse_policy(POLICY, "p.yaml")
    return {
        r.identifier.key: r.covered_by_scheme
        for r in resolve_identifiers(doc, catalog)
        if r.identifier.namespace == "apple_bundle_id"
    }


def test_the_shipped_tiktok_entries_opt_in_and_the_hash_binds_it():
    shipped = load_catalog()
    assert _covered(shipped) == {
        "apple_bundle_id:com.ss.iphone.ugc.ame": True,
        "apple_bundle_id:com.zhiliaoapp.musically": True,
    }
    tiktok = dataclasses.replace(shipped.get("tiktok"), url_scheme_covers=None)
    without = Catalog({**shipped.apps, "tiktok": tiktok})
    assert _covered(without) == {
        "apple_bundle_id:com.ss.iphone.ugc.ame": True,
        "apple_bundle_id:com.zhiliaoapp.musically": False,
    }
    doc = parse_policy(POLICY, "p.yaml")
    hashes = {
        content_hash(doc, resolve_identifiers(doc, catalog), "templates")
        for catalog in (shipped, without)
    }
    assert len(hashes) == 2  # same identifiers, different opt-in: approvals are void
    assert shipped.digest != without.digest
