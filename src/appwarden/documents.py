"""Strict loading of YAML/JSON documents into plain values, remembering where each value was.

YAML 1.1's implicit typing surprises people (`no` is false, `9:00` is 540, a bare date is a date),
so this loader composes the node tree itself: duplicate keys, aliases, merge keys, custom tags and
ambiguous scalars are errors that name FILE:LINE:COL. Plain scalars that look like timestamps stay
strings; the field that expects an instant decides whether they carry an offset.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from appwarden.errors import InputTooLarge, InvalidInput, Problem

Path = tuple[str | int, ...]

MAX_DOCUMENT_BYTES = 1024 * 1024
# Deeper than any real policy, catalog or inventory (they nest 5 or 6 levels), shallow enough that
# nothing recursive downstream (the composer, the checks, repr in error messages) runs out of stack.
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Mark:
    line: int
    column: int


@dataclass
class Document:
    """A loaded document: its plain value and the source position of every value in it."""

    filename: str
    value: Any
    marks: dict[Path, Mark] = field(default_factory=dict)

    def where(self, path: Path = ()) -> str:
        """`FILE:LINE:COL` of the value at `path`, or of its nearest located ancestor."""
        probe = tuple(path)
        while probe not in self.marks and probe:
            probe = probe[:-1]
        mark = self.marks.get(probe)
        if mark is None:
            return self.filename
        return f"{self.filename}:{mark.line}:{mark.column}"

    def problem(self, path: Path, message: str) -> Problem:
        return Problem(self.where(path), message)


def load_document(
    text: str | bytes, filename: str, *, max_bytes: int = MAX_DOCUMENT_BYTES
) -> Document:
    """Load one YAML (or JSON) document strictly; InvalidInput lists every problem found."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise too_large(filename, len(raw), max_bytes)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{filename}: not UTF-8",
            problems=[Problem(filename, f"not valid UTF-8 ({exc.reason})")],
        ) from exc
    # PyYAML is loaded by the first document read, not by every command that imports this
    # module (a command that reads no file, such as `decide`, never needs it).
    from appwarden.strict_yaml import compose

    value, marks = compose(decoded, filename)
    return Document(filename=filename, value=value, marks=marks)


def too_large(filename: str, size: int | None, max_bytes: int) -> InputTooLarge:
    """The located "too large" error; `size` None: a stream that went on past the limit."""
    amount = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return InputTooLarge(
        f"{filename}: {amount} is over the limit of {max_bytes}",
        problems=[Problem(filename, f"the file is {amount}; the limit is {max_bytes}")],
    )


def read_limited(path: str | FilePath, max_bytes: int, *, what: str = "") -> bytes:
    """Read a file the user named, refusing it once it is known to be over `max_bytes`.

    Reads at most max_bytes + 1 bytes whatever the file is: a regular file is refused by its size
    before reading (a sparse 1 TB file costs nothing); a device or pipe (/dev/zero, /dev/stdin,
    `<(cmd)`) is read up to the limit, never to exhaustion. The open does not wait for a FIFO's
    writer, and a FIFO without one reads as empty. Errors are InvalidInput naming the path."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(name, what, exc) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_size > max_bytes:
            raise too_large(name, info.st_size, max_bytes)
        os.set_blocking(fd, True)  # a pipe with a writer: wait for its data as a plain read does
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(max_bytes + 1 - size, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _unreadable(name, what, exc) from exc
    finally:
        os.close(fd)
    if size > max_bytes:
        raise too_large(name, None, max_bytes)
    return b"".join(chunks)


def _unreadable(name: str, what: str, exc: OSError) -> InvalidInput:
    reason = exc.strerror or type(exc).__name__
    cannot = f"cannot read {what}" if what else "cannot read"
    return InvalidInput(
        f"{name}: {cannot} ({reason})", problems=[Problem(name, f"{cannot}: {reason}")]
    )


def too_deep(depth: int = MAX_DEPTH) -> str:
    return f"nested deeper than {depth} levels"


# A JSON string (skipped whole, so brackets inside it do not count) or a bracket.
# (The string is matched as runs of plain characters between escapes: an alternation per
# character made the scan of an inventory page three times slower.)
_JSON_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"?'
_JSON_TOKENS = re.compile(_JSON_STRING + r"|[\[\]{}]")
_JSON_STRINGS = re.compile(_JSON_STRING)


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"duplicate key {repeated!r}: refused rather than letting one value win")
    return result


def strict_json(body: bytes) -> Any:
    """A small JSON body (an API request other than an inventory batch): UTF-8 with an optional
    byte order mark, no key given twice in one object, no nesting past `MAX_DEPTH`. Raises
    ValueError saying what is wrong."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 ({exc.reason})") from None
    if json_too_deep(text) is not None:
        raise ValueError(too_deep())
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


def json_too_deep(text: str, depth: int = MAX_DEPTH) -> int | None:
    """The offset of the first bracket nested deeper than `depth` in a JSON text, else None.

    A scan without recursion, run before a recursive decoder (json, orjson) or the checks after
    it see the value. Malformed text is left to the decoder to describe."""
    if _nesting_fits(text, depth):
        return None
    level = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            level += 1
            if level > depth:
                return match.start()
        elif token in ("]", "}"):
            level -= 1
    return None


# Everything but brackets, once strings are gone.
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _nesting_fits(text: str, depth: int) -> bool:
    """True when no bracket of `text` is nested deeper than `depth`: the common case, decided
    without a Python loop over the tokens (an inventory page holds hundreds of thousands).

    With strings and everything else removed, the brackets of a well-formed text reduce to
    nothing by deleting innermost pairs, one nesting level per pass. What is left after `depth`
    passes was nested deeper, or is unbalanced: `json_too_deep` then scans token by token."""
    brackets = _NOT_BRACKETS.sub("", _JSON_STRINGS.sub("", text))
    for _ in range(depth):
        if not brackets:
            return True
        reduced = brackets.replace("{}", "").replace("[]", "")
        if reduced == brackets:
            return False  # unbalanced or mismatched: the token scan decides
        brackets = reduced
    return not brackets
