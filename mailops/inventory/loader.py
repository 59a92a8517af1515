"""Read an Ansible inventory directory, validate the mailops part, report problems.

The directory stays a plain Ansible inventory: mailops reads the same files
Ansible reads (top-level ``*.yml`` inventories, ``group_vars/``, ``host_vars/``),
merges variables the way Ansible does, and validates only ``mailops_*`` variables
and the SSH access of hosts in group ``mailhosts``.

Problems are returned as data. Each names the file (with the line when known)
and the field path inside that file, e.g.
``inventories/lab/group_vars/all/mailops.yml:12: mailops_domains["shop.test"].dmarc.policy: ...``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from mailops.inventory import model as m
from mailops.inventory.problems import InventoryError, Problem, render_path

MAIL_GROUP = "mailhosts"
REPO_ROOT = Path(__file__).resolve().parents[2]
_YAML_SUFFIXES = (".yml", ".yaml")
_MAX_NODES = 100_000  # alias bombs: stop expanding long before memory runs out
_MAX_DEPTH = 100
_TAG_MESSAGE = "encrypted/unknown tag {tag} not supported here; use {{env: VAR}} or {{file: PATH}}"

_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "timestamp", "binary")}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


# --- paths and display -----------------------------------------------------

def display_path(path: str | Path) -> str:
    """``path`` as the operator would type it: relative to the cwd, else to the repo root."""
    path = Path(os.path.abspath(path))
    for base in (Path.cwd(), REPO_ROOT):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return str(rel) if str(rel) != "." else "."
    return str(path)


def resolve_inventory_path(name: str | Path) -> Path:
    """A directory path as given, or a bare NAME under ``<repo>/inventories/``."""
    path = Path(name)
    if path.is_dir() or len(path.parts) != 1 or str(name).startswith("."):
        return path
    return REPO_ROOT / "inventories" / str(name)


# --- YAML with line numbers ------------------------------------------------

class _Unreadable:
    """Placeholder for a value that could not be read (already reported)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


@dataclass
class _Source:
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


class _Collector:
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

    def at(self, src: _Source, path: tuple, message: str) -> None:
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

    def __init__(self, loader: yaml.SafeLoader, src: _Source, out: _Collector) -> None:
        self.loader, self.src, self.out = loader, src, out
        self.count = 0
        self.stack: set[int] = set()

    def _fail(self, path: tuple, message: str, what: str) -> _Unreadable:
        self.out.incomplete = True  # the value is missing: skip follow-up "required"/reference checks
        self.out.at(self.src, path, message)
        self.src.bad.append(path)
        return _Unreadable(what)

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
            if isinstance(key, _Unreadable):
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


def _read_yaml(path: Path, out: _Collector) -> _Source | None:
    """Parse one file; every failure becomes a problem and returns None."""
    src = _Source(path=path, display=display_path(path))
    src.lines[()] = 1

    def fail(message: str, line: int | None = None) -> None:
        out.incomplete = True
        out.add(Problem(src.display, "(file)", message, line))

    try:
        text = path.read_bytes().decode("utf-8")
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
        if not isinstance(src.data, _Unreadable):
            fail(f"the top level must be a mapping (key: value), found {m.kind(src.data)}; "
                 "start the file with 'key:' lines", 1)
        return None
    return src


# --- the Ansible side: groups, hosts, variables ----------------------------

@dataclass
class _Var:
    """One definition of a variable and where it was written."""
    name: str
    value: Any
    src: _Source
    path: tuple  # path of the variable's key inside src


@dataclass
class _Group:
    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, _Var] = field(default_factory=dict)       # from inventory files
    file_vars: dict[str, _Var] = field(default_factory=dict)  # from group_vars/


@dataclass
class _Host:
    name: str
    decls: list[tuple[_Source, tuple]] = field(default_factory=list)
    vars: dict[str, _Var] = field(default_factory=dict)
    file_vars: dict[str, _Var] = field(default_factory=dict)


class _Ansible:
    """The groups/hosts/variables of the directory, parsed like Ansible's yaml plugin."""

    def __init__(self, out: _Collector) -> None:
        self.out = out
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.hosts: dict[str, _Host] = {}
        self.all_defs: list[_Var] = []  # every variable definition, for the unknown-key check

    def _lost(self, src: _Source, path: tuple, message: str) -> None:
        """A structure problem: the data under ``path`` is not used, so skip completeness checks."""
        self.out.incomplete = True
        self.out.at(src, path, message)

    def _vars(self, src: _Source, data: Any, path: tuple, into: dict[str, _Var]) -> None:
        if data is None:
            return
        if not isinstance(data, dict):
            self._lost(src, path, f"variables must be a mapping (name: value), found {m.kind(data)}")
            return
        for name, value in data.items():
            if not isinstance(name, str):
                self._lost(src, path + (name,), "variable names must be text; rename it")
                continue
            var = _Var(name, value, src, path + (name,))
            into[name] = var
            self.all_defs.append(var)

    def parse_inventory(self, src: _Source) -> None:
        for name, data in src.data.items():
            self._group(src, str(name), data, (name,), parent="all" if name != "all" else None, depth=0)

    def _group(self, src: _Source, name: str, data: Any, path: tuple, parent: str | None, depth: int) -> None:
        group = self.groups.setdefault(name, _Group(name))
        if parent and name not in self.groups[parent].children and name != parent:
            self.groups[parent].children.append(name)
        if data is None:
            return
        if not isinstance(data, dict):
            self._lost(src, path, f"a group must be a mapping with hosts:, children: and vars:, found {m.kind(data)}")
            return
        for key, value in data.items():
            kpath = path + (key,)
            if key == "vars":
                self._vars(src, value, kpath, group.vars)
            elif key == "hosts":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    self._lost(src, kpath, f"hosts must be a mapping of host names to their variables, found {m.kind(value)}")
                    continue
                for host_name, host_vars in value.items():
                    hname = str(host_name)
                    host = self.hosts.setdefault(hname, _Host(hname))
                    host.decls.append((src, kpath + (host_name,)))
                    if hname not in group.hosts:
                        group.hosts.append(hname)
                    self._vars(src, host_vars, kpath + (host_name,), host.vars)
            elif key == "children":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    self._lost(src, kpath, f"children must be a mapping of group names, found {m.kind(value)}")
                    continue
                for child, child_data in value.items():
                    if depth > 50:
                        self._lost(src, kpath, "groups nested too deeply; flatten them")
                        break
                    self._group(src, str(child), child_data, kpath + (child,), parent=name, depth=depth + 1)
            else:
                self._lost(src, kpath, "unknown key in a group; a group holds only hosts, children and vars"
                            + _suggest(key, ["hosts", "children", "vars"]))

    def add_vars_file(self, kind: str, name: str, src: _Source) -> None:
        target = self.groups.get(name) if kind == "group_vars" else self.hosts.get(name)
        if target is None:
            known = list(self.groups) if kind == "group_vars" else list(self.hosts)
            what = "group" if kind == "group_vars" else "host"
            self.out.incomplete = True
            self.out.add(Problem(src.display, "(file)",
                                 f"there is no {what} {name!r} in the inventory, so Ansible ignores this file; "
                                 f"rename it after an existing {what}" + _suggest(name, known), 1))
            return
        self._vars(src, src.data, (), target.file_vars)

    # Membership and precedence -------------------------------------------

    def members(self, group: str) -> list[str]:
        """Hosts of ``group``, directly or through child groups (cycle-safe)."""
        seen, order, todo = set(), [], [group]
        while todo:
            g = todo.pop(0)
            if g in seen or g not in self.groups:
                continue
            seen.add(g)
            for h in self.groups[g].hosts:
                if h not in order:
                    order.append(h)
            todo.extend(self.groups[g].children)
        return order

    def _depths(self) -> dict[str, int]:
        depth = {"all": 0}
        for _ in range(len(self.groups)):  # longest path from all, bounded for cycles
            changed = False
            for g in self.groups.values():
                if g.name in depth:
                    for c in g.children:
                        if c != "all" and depth.get(c, -1) < depth[g.name] + 1 <= len(self.groups):
                            depth[c] = depth[g.name] + 1
                            changed = True
            if not changed:
                break
        return depth

    def host_vars(self, name: str) -> dict[str, _Var]:
        """Ansible's precedence: inventory group vars < group_vars/all < group_vars/* < host vars < host_vars/."""
        groups = {g for g in self.groups if name in self.members(g)} | {"all"}
        depth = self._depths()
        order = sorted(groups, key=lambda g: (depth.get(g, 1), g))
        merged: dict[str, _Var] = {}
        for g in order:
            merged.update(self.groups[g].vars)
        for g in order:
            merged.update(self.groups[g].file_vars)
        merged.update(self.hosts[name].vars)
        merged.update(self.hosts[name].file_vars)
        return merged

    def global_vars(self) -> dict[str, _Var]:
        return {**self.groups["all"].vars, **self.groups["all"].file_vars}


def _suggest(word: Any, choices: typing.Iterable[str]) -> str:
    """A did-you-mean hint; the shared ``mailops_`` prefix is ignored so it does not make everything look close."""
    word, choices = str(word), list(choices)
    strip = (lambda t: t[8:] if t.startswith("mailops_") else t) if word.startswith("mailops_") else (lambda t: t)
    by_stem = {strip(c): c for c in choices}
    close = difflib.get_close_matches(strip(word), list(by_stem), n=1, cutoff=0.6)
    return f" (did you mean {by_stem[close[0]]}?)" if close else ""


# --- pydantic errors -> problems -------------------------------------------

_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(tp: Any) -> TypeAdapter:
    key = repr(tp)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(tp)
    return _ADAPTERS[key]


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _step(tp: Any, seg: Any) -> Any:
    """The type found at ``seg`` inside ``tp`` (for suggestions), or None."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        for member in members:
            member = _unwrap(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                tag = member.model_fields.get("type")
                if tag is not None and seg in typing.get_args(tag.annotation):
                    return member
        for member in members:
            found = _step(member, seg)
            if found is not None:
                return found
        return None
    if origin is dict:
        return typing.get_args(tp)[0 if seg == "[key]" else 1]
    if origin is list:
        return typing.get_args(tp)[0] if isinstance(seg, int) else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(seg) if isinstance(seg, str) else None
        return info.annotation if info else None
    return None


def _fields_at(tp: Any, loc: tuple) -> list[str]:
    for seg in loc:
        tp = _step(tp, seg)
        if tp is None:
            return []
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [f for a in typing.get_args(tp) if isinstance(_unwrap(a), type)
                and issubclass(_unwrap(a), BaseModel) for f in _unwrap(a).model_fields]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _tags_at(tp: Any, loc: tuple) -> list[str]:
    """The ``type`` values a discriminated union at ``loc`` accepts."""
    for seg in loc:
        tp = _step(tp, seg)
        if tp is None:
            return []
    tags = []
    for member in typing.get_args(_unwrap(tp)):
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
            tags += list(typing.get_args(member.model_fields["type"].annotation))
    return tags


_SENSITIVE = re.compile(r"secret|token|password|passwd", re.I)


def _source_path(value: Any, loc: tuple) -> tuple[tuple, bool]:
    """Map a pydantic loc onto keys that exist in the YAML (drops union tags, '[key]').

    Returns the path and whether the error is about a mapping key.
    """
    path: list = []
    cur = value
    is_key = False
    for i, seg in enumerate(loc):
        if seg == "[key]":
            is_key = True
            continue
        if isinstance(cur, dict) and seg in cur:
            path.append(seg)
            cur = cur[seg]
        elif isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur):
            path.append(seg)
            cur = cur[seg]
        elif i == len(loc) - 1 and isinstance(cur, dict):
            path.append(seg)  # a missing key
            cur = None
    return tuple(path), is_key


def _message(err: dict, tp: Any, sensitive: bool) -> str:
    etype, ctx = err["type"], err.get("ctx") or {}
    value = err.get("input")
    shown = "the value" if sensitive else m.show(value)
    loc = err["loc"]
    if etype in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"])) or err["msg"]
    if etype == "missing":
        name = next((s for s in reversed(loc) if isinstance(s, str)), "")
        return "required; " + m.MISSING_HINTS.get(name, f"add {name}:")
    if etype == "extra_forbidden":
        key = loc[-1] if loc else ""
        return "unknown key; remove it or fix its spelling" + _suggest(key, _fields_at(tp, loc[:-1]))
    if etype == "literal_error":
        choices = ", ".join(re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", ""))))
        return f"{shown} is not one of {choices}; set one of those"
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        choices = ", ".join(_tags_at(tp, loc))
        if not isinstance(value, dict):
            return f"expected a mapping with type: {choices}, found {m.kind(value)}; write a mapping"
        if etype == "union_tag_not_found":
            return f"required; set type: to one of {choices}"
        return f"type {m.show(ctx.get('tag'))} is not one of {choices}; set one of those"
    if etype in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        limit = next(iter(ctx.values()), "?")
        rel = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[etype]
        return f"{shown} is out of range; use a value {rel} {limit}"
    if etype in ("too_short", "too_long"):
        n = ctx.get("min_length" if etype == "too_short" else "max_length")
        more = "at least" if etype == "too_short" else "at most"
        return f"needs {more} {n} entr{'y' if n == 1 else 'ies'}; " + ("add one" if etype == "too_short" else "remove some")
    expected = {
        "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
        "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
        "bool_parsing": "true or false", "string_type": "text", "dict_type": "a mapping (key: value)",
        "model_type": "a mapping (key: value)", "model_attributes_type": "a mapping (key: value)",
        "list_type": "a list (- item)", "date_type": "a date (YYYY-MM-DD)",
        "date_parsing": "a date (YYYY-MM-DD)", "date_from_datetime_inexact": "a date without a time (YYYY-MM-DD)",
        "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    }.get(etype)
    if expected:
        found = m.kind(value) if isinstance(value, (dict, list)) or value is None else f"{m.kind(value)} {shown}"
        return f"expected {expected}, found {found}; write {expected}"
    msg = " ".join(str(err.get("msg", "invalid")).splitlines())
    return f"{msg}; fix the value"


def _validate(var: _Var, tp: Any, out: _Collector) -> tuple[bool, Any]:
    """Validate one variable; report errors at their place in the YAML file."""
    try:
        return True, _adapter(tp).validate_python(var.value)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            sub, is_key = _source_path(var.value, tuple(err["loc"]))
            if err["type"] in ("union_tag_invalid", "union_tag_not_found") and isinstance(err.get("input"), dict):
                sub += ("type",)  # point at the discriminator, not the whole entry
            path = var.path + sub
            sensitive = any(isinstance(s, str) and _SENSITIVE.search(s) for s in path)
            message = _message(err, tp, sensitive)
            if is_key:
                message = f"key {m.show(sub[-1] if sub else '')}: {message}"
            out.at(var.src, path, message)
        return False, None
    except RecursionError:
        out.at(var.src, var.path, "nested too deeply; simplify the value")
        return False, None


# --- the checks -------------------------------------------------------------

def _git_roots(inventory: Path) -> list[tuple[Path, str]]:
    roots = [(inventory, "the inventory directory")]
    for parent in [inventory, *inventory.parents]:
        if (parent / ".git").exists():
            roots.append((parent, f"the git repository {display_path(parent)}"))
            break
    if (REPO_ROOT / ".git").exists():
        roots.append((REPO_ROOT, f"the mailops checkout {REPO_ROOT}"))
    return roots


def _norm_domain(name: Any) -> str | None:
    try:
        return m.dns_name(name)
    except ValueError:
        return None


class _Checker:
    def __init__(self, root: Path, ans: _Ansible, inv_sources: list[_Source], all_sources: list[_Source],
                 out: _Collector) -> None:
        self.root, self.ans, self.inv_sources, self.all_sources, self.out = root, ans, inv_sources, all_sources, out

    def _missing_global_place(self, name: str) -> tuple[_Source, tuple]:
        if self.all_sources:
            return self.all_sources[0], (name,)
        return self.inv_sources[0], ("all", "vars", name)

    def unknown_keys(self) -> None:
        known = list(m.HOST_VARS) + list(m.GLOBAL_VARS)
        global_scope = {id(v) for v in self.ans.groups["all"].vars.values()} | \
                       {id(v) for v in self.ans.groups["all"].file_vars.values()}
        for var in self.ans.all_defs:
            if var.name.startswith("mailops_") and var.name not in known:
                self.out.at(var.src, var.path, "unknown key; remove it or fix its spelling" + _suggest(var.name, known))
            elif var.name in m.GLOBAL_VARS and id(var) not in global_scope:
                self.out.at(var.src, var.path,
                            "is a global setting, read only from group_vars/all or all.vars; move it there")

    def globals(self) -> tuple[dict[str, Any], dict[str, _Var]]:
        defs = self.ans.global_vars()
        values: dict[str, Any] = {}
        for name, (attr, tp) in m.GLOBAL_VARS.items():
            var = defs.get(name)
            if var is None or (var.value is None and name not in m.REQUIRED_GLOBAL_VARS):
                if name in m.REQUIRED_GLOBAL_VARS and not self.out.incomplete:
                    src, path = self._missing_global_place(name)
                    self.out.at(src, path, "required; " + m.MISSING_HINTS[name])
                continue
            ok, value = _validate(var, tp, self.out)
            if ok:
                values[attr] = value
        return values, defs

    def mail_hosts(self) -> list[tuple[_Host, dict[str, _Var], m.MailHost | None]]:
        names = self.ans.members(MAIL_GROUP)
        if not names and not self.out.incomplete:
            src = self.inv_sources[0]
            self.out.at(src, ("all", "children", MAIL_GROUP, "hosts"),
                        f"no hosts in group {MAIL_GROUP}; add your mail servers under all.children.{MAIL_GROUP}.hosts")
        result = []
        for name in names:
            host = self.ans.hosts[name]
            decl_src, decl_path = host.decls[0]
            defs = self.ans.host_vars(name)
            values: dict[str, Any] = {"name": name}
            ok = True
            for var_name, (attr, tp) in m.HOST_VARS.items():
                var = defs.get(var_name)
                if var is None or var.value is None:
                    if var_name in m.REQUIRED_HOST_VARS and not self.out.incomplete:
                        self.out.at(decl_src, decl_path + (var_name,), "required; " + m.MISSING_HINTS[var_name])
                        ok = False
                    continue
                good, value = _validate(var, tp, self.out)
                ok &= good
                if good:
                    values[attr] = value
            if "fqdn" not in values and getattr(defs.get("mailops_fqdn"), "value", None) is None:
                fqdn = _norm_domain(name)
                if fqdn is None:
                    self.out.at(decl_src, decl_path,
                                f"host name {m.show(name)} is not a fully qualified domain name and mailops_fqdn "
                                "is not set; set mailops_fqdn: (e.g. mail.example.com) or name the host by its FQDN")
                    ok = False
                values["fqdn"] = fqdn
            mail_host = None
            if ok:
                try:
                    mail_host = m.MailHost(**values)
                except ValidationError:  # a required value is missing in an unreadable file
                    pass
            result.append((host, defs, mail_host))
        return result

    def cross(self, gvals: dict[str, Any], gdefs: dict[str, _Var], hosts: list) -> None:
        out = self.out
        mail_names = [h.name for h, _, _ in hosts]

        def declared(var_name: str) -> list[str]:
            var = gdefs.get(var_name)
            return [str(k) for k in var.value] if var and isinstance(var.value, dict) else []

        dns_names, rdns_names = declared("mailops_dns_providers"), declared("mailops_reverse_dns_providers")
        providers = gvals.get("dns_providers", {})

        def check_provider(var: _Var, path: tuple, name: Any, kind: str, names: list[str]) -> None:
            if isinstance(name, str) and name not in names:
                if not names:
                    out.at(var.src, var.path + path, f"{m.show(name)} is not defined: {kind} is empty or missing; "
                           f"add {kind} with an entry {name}")
                    return
                out.at(var.src, var.path + path, f"{m.show(name)} is not defined in {kind}; define it there or use "
                       f"one of: {', '.join(names)}" + _suggest(name, names))

        domains_var = gdefs.get("mailops_domains")
        domain_names: set[str] = set()
        if domains_var and isinstance(domains_var.value, dict):
            for key, dom in domains_var.value.items():
                norm = _norm_domain(key)
                if norm:
                    domain_names.add(norm)
                if not isinstance(dom, dict):
                    continue
                prov = dom.get("dns_provider")
                check_provider(domains_var, (key, "dns_provider"), prov, "mailops_dns_providers", dns_names)
                zones = getattr(providers.get(prov), "zones", None) if isinstance(prov, str) else None
                if norm and zones and not any(norm == z or norm.endswith("." + z) for z in zones):
                    out.at(domains_var.src, domains_var.path + (key, "dns_provider"),
                           f"provider {prov!r} is only authoritative for {', '.join(zones)}; add the zone to its "
                           "zones: list or use another provider")
                if isinstance(dom.get("hosts"), list):
                    for i, h in enumerate(dom["hosts"]):
                        if isinstance(h, str) and h not in mail_names:
                            out.at(domains_var.src, domains_var.path + (key, "hosts", i),
                                   f"{m.show(h)} is not a host of group {MAIL_GROUP}; use one of: "
                                   f"{', '.join(mail_names) or '(none)'}" + _suggest(h, mail_names))

        parked = gdefs.get("mailops_parked_domains")
        if parked and isinstance(parked.value, dict):
            for key, dom in parked.value.items():
                if _norm_domain(key) in domain_names:
                    out.at(parked.src, parked.path + (key,),
                           "is also in mailops_domains; a domain either sends or is parked, remove one")
                if isinstance(dom, dict):
                    check_provider(parked, (key, "dns_provider"), dom.get("dns_provider"),
                                   "mailops_dns_providers", dns_names)

        for _host, defs, _ in hosts:
            var = defs.get("mailops_reverse_dns_provider")
            if var is not None:
                check_provider(var, (), var.value, "mailops_reverse_dns_providers", rdns_names)

        seen_fqdn: dict[str, str] = {}
        for host, defs, mh in hosts:
            if mh is None:
                continue
            if mh.fqdn in seen_fqdn:
                var = defs.get("mailops_fqdn")
                src, path = (var.src, var.path) if var else host.decls[0]
                out.at(src, path, f"fqdn {mh.fqdn} is already used by host {seen_fqdn[mh.fqdn]}; "
                                  "give each mail host its own mailops_fqdn")
            seen_fqdn.setdefault(mh.fqdn, mh.name)

        users = gdefs.get("mailops_submission_users")
        if users and isinstance(users.value, list):
            logins: dict[str, int] = {}
            for i, user in enumerate(users.value):
                if not isinstance(user, dict):
                    continue
                try:
                    login = m._email(user.get("login"))
                except ValueError:
                    continue
                path = users.path + (i, "login")
                key = login.lower()
                if key in logins:
                    out.at(users.src, path, f"login {login} is already used by entry {logins[key]}; "
                                            "each login must be unique, remove or rename one")
                    continue
                logins[key] = i
                domain = login.rpartition("@")[2]
                if domains_var and domain_names and domain not in domain_names:
                    out.at(users.src, path, f"domain {domain} is not in mailops_domains; add it there or use a "
                                            f"login at one of: {', '.join(sorted(domain_names))}")

        keystore = gdefs.get("mailops_dkim_keystore")
        unset = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)",
                          os.path.expandvars(os.path.expanduser(gvals.get("dkim_keystore", ""))))
        if keystore and unset:
            out.at(keystore.src, keystore.path, f"environment variable {unset.group(1)} is not set, so the key "
                   f"store location is unknown; export {unset.group(1)} or write the path without it")
        elif keystore and "dkim_keystore" in gvals:
            path = self.keystore_path(gvals["dkim_keystore"])
            for root, what in _git_roots(self.root.resolve()):
                if path == root or root in path.parents:
                    out.at(keystore.src, keystore.path,
                           f"keys must live outside git: {path} is inside {what}; move the key store to a "
                           "directory outside the repository, e.g. /var/lib/mailops/dkim")
                    break

    def keystore_path(self, text: str) -> Path:
        path = Path(os.path.expandvars(os.path.expanduser(text)))
        if not path.is_absolute():
            path = self.root / path
        return Path(os.path.abspath(path)).resolve()


def _discover(root: Path) -> tuple[list[Path], list[tuple[str, str, Path]]]:
    inventories = sorted(p for p in root.iterdir()
                         if p.is_file() and p.suffix in _YAML_SUFFIXES and not p.name.startswith("."))
    var_files: list[tuple[str, str, Path]] = []
    for kind in ("group_vars", "host_vars"):
        base = root / kind
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                files = sorted(f for f in entry.rglob("*") if f.is_file() and f.suffix in _YAML_SUFFIXES
                               and not any(part.startswith(".") for part in f.relative_to(entry).parts))
                var_files += [(kind, entry.name, f) for f in files]
            elif entry.suffix in _YAML_SUFFIXES:
                var_files.append((kind, entry.stem, entry))
    return inventories, var_files


def load_inventory(path: str | Path) -> tuple[m.Inventory | None, list[Problem]]:
    """Read and check the inventory directory at ``path``.

    Returns ``(inventory, [])`` when it is clean, else ``(None, problems)``:
    callers never act on a half-valid inventory.
    """
    root = Path(path)
    out = _Collector()
    shown = display_path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        out.add(Problem(shown, "(directory)", f"inventory directory {what}; create it (copy inventories/example) "
                                               "or pass the right NAME or path"))
        return None, out.problems
    try:
        inv_files, var_files = _discover(root)
    except OSError as exc:
        out.add(Problem(shown, "(directory)", f"cannot list the directory ({exc.strerror or exc}); check permissions"))
        return None, out.problems
    if not inv_files:
        out.add(Problem(shown, "(directory)", "no inventory file; create hosts.yml with all: children: mailhosts: hosts:"))
        return None, out.problems

    ans = _Ansible(out)
    inv_sources = [s for s in (_read_yaml(f, out) for f in inv_files) if s is not None]
    for src in inv_sources:
        ans.parse_inventory(src)
    all_sources = []
    for kind, name, file in var_files:
        src = _read_yaml(file, out)
        if src is None:
            continue
        ans.add_vars_file(kind, name, src)
        if kind == "group_vars" and name == "all":
            all_sources.append(src)
    if not inv_sources:  # every inventory file was unreadable: nothing more to say
        return None, out.problems

    checker = _Checker(root, ans, inv_sources, all_sources, out)
    checker.unknown_keys()
    gvals, gdefs = checker.globals()
    hosts = checker.mail_hosts()
    if not out.incomplete:
        checker.cross(gvals, gdefs, hosts)
    if out.problems:
        return None, out.problems

    mail_hosts = [mh for _, _, mh in hosts if mh is not None]
    names = [h.name for h in mail_hosts]
    domains = {d: s.model_copy(update={"hosts": s.hosts or list(names)}) for d, s in gvals["domains"].items()}
    gvals["dkim_keystore"] = checker.keystore_path(gvals["dkim_keystore"])
    inventory = m.Inventory(path=root.resolve(), hosts=mail_hosts, **{**gvals, "domains": domains})
    return inventory, []


def load(path_or_name: str | Path) -> m.Inventory:
    """The one way to get an :class:`Inventory`: read and check ``path_or_name`` and raise
    :class:`InventoryError` listing every problem, so nobody acts on a half-valid inventory.

    Text is resolved as the CLI's ``-i`` (a directory, or a name under ``inventories/``);
    a ``Path`` is taken as it is (resolving ``Path("./x")`` again would lose the ``./``).
    """
    path = path_or_name if isinstance(path_or_name, Path) else resolve_inventory_path(path_or_name)
    inventory, problems = load_inventory(path)
    if problems or inventory is None:
        raise InventoryError(path, problems)
    return inventory


def check_inventory(path: str | Path) -> list[Problem]:
    """Every problem of the inventory at ``path`` (empty list when it is clean)."""
    return load_inventory(path)[1]
