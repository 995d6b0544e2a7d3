"""The formats `appwarden import SOURCE` reads, by name; each module is imported only when its
format is used (the CLI starts without loading every vendor's mapping)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from appwarden.collector import collector_paused
from appwarden.devices.schemas import InventoryBatch
from appwarden.errors import InvalidInput
from appwarden.sources.common import ImportOptions, SourceParser
from appwarden.sources.formats import CRAWLS, OWN_FORMATS, PARSERS
from appwarden.sources.native import MAX_BYTES

CrawlParser = Callable[..., list[InventoryBatch]]


Refused = list[tuple[str, InvalidInput]]


@collector_paused()
def parse_files(
    name: str,
    files: list[tuple[str, bytes]],
    *,
    strict: bool,
    max_bytes: int,
    options: ImportOptions,
) -> tuple[list[tuple[str, InventoryBatch]], Refused]:
    """Parse every file of one import run: the batches of those that parsed, in order, and the
    files refused as a whole (not the format, or a bad record under `strict`). The run's
    reports stay in memory until each file is ingested, so the cycle collector is paused while
    they are made (`collector_paused`): its passes would walk every report parsed so far."""
    parse = parser_for(name)
    crawl = crawl_for(name)
    if crawl is not None:
        try:
            batches = crawl(files, strict=strict, max_bytes=max_bytes, options=options)
        except InvalidInput as exc:  # the run is refused whole: name the files at fault
            named = [f for f, _ in files if any(p.where.startswith(f) for p in exc.problems)]
            return [], [(filename, exc) for filename in named or [f for f, _ in files][:1]]
        return [(filename, batch) for (filename, _), batch in zip(files, batches, strict=True)], []
    parsed: list[tuple[str, InventoryBatch]] = []
    refused: Refused = []
    for filename, data in files:
        try:
            parsed.append(
                (
                    filename,
                    parse(data, filename, strict=strict, max_bytes=max_bytes, options=options),
                )
            )
        except InvalidInput as exc:
            refused.append((filename, exc))
    return parsed, refused


def parser_for(name: str) -> SourceParser:
    """The parser of a source format, as one signature for every format."""
    if name not in PARSERS:
        raise InvalidInput(f"unknown source {name!r}; expected one of: {', '.join(PARSERS)}")
    module, function = PARSERS[name]
    parse = getattr(import_module(module), function)
    if name not in OWN_FORMATS:
        return parse  # type: ignore[no-any-return]

    def own_format(
        text: str | bytes,
        filename: str,
        *,
        strict: bool = False,
        max_bytes: int = MAX_BYTES,
        options: ImportOptions | None = None,
    ) -> InventoryBatch:
        del options  # appwarden's own formats carry everything they need
        result: InventoryBatch = parse(text, filename, strict=strict, max_bytes=max_bytes)
        return result

    return own_format


def crawl_for(name: str) -> CrawlParser | None:
    """The run-level parser of a format whose files are read together (CRAWLS), else None: the
    caller then parses each file on its own with `parser_for`. Called as
    `crawl(files, strict=..., max_bytes=..., options=...)`."""
    if name not in CRAWLS:
        return None
    module, function = CRAWLS[name]
    crawl: CrawlParser = getattr(import_module(module), function)
    return crawl
