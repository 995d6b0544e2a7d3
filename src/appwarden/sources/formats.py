"""The formats `appwarden import SOURCE` reads, by name, as module paths only: the command line
lists them in its help without importing any of them (`registry` loads one when it is used)."""

from __future__ import annotations

from typing import Final

# name -> (module, function). `native` and `csv` are appwarden's own formats; the others map a
# vendor's own payloads exactly (docs/sources/).
PARSERS: Final[dict[str, tuple[str, str]]] = {
    "native": ("appwarden.sources.native", "parse_native"),
    "csv": ("appwarden.sources.csvfile", "parse_csv"),
    "osquery": ("appwarden.sources.osquery", "parse_osquery"),
    "fleet": ("appwarden.sources.fleet", "parse_fleet"),
    "intune": ("appwarden.sources.intune", "parse_intune"),
    "apple-mdm": ("appwarden.sources.apple_mdm", "parse_apple_mdm"),
    "amapi": ("appwarden.sources.amapi", "parse_amapi"),
    "google": ("appwarden.sources.google", "parse_google"),
    "jamf": ("appwarden.sources.jamf", "parse_jamf"),
    "exchange": ("appwarden.sources.exchange", "parse_exchange"),
}
OWN_FORMATS: Final = frozenset({"native", "csv"})  # they take no ImportOptions
# name -> (module, function) of the formats whose files are read together, one run at a time: a
# fact (a complete crawl, the command a result answers) spans files. The function takes every
# file of one `appwarden import` run as (filename, bytes) and returns one batch per file, in order.
CRAWLS: Final[dict[str, tuple[str, str]]] = {
    "intune": ("appwarden.sources.intune", "parse_intune_crawl"),
    "apple-mdm": ("appwarden.sources.apple_mdm", "parse_apple_mdm_run"),
}
