"""Google Workspace: the Directory API's `mobiledevices.list` with the `FULL` projection (the
`BASIC` one leaves out the Android `applications` list), `maxResults=100` (the most it allows),
page after page through `nextPageToken`. Authorised by a service account with domain-wide
delegation, acting as a Workspace admin, with the read-only mobile devices scope."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

from appwarden.connectors import Page, page_token_pages
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
        return page_token_pages(
            self._client,
            self._url,
            {"projection": "FULL", "maxResults": str(MAX_RESULTS)},
            api="Google mobiledevices.list",
            label="google mobiledevices",
        )
