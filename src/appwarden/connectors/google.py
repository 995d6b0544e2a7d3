"""Google Workspace: the Directory API's `mobiledevices.list` with the `FULL` projection (the
`BASIC` one leaves out the Android `applications` list), `maxResults=100` (the most it allows),
page after page through `nextPageToken`. Authorised by a service account with domain-wide
delegation, acting as a Workspace admin, with the read-only mobile devices scope."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

from appwarden.connectors import Page, PageChain, checked_next, json_page
from appwarden.connectors.client import ApiClient

SOURCE = "google"
SCOPE_MOBILE_READONLY = "https://www.googleapis.com/auth/admin.directory.device.mobile.readonly"
MAX_RESULTS = 100  # the Directory API's maximum for mobiledevices.list


class GoogleConnector:
    source = SOURCE

    def __init__(self, client: ApiClient, base_url: str, *, customer_id: str = "my_customer"):
        self._client = client
        customer = quote(customer_id, safe="")
        self._url = f"{base_url.rstrip('/')}/admin/directory/v1/customer/{customer}/devices/mobile"

    def pages(self) -> Iterator[Page]:
        chain = PageChain("Google mobiledevices.list")
        token: str | None = None
        while True:
            number = chain.next_page()
            label = f"google mobiledevices page {number}"
            params = {"projection": "FULL", "maxResults": str(MAX_RESULTS)}
            if token is not None:
                params["pageToken"] = token
            body = self._client.get(
                self._url, what=f"Google mobiledevices.list page {number}", params=params
            )
            token = checked_next(
                json_page(body, label).get("nextPageToken"), label, "nextPageToken"
            )
            yield Page(label, body)
            if token is None:
                return
            chain.follow(token)
