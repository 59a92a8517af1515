"""YAML files read with the line of every key, and problems collected once each.

Doing the construction ourselves (instead of ``yaml.safe_load``) keeps the line
of every key for messages and turns an unknown tag, an alias bomb or a recursive
alias into a problem at its path instead of an exception. Only regular files
of at most 1 MiB are read (:mod:`mailops.inventory.files`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from mailops.inventory.files import MAX_YAML_BYTES, UnsafeFile, read_regular_file, size_text
from mailops.inventory.paths import display_path
from mailops.inventory.problems import Problem, render_path
from mailops.inventory.scalars import kind

YAML_SUFFIXES = (".yml", ".yaml")
_MAX_NODES = 100_000  # alias bombs: stop expanding long before memory runs out
_MAX_DEPTH = 100
_TAG_MESSAGE = "encrypted/unknown tag {tag} not supported here; use {{env: VAR}} or {{file: PATH}}"

_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "timestamp", "binary")}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class Unreadable:
    """Placeholder for a value that could not be read (already reported)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


@dataclass
class Source:
    """One YAML file: its data, the line of every path, and paths already reported."""
    path: Path
    display: str
    data: Any = None
    lines: dict[tuple, int] = field(default_factory=dict)
    bad: list[tuple] = field(default_factory=list)

    def line(self, path: tuple) -> int | None:
        for n in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return None


class Collector:
    """Collects problems once each, skipping follow-ups of values already reported."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._seen: set[tuple] = set()
        # Set when a file could not be read: its data is missing, so "required"
        # and cross-reference checks would only produce misleading follow-ups.
        self.incomplete = False

    def add(self, problem: Problem) -> None:
        key = (problem.file, problem.field, problem.message)
        if key not in self._seen:
            self._seen.add(key)
            self.problems.append(problem)

    def at(self, src: Source, path: tuple, message: str) -> None:
        for bad in src.bad:
            if tuple(path[: len(bad)]) == bad:
                return
        self.add(Problem(src.display, render_path(path), message, src.line(path)))


class _TooBig(Exception):
    pass


class _Builder:
    """Turns a composed YAML node graph into plain data, recording line numbers.

    Doing the construction ourselves (instead of ``yaml.safe_load``) lets an
    unknown tag such as Ansible's ``!vault`` become a problem at its path
    instead of an exception, and keeps the line of every key.
    """

    def __init__(self, loader: yaml.SafeLoader, src: Source, out: Collector) -> None:
        self.loader, self.src, self.out = loader, src, out
        self.count = 0
        self.stack: set[int] = set()

    def _fail(self, path: tuple, message: str, what: str) -> Unreadable:
        self.out.incomplete = True  # the value is missing: skip follow-up "required"/reference checks
        self.out.at(self.src, path, message)
        self.src.bad.append(path)
        return Unreadable(what)

    def scalar(self, node: ScalarNode, path: tuple) -> Any:
        if node.tag not in _SCALAR_TAGS:
            return self._fail(path, _TAG_MESSAGE.format(tag=node.tag), node.tag)
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception as exc:  # bad timestamp, bad base64...: report, keep going
            reason = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            return self._fail(path, f"cannot read this value ({reason}); fix or quote it", "unreadable")

    def build(self, node: Any, path: tuple, depth: int) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooBig
        if depth > _MAX_DEPTH:
            return self._fail(path, f"nested more than {_MAX_DEPTH} levels deep; flatten the data", "too deep")
        if id(node) in self.stack:
            return self._fail(path, "an alias refers to the value that contains it; remove the recursive alias", "cycle")
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            return self._fail(path, _TAG_MESSAGE.format(tag=node.tag), node.tag)
        self.stack.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items = []
                for i, child in enumerate(node.value):
                    self.src.lines.setdefault(path + (i,), child.start_mark.line + 1)
                    items.append(self.build(child, path + (i,), depth + 1))
                return items
            return self.mapping(node, path, depth)
        finally:
            self.stack.discard(id(node))

    def mapping(self, node: MappingNode, path: tuple, depth: int) -> dict:
        own = {id(k) for k, _ in node.value}
        try:
            self.loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        except Exception as exc:
            self._fail(path, f"bad merge key (<<): {getattr(exc, 'problem', exc)}; merge only mappings", "bad merge")
            return {}
        result: dict = {}
        own_keys: set = set()
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.out.at(self.src, path, f"line {line}: a list or mapping used as a key; use a plain text key")
                continue
            key = self.scalar(key_node, path + ("<key>",))
            if isinstance(key, Unreadable):
                continue
            child = path + (key,)
            if id(key_node) in own:
                if key in own_keys:
                    self.src.lines[child] = line
                    self.out.at(self.src, child, "key appears twice in this mapping (the later one wins); remove one")
                own_keys.add(key)
            self.src.lines[child] = line
            result[key] = self.build(value_node, child, depth + 1)
        return result


def read_yaml(path: Path, out: Collector) -> Source | None:
    """Parse one file; every failure becomes a problem and returns None."""
    src = Source(path=path, display=display_path(path))
    src.lines[()] = 1

    def fail(message: str, line: int | None = None) -> None:
        out.incomplete = True
        out.add(Problem(src.display, "(file)", message, line))

    try:
        text = read_regular_file(path, MAX_YAML_BYTES).decode("utf-8")
    except UnsafeFile as exc:
        if exc.kind:
            fail(f"not a regular file ({exc.kind}); mailops and Ansible read only regular files: "
                 "replace it with a YAML file or remove it")
        else:
            fail(f"larger than {size_text(MAX_YAML_BYTES)}; an inventory file is a few KiB: check that it is "
                 "the right file, or split it")
        return None
    except UnicodeDecodeError as exc:
        fail(f"not UTF-8 text (bad byte at offset {exc.start}); save the file as UTF-8")
        return None
    except OSError as exc:
        fail(f"cannot read ({exc.strerror or exc}); check that it is a readable file")
        return None
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters already
        node = loader.get_single_node()
        if node is None:
            fail("file is empty; add the settings or delete the file")
            return None
        src.data = _Builder(loader, src, out).build(node, (), 0)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        fail(f"YAML syntax error: {what}; fix the indentation or quoting there",
             mark.line + 1 if mark else None)
        return None
    except yaml.YAMLError as exc:
        fail(f"YAML error: {' '.join(str(exc).split()) or type(exc).__name__}; remove the offending characters")
        return None
    except RecursionError:
        fail("nested too deeply to read; flatten the data")
        return None
    except _TooBig:
        fail("too many values (an alias expands too often); remove the repeated aliases")
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(src.data, dict):
        if not isinstance(src.data, Unreadable):
            fail(f"the top level must be a mapping (key: value), found {kind(src.data)}; "
                 "start the file with 'key:' lines", 1)
        return None
    return src
