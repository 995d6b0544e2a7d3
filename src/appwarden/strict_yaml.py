"""The YAML half of `documents.load_document`: PyYAML composes the node tree, refusing nesting
past `MAX_DEPTH`, and `_Builder` reads it into plain values, recording where each one was and
refusing what YAML 1.1 would read surprisingly (documents.py says which). In a module of its own
so that PyYAML is imported by the first document read, not by every command."""

from __future__ import annotations

import re
from typing import Any

import yaml

from appwarden.documents import MAX_DEPTH, Mark, Path, too_deep
from appwarden.errors import InvalidInput, Problem

_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")
_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}


def compose(decoded: str, filename: str) -> tuple[Any, dict[Path, Mark]]:
    """The one document in `decoded` as a plain value, and where each of its values was;
    InvalidInput lists every problem found."""
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
    return value, builder.marks


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
