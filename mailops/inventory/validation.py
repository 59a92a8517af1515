"""pydantic validation errors turned into problems at their place in the YAML file.

Messages say what is wrong and how to fix it in the inventory's terms, and never
echo the value of a secret-looking field.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from mailops.inventory.ansiblevars import Var
from mailops.inventory.model import MISSING_HINTS
from mailops.inventory.problems import suggest
from mailops.inventory.scalars import kind, show
from mailops.inventory.yamlsource import Collector

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
        if isinstance(cur, dict) and seg not in cur and isinstance(seg, str):
            # pydantic names a non-text key by its str() (None -> 'None'): find the key itself
            seg = next((k for k in cur if not isinstance(k, str) and str(k) == seg), seg)
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
    shown = "the value" if sensitive else show(value)
    loc = err["loc"]
    if etype in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"])) or err["msg"]
    if etype == "invalid_key":  # a non-text key where a model expects field names
        if value is None:
            return "a key is empty (null); name the entry or remove it"
        return f"key {show(value)} is {kind(value)}, not text; write a field name here"
    if etype == "finite_number":
        return f"{show(value)} is not a finite number (.inf and .nan are not allowed); write an ordinary number"
    if etype == "missing":
        name = next((s for s in reversed(loc) if isinstance(s, str)), "")
        return "required; " + MISSING_HINTS.get(name, f"add {name}:")
    if etype == "extra_forbidden":
        key = loc[-1] if loc else ""
        return "unknown key; remove it or fix its spelling" + suggest(key, _fields_at(tp, loc[:-1]))
    if etype == "literal_error":
        choices = ", ".join(re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", ""))))
        return f"{shown} is not one of {choices}; set one of those"
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        choices = ", ".join(_tags_at(tp, loc))
        if not isinstance(value, dict):
            return f"expected a mapping with type: {choices}, found {kind(value)}; write a mapping"
        if etype == "union_tag_not_found":
            return f"required; set type: to one of {choices}"
        return f"type {show(ctx.get('tag'))} is not one of {choices}; set one of those"
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
        found = kind(value) if isinstance(value, (dict, list)) or value is None else f"{kind(value)} {shown}"
        return f"expected {expected}, found {found}; write {expected}"
    msg = " ".join(str(err.get("msg", "invalid")).splitlines())
    return f"{msg}; fix the value"


def validate(var: Var, tp: Any, out: Collector) -> tuple[bool, Any]:
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
                key = sub[-1] if sub else ""
                message = f"key {'null' if key is None else show(key)}: {message}"
            out.at(var.src, path, message)
        return False, None
    except RecursionError:
        out.at(var.src, var.path, "nested too deeply; simplify the value")
        return False, None
