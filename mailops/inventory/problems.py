"""Problems found in an inventory: data, one line each, never a traceback."""

from __future__ import annotations

import difflib
import json
import re
import typing
from dataclasses import dataclass
from datetime import date
from typing import Any

from mailops.errors import MailopsError

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _one_line(text: str) -> str:
    # A problem is printed as exactly one line, whatever the YAML held.
    return " ".join(str(text).splitlines()) if text else ""


@dataclass(frozen=True)
class Problem:
    """``str()`` is ``"<file>[:<line>]: <field>: <message>"``.

    ``file`` is the YAML file (or directory) as the operator would type it,
    ``field`` the path inside that file (see :func:`render_path`), ``message``
    says what is wrong and how to fix it.
    """

    file: str
    field: str
    message: str
    line: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "file", _one_line(self.file) or "?")
        object.__setattr__(self, "field", _one_line(self.field) or "(file)")
        object.__setattr__(self, "message", _one_line(self.message) or "invalid")

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


def render_segment(key: Any) -> str:
    """``name`` for plain keys, ``["shop.test"]`` for keys with dots etc., ``[0]`` for list items."""
    if isinstance(key, str):
        if _PLAIN_KEY.match(key):
            return key
        return "[" + json.dumps(key, ensure_ascii=False) + "]"
    if isinstance(key, bool) or key is None:
        return "[" + json.dumps(key) + "]"
    if isinstance(key, (int, float)):
        return f"[{key}]"
    if isinstance(key, date):
        return f"[{key.isoformat()}]"
    return "[" + json.dumps(str(key), ensure_ascii=False) + "]"


def render_path(path: tuple) -> str:
    """Field path inside a YAML file, e.g. ``mailops_domains["shop.test"].dmarc.policy``."""
    out = ""
    for key in path:
        seg = render_segment(key)
        out += seg if (not out or seg.startswith("[")) else "." + seg
    return out or "(file)"


def suggest(word: Any, choices: typing.Iterable[str]) -> str:
    """A did-you-mean hint; the shared ``mailops_`` prefix is ignored so it does not make everything look close."""
    word, choices = str(word), list(choices)
    strip = (lambda t: t[8:] if t.startswith("mailops_") else t) if word.startswith("mailops_") else (lambda t: t)
    by_stem = {strip(c): c for c in choices}
    close = difflib.get_close_matches(strip(word), list(by_stem), n=1, cutoff=0.6)
    return f" (did you mean {by_stem[close[0]]}?)" if close else ""


class InventoryError(MailopsError):
    """The inventory has problems: ``str()`` is one line, ``problems`` has each of them.

    The CLI prints ``problems`` one per line; library callers that show one
    line get the count and the first problem.
    """

    def __init__(self, path: Any, problems: list[Problem]) -> None:
        self.path, self.problems = path, list(problems)
        super().__init__(f"inventory has {len(self.problems)} problem(s), first: {self.problems[0]} "
                         f"(run `mailops inventory check {path}`)")
