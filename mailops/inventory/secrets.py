"""Resolve secret references ({env: VAR} / {file: PATH}) at the moment they are needed.

Secrets never live in the inventory (it is in git); the inventory only says
where to find them. Error messages name the reference, never the value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mailops.errors import MailopsError
from mailops.inventory.scalars import EnvSecret, FileSecret, _secret_ref


def describe(ref: EnvSecret | FileSecret) -> str:
    """The reference as written in YAML, e.g. ``{env: MAILOPS_TOKEN}``."""
    if isinstance(ref, EnvSecret):
        return f"{{env: {ref.env}}}"
    return f"{{file: {ref.file}}}"


def secret_path(ref: FileSecret, base_dir: str | Path) -> Path:
    """Where a ``{file: PATH}`` reference points: ``~``/``$VAR`` expanded, relative to ``base_dir``."""
    path = Path(os.path.expandvars(os.path.expanduser(ref.file)))
    return path if path.is_absolute() else Path(base_dir) / path


def resolve(ref: EnvSecret | FileSecret | dict[str, Any], base_dir: str | Path) -> str:
    """Return the secret's value, or raise MailopsError naming the reference (not the value)."""
    if not isinstance(ref, (EnvSecret, FileSecret)):
        try:
            ref = _secret_ref(ref)
        except ValueError as exc:
            raise MailopsError(f"bad secret reference: {exc}") from None
    if isinstance(ref, EnvSecret):
        value = os.environ.get(ref.env)
        if not value:
            raise MailopsError(
                f"secret {describe(ref)}: environment variable {ref.env} is "
                f"{'empty' if value == '' else 'not set'}; export it before running mailops")
        return value
    path = secret_path(ref, base_dir)
    try:
        value = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MailopsError(f"secret {describe(ref)}: {path} does not exist; create it with the secret in it") from None
    except IsADirectoryError:
        raise MailopsError(f"secret {describe(ref)}: {path} is a directory; point file: at a file") from None
    except PermissionError:
        raise MailopsError(f"secret {describe(ref)}: cannot read {path} (permission denied); fix its owner or mode") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MailopsError(f"secret {describe(ref)}: cannot read {path} ({type(exc).__name__}); check the file") from None
    value = value.rstrip("\r\n")
    if not value:
        raise MailopsError(f"secret {describe(ref)}: {path} is empty; write the secret into it")
    return value
