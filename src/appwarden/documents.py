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

import yaml

from appwarden.errors import InputTooLarge, InvalidInput, Problem

Path = tuple[str | int, ...]

MAX_DOCUMENT_BYTES = 1024 * 1024
# Deeper than any real policy, catalog or inventory (they nest 5 or 6 levels), shallow enough that
# nothing recursive downstream (the composer, the checks, repr in error messages) runs out of stack.
MAX_DEPTH = 64

_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")
_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}


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
    try:
        nodes = list(yaml.compose_all(decoded, Loader=_DepthLimitedLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        message = f"{exc.problem or exc.context or 'malformed YAML'}"
        raise InvalidInput(f"{where}: {message}", problems=[Problem(where, message)]) from exc
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises marked errors for text input
        raise InvalidInput(f"{filename}: {exc}", problems=[Problem(filename, str(exc))]) from exc
    if len(nodes) != 1:
        message = "expected exactly one document" if nodes else "the document is empty"
        raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
    builder = _Builder(filename)
    value = builder.build(nodes[0], ())
    if builder.problems:
        raise InvalidInput(
            f"{filename}: {len(builder.problems)} problem(s)", problems=builder.problems
        )
    return Document(filename=filename, value=value, marks=builder.marks)


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


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's composer recurses once per level: refuse the level past MAX_DEPTH, located, long
    before the interpreter's recursion limit turns a 200 kB file of `[[[[` into a traceback."""

    _depth = 0

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, too_deep(), mark)

    def compose_sequence_node(self, anchor: Any) -> yaml.SequenceNode:
        self._enter()
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        self._enter()
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._depth -= 1


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


class _Builder:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.marks: dict[Path, Mark] = {}
        self.problems: list[Problem] = []
        self._seen: set[int] = set()

    def _where(self, node: yaml.Node) -> str:
        return f"{self.filename}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"

    def _fail(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self._where(node), message))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.marks[path] = Mark(node.start_mark.line + 1, node.start_mark.column + 1)
        if id(node) in self._seen:
            self._fail(node, "anchors and aliases are not supported; write the value out")
            return None
        self._seen.add(id(node))
        if node.tag not in _STANDARD_TAGS:
            self._fail(node, f"unsupported tag {node.tag!r}")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._fail(key_node, "merge keys (<<) are not supported; write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._fail(key_node, "a key must be a plain string")
                continue
            key = key_node.value
            if key in result:
                self._fail(key_node, f"duplicate key {key!r}")
                continue
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        text: str = node.value
        if node.style is not None:  # quoted or block scalar: always text
            return text
        tag = node.tag.rsplit(":", 1)[-1]
        if tag == "null":
            return None
        if tag == "bool":
            if text in ("true", "false"):
                return text == "true"
            self._fail(
                node,
                f"ambiguous value {text!r}: YAML reads it as a boolean; "
                "write true or false, or quote it if you mean the text",
            )
            return None
        if tag == "int":
            if _INT.match(text):
                return int(text)
            self._fail(node, f"ambiguous number {text!r}: quote it if you mean the text")
            return None
        if tag == "float":
            if _FLOAT.match(text):
                return float(text)
            self._fail(node, f"ambiguous number {text!r}: quote it if you mean the text")
            return None
        return text  # str and timestamp: the field that wants an instant checks the offset
