"""The files of one import run (`appwarden import SOURCE PATH...`): every file is read and checked
before any is applied, then each file's batch is had again, one at a time, when its turn comes.

Parsed reports take several times the bytes of their file (about 30 kB for a phone with 88 apps,
against 7 kB of JSON), so a run does not keep every batch it checked: the first files' batches
are kept up to `KEEP_PARSED_BYTES` of input, and each file after them is dropped once checked and
read and parsed again at its turn. A run of any length then holds that much and one file. A file
read again must still hold the bytes that were checked (SHA-256); a pipe or a device, which cannot
be read twice, is kept as read. A format whose files are read together (a crawl) is checked and
kept whole, as its parser needs every file at once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from appwarden.collector import collector_paused
from appwarden.devices.schemas import InventoryBatch
from appwarden.documents import read_limited
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.common import ImportOptions
from appwarden.sources.registry import crawl_for, parse_files, parser_for

# Input bytes whose parsed batches a run keeps from its check to their ingest (about 600 MB of
# reports); files past it are parsed twice rather than held.
KEEP_PARSED_BYTES = 128 * 1024 * 1024


@dataclass
class _Checked:
    """A file that passed the check, and what gives its batch again: the batch itself, the
    bytes read (a pipe or a device), or the digest its file must still match."""

    name: str
    reports: int
    batch: InventoryBatch | None = None
    data: bytes | None = None
    digest: bytes | None = None


@dataclass
class CheckedFiles:
    """Every file of a run, checked; `batches()` gives them back in order, one at a time."""

    source: str
    strict: bool
    max_bytes: int
    options: ImportOptions
    files: list[_Checked]

    @property
    def reports(self) -> int:
        return sum(f.reports for f in self.files)

    def batches(self) -> Iterator[tuple[str, InventoryBatch]]:
        """Each file's name and batch, in the order given; the run lets go of each batch as it
        moves to the next. Raises InvalidInput, before that file's batch, for a file that cannot
        be read again or changed since it was checked: the files before it were given, it and
        those after not."""
        for done, checked in enumerate(self.files):
            batch, checked.batch = checked.batch, None
            if batch is None:
                batch = self._again(checked, done)
            yield checked.name, batch

    def _again(self, checked: _Checked, done: int) -> InventoryBatch:
        data, checked.data = checked.data, None
        if data is None:
            stopped = (
                f"the {done} file(s) before it were imported, it and the "
                f"{len(self.files) - done - 1} after it were not"
            )
            try:
                data = read_limited(checked.name, self.max_bytes)
            except InvalidInput as exc:
                raise InvalidInput(f"{exc.message}, after it was checked: {stopped}") from exc
            if hashlib.sha256(data).digest() != checked.digest:
                raise InvalidInput(f"{checked.name} changed after it was checked: {stopped}")
        with collector_paused():
            return parser_for(self.source)(
                data,
                checked.name,
                strict=self.strict,
                max_bytes=self.max_bytes,
                options=self.options,
            )


def check_files(
    source: str,
    paths: list[Path],
    *,
    strict: bool,
    max_bytes: int,
    options: ImportOptions,
    on_file: Callable[[], None] = lambda: None,
) -> CheckedFiles:
    """Read and check every file: one bad file (unreadable, invalid as a whole, or with a bad
    record under `strict`) refuses the run, every bad file named, before anything is applied.
    `on_file` is called as each file is done (to move a progress bar)."""
    checked = CheckedFiles(source, strict, max_bytes, options, [])
    problems: list[Problem] = []
    bad: list[str] = []
    if crawl_for(source) is not None:
        refused = _check_together(checked, paths, problems, bad)
        for _ in paths:
            on_file()
    else:
        refused = _check_each(checked, paths, problems, bad, on_file)
    reported: list[InvalidInput] = []  # a run refused whole names several files, once
    for name, refusal in refused:
        bad.append(name)
        if not any(refusal is earlier for earlier in reported):
            reported.append(refusal)
            problems += refusal.problems or [Problem("", refusal.message)]
    if bad:
        summary = f"{len(bad)} of {len(paths)} file(s) refused, nothing imported: {', '.join(bad)}"
        raise InvalidInput(summary, problems=[*problems, Problem("", summary)])
    return checked


def _read(path: Path, max_bytes: int, problems: list[Problem], bad: list[str]) -> bytes | None:
    try:
        return read_limited(path, max_bytes)
    except InvalidInput as exc:
        bad.append(str(path))
        problems += exc.problems or [Problem("", exc.message)]
        return None


def _check_together(
    run: CheckedFiles, paths: list[Path], problems: list[Problem], bad: list[str]
) -> list[tuple[str, InvalidInput]]:
    files = [
        (str(path), data)
        for path in paths
        if (data := _read(path, run.max_bytes, problems, bad)) is not None
    ]
    parsed, refused = parse_files(
        run.source, files, strict=run.strict, max_bytes=run.max_bytes, options=run.options
    )
    run.files = [_Checked(name, len(batch.reports), batch=batch) for name, batch in parsed]
    return refused


@collector_paused()
def _check_each(
    run: CheckedFiles,
    paths: list[Path],
    problems: list[Problem],
    bad: list[str],
    on_file: Callable[[], None],
) -> list[tuple[str, InvalidInput]]:
    refused: list[tuple[str, InvalidInput]] = []
    kept = 0  # input bytes whose batches are kept
    for path in paths:
        data = _read(path, run.max_bytes, problems, bad)
        if data is not None:
            try:
                kept += _check_one(run, path, data, keep=kept + len(data) <= KEEP_PARSED_BYTES)
            except InvalidInput as exc:
                refused.append((str(path), exc))
        on_file()
    return refused


def _check_one(run: CheckedFiles, path: Path, data: bytes, *, keep: bool) -> int:
    """Parse the file's bytes (InvalidInput: refused) and note it; the input bytes kept."""
    batch = parser_for(run.source)(
        data, str(path), strict=run.strict, max_bytes=run.max_bytes, options=run.options
    )
    checked = _Checked(str(path), len(batch.reports))
    run.files.append(checked)
    if keep:
        checked.batch = batch
        return len(data)
    if path.is_file():
        checked.digest = hashlib.sha256(data).digest()
    else:
        checked.data = data
    return 0
