"""Where inventories are and how their paths are shown to the operator."""

from __future__ import annotations

import os
from pathlib import Path

from mailops.errors import MailopsError

REPO_ROOT = Path(__file__).resolve().parents[2]


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


# The environment variable naming the default inventory (a directory, or a NAME under ./inventories/).
INVENTORY_ENV = "MAILOPS_INVENTORY"


def _inventory_dirs(base: Path) -> list[Path]:
    try:
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def default_inventory(cwd: Path | None = None) -> Path:
    """The inventory a command uses without ``-i``: ``$MAILOPS_INVENTORY``, else ``./inventory/``, else
    the only directory under ``./inventories/``; otherwise a MailopsError saying how to name one.
    Never a built-in one: acting on an inventory the operator did not choose is the surprise to avoid."""
    env = os.environ.get(INVENTORY_ENV, "").strip()
    if env:
        return resolve_inventory_path(env)
    cwd = cwd or Path.cwd()
    if (cwd / "inventory").is_dir():
        return cwd / "inventory"
    found = _inventory_dirs(cwd / "inventories")
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(p.name for p in found)
        raise MailopsError(f"no inventory chosen and ./inventories/ holds several ({names}); "
                           f"pass -i NAME or set {INVENTORY_ENV}=NAME")
    raise MailopsError(f"no inventory chosen: pass -i DIR, set {INVENTORY_ENV}=DIR, or run where ./inventory/ "
                       "or a single ./inventories/NAME/ is (start one with `mailops init ./inventory "
                       "--domain example.org --host mail.example.org`)")


def resolve_inventory_path(name: str | Path | None) -> Path:
    """The inventory ``-i`` names: a directory path as given, or a bare NAME under ``./inventories/``
    (else under the mailops checkout's ``inventories/``, where ``lab`` lives); None: the default
    (:func:`default_inventory`)."""
    if name is None or str(name) == "":
        return default_inventory()
    path = Path(name)
    if path.is_dir() or len(path.parts) != 1 or str(name).startswith("."):
        return path
    here = Path.cwd() / "inventories" / str(name)
    if here.is_dir() or not (REPO_ROOT / "inventories").is_dir():
        return here
    return REPO_ROOT / "inventories" / str(name)
