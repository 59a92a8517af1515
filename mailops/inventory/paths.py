"""Where inventories are and how their paths are shown to the operator."""

from __future__ import annotations

import os
from pathlib import Path

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


def resolve_inventory_path(name: str | Path) -> Path:
    """A directory path as given, or a bare NAME under ``<repo>/inventories/``."""
    path = Path(name)
    if path.is_dir() or len(path.parts) != 1 or str(name).startswith("."):
        return path
    return REPO_ROOT / "inventories" / str(name)
