"""Jamf Pro: the computers (`GET /api/v1/computers-inventory`) and the mobile devices
(`GET /api/v2/mobile-devices/detail`), each with the sections the mapping reads, page after page
(`page` from 0, `page-size`) until the records seen reach the page's `totalCount` (or a page is
empty). Authorised by an API client: `POST /api/oauth/token` with its client credentials; the
client's API role says what it may read."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

from appwarden.connectors import Page, PageChain, json_page
from appwarden.connectors.client import ApiClient, ConnectorError

SOURCE = "jamf"
TOKEN_PATH = "/api/oauth/token"  # noqa: S105 - a path, not a secret
COLLECTIONS = (
    (
        "computers",
        "/api/v1/computers-inventory",
        ("GENERAL", "APPLICATIONS", "USER_AND_LOCATION", "HARDWARE"),
        (("sort", "id:asc"),),
    ),
    (
        "mobile devices",
        "/api/v2/mobile-devices/detail",
        ("GENERAL", "HARDWARE", "USER_AND_LOCATION", "APPLICATIONS"),
        (),
    ),
)


class JamfConnector:
    source = SOURCE

    def __init__(self, client: ApiClient, base_url: str, *, page_size: int = 100) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._page_size = page_size

    def pages(self) -> Iterator[Page]:
        for name, path, sections, extra in COLLECTIONS:
            query = [("section", s) for s in sections] + list(extra)
            yield from self._collection(name, path, query)

    def _collection(self, name: str, path: str, query: list[tuple[str, str]]) -> Iterator[Page]:
        chain = PageChain(f"Jamf {name}")
        seen = 0
        while True:
            page = chain.next_page() - 1
            label = f"jamf {name} page {page}"
            paging = [("page", str(page)), ("page-size", str(self._page_size))]
            url = f"{self._base}{path}?{urlencode(query + paging)}"
            body = self._client.get(url, what=f"Jamf GET {path} page {page}")
            payload = json_page(body, label)
            results, total = payload.get("results"), payload.get("totalCount")
            if not isinstance(results, list):
                raise ConnectorError(f"{label} has no results list")
            if isinstance(total, bool) or not isinstance(total, int) or total < 0:
                raise ConnectorError(f"{label} has no totalCount")
            yield Page(label, body)
            seen += len(results)
            if not results or seen >= total:
                return
