"""Adding and removing a mail host in the inventory's hosts file, keeping everything else.

The file is read and written with ruamel.yaml's round-trip mode, so comments,
key order and quoting stay as the operator wrote them; only the host's own
entry changes.  Writes are atomic (a temporary file in the same directory,
fsynced, then renamed over the original with its mode), so a crash leaves the
old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from io import StringIO
from pathlib import Path
from typing import Any

from mailops.errors import MailopsError
from mailops.inventory.model import MAIL_GROUP
from mailops.inventory.yamlsource import YAML_SUFFIXES


def _yaml():
    try:
        from ruamel.yaml import YAML
    except ImportError:  # a dependency of mailops; only a broken install lacks it
        raise MailopsError("writing the inventory needs ruamel.yaml: pip install ruamel.yaml") from None
    yaml = YAML()  # round trip
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the operator's long lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _group(doc: Any) -> Any | None:
    """The mapping of group mailhosts (under all.children, or at the top)."""
    if not isinstance(doc, dict):
        return None
    for parent in (doc.get("all", {}).get("children") if isinstance(doc.get("all"), dict) else None, doc):
        if isinstance(parent, dict) and isinstance(parent.get(MAIL_GROUP), dict):
            return parent[MAIL_GROUP]
    return None


def hosts_file(inventory_dir: Path) -> Path:
    """The inventory file that defines group mailhosts."""
    files = sorted(p for p in inventory_dir.iterdir()
                   if p.is_file() and p.suffix in YAML_SUFFIXES and not p.name.startswith("."))
    for path in files:
        try:
            if _group(_yaml().load(path.read_text())) is not None:
                return path
        except Exception:  # an unreadable file is the inventory check's business, not ours
            continue
    raise MailopsError(f"{inventory_dir}: no inventory file defines group {MAIL_GROUP}; create hosts.yml with "
                       f"all: children: {MAIL_GROUP}: hosts:")


def upsert_host(inventory_dir: Path, name: str, values: dict[str, Any], comment: str | None = None) -> Path:
    """Add host ``name`` to group mailhosts with ``values``, or update those keys of its entry
    (its other keys and every comment stay).  Returns the file written."""
    path = hosts_file(inventory_dir)
    yaml = _yaml()
    doc = yaml.load(path.read_text())
    group = _group(doc)
    if group.get("hosts") is None:
        group["hosts"] = {}
    hosts = group["hosts"]
    entry = hosts.get(name)
    values = {k: _quoted(v) for k, v in values.items()}
    if entry is None:
        hosts[name] = {k: v for k, v in values.items() if v is not None}
        if comment:  # on the host's own line, so it goes when the host goes
            hosts.yaml_add_eol_comment(comment, name)
    else:
        for key, value in values.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
    _write(path, yaml, doc)
    return path


def remove_host(inventory_dir: Path, name: str) -> Path | None:
    """Take host ``name`` out of group mailhosts; None if it was not there."""
    path = hosts_file(inventory_dir)
    yaml = _yaml()
    doc = yaml.load(path.read_text())
    hosts = _group(doc).get("hosts") or {}
    if name not in hosts:
        return None
    del hosts[name]
    _write(path, yaml, doc)
    return path


def _quoted(value: Any) -> Any:
    """Strings with a colon double-quoted: YAML 1.1 (Ansible's PyYAML) reads some unquoted IPv6
    addresses as base-60 integers."""
    if isinstance(value, str) and ":" in value:
        from ruamel.yaml.scalarstring import DoubleQuotedScalarString
        return DoubleQuotedScalarString(value)
    return value


def _write(path: Path, yaml, doc: Any) -> None:
    buffer = StringIO()
    yaml.dump(doc, buffer)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
