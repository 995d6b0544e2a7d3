"""Notices link each device's page on the portal, `{PUBLIC_URL}/me/devices/{device}?policy=…`: a
plain deep link with nothing of the person in it, so whoever follows it must sign in, and a
forwarded mail opens nothing for anyone else (docs/notices.md, docs/portal.md)."""

from __future__ import annotations

import re

from sqlalchemy import select
from tests.portal_harness import (
    MORNING,
    TimeFile,
    https_client,
    open_session,
    portal_settings,
    signed_in,
)

from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device
from appwarden.identity.models import SignInFlow
from appwarden.timeutil import iso
from appwarden.web.app import create_app

LINK = re.compile(r"https://appwarden\.example\.com(/me/devices/\d+\?policy=tiktok-mobile-email)")


def test_an_announcement_links_the_devices_own_page_and_only_its_owner_opens_it(
    store, cli, smtp_server, monkeypatch, tmp_path
):
    monkeypatch.setenv("APPWARDEN_PUBLIC_URL", "https://appwarden.example.com")
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00").code == 0
    assert cli("worker", "--once", "--at", iso(MORNING)).code == 0
    [announce] = [
        m
        for m in smtp_server.by_header("To", "alice@example.com")
        if m["X-Appwarden-Kind"] == "announce"
    ]
    text = announce.get_body(preferencelist=("plain",)).get_content()
    [path] = LINK.findall(text)
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        phone = uow.session.scalars(select(Device.id).where(Device.name == "Alice's iPhone")).one()
    assert path == f"/me/devices/{phone}?policy=tiktok-mobile-email"
    assert "alice" not in path  # nothing of the person: no token, no address
    html = announce.get_body(preferencelist=("html",)).get_content()
    assert f'href="https://appwarden.example.com{path.replace("&", "&amp;")}"' in html

    clock = TimeFile(tmp_path / "now")
    clock.set(MORNING)
    app = create_app(portal_settings(store, clock, tmp_path))
    with https_client(app) as anyone:
        assert anyone.get(path).headers["location"] == "/auth/sign-in"
        with unit_of_work(store.engine, now=MORNING, write=False) as uow:
            assert list(uow.session.scalars(select(SignInFlow.return_to))) == [path]
        bob = signed_in(https_client(app), open_session(store, "bob@example.com", MORNING))
        assert bob.get(path).status_code == 404  # alice forwarded it to bob: nothing opens
        alice = signed_in(https_client(app), open_session(store, "alice@example.com", MORNING))
        assert "Mandatory removal of TikTok" in alice.get(path).text


def test_the_demo_still_proposes_approves_and_releases_with_the_new_templates(store, cli):
    result = cli("demo", "--base-time", "2020-07-10T09:00:00-07:00")
    assert result.code == 0, result.err
    shown = cli("policy", "show", "tiktok-mobile-email", "--json")
    body = shown.json()
    assert body["state"] == "active"
    assert body["content_current"] is True
    assert [a["valid"] for a in body["approvals"]] == [True]
