"""Fleet: `GET /api/v1/fleet/hosts` with the software of each host, page after page (`page` from
0, `per_page`) until a page lists no host; Fleet's list gives no total. Authorised by an API-only
user's token (`Authorization: Bearer`), which does not expire."""

from __future__ import annotations

from collections.abc import Iterator

from appwarden.connectors import Page, PageChain, json_page
from appwarden.connectors.client import ApiClient, ConnectorError

SOURCE = "fleet"
HOSTS_PATH = "/api/v1/fleet/hosts"


class FleetConnector:
    source = SOURCE

    def __init__(self, client: ApiClient, base_url: str, *, page_size: int = 100) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + HOSTS_PATH
        self._page_size = page_size

    def pages(self) -> Iterator[Page]:
        chain = PageChain("Fleet hosts")
        page = 0
        while True:
            chain.next_page()
            label = f"fleet hosts page {page}"
            body = self._client.get(
                self._url,
                what=f"Fleet GET {HOSTS_PATH} page {page}",
                params={
                    "populate_software": "without_vulnerability_details",
                    "device_mapping": "true",  # the hosts' owners
                    "order_key": "id",  # a stable order, so pages neither skip nor repeat hosts
                    "page": str(page),
                    "per_page": str(self._page_size),
                },
            )
            hosts = json_page(body, label).get("hosts")
            if not isinstance(hosts, list):
                raise ConnectorError(f"{label} has no hosts list")
            yield Page(label, body)
            if not hosts:
                return
            page += 1
