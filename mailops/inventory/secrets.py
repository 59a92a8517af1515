"""Resolve secret references ({env: VAR} / {file: PATH}) at the moment they are needed.

Secrets never live in the inventory (it is in git); the inventory only says
where to find them. Error messages name the reference, never the value.
A ``{file: PATH}`` must be a regular file of at most 64 KiB (see
:mod:`mailops.inventory.files`): a FIFO or a device is refused, not read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mailops.errors import MailopsError
from mailops.inventory.files import MAX_SECRET_BYTES, UnsafeFile, read_regular_file
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
        _refuse_control(ref, value, f"environment variable {ref.env}")
        return value
    path = secret_path(ref, base_dir)
    try:
        # universal newlines, as reading it in text mode did
        value = read_regular_file(path, MAX_SECRET_BYTES).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnsafeFile as exc:
        if exc.kind == "a directory":
            raise MailopsError(f"secret {describe(ref)}: {path} is a directory; point file: at a file") from None
        raise MailopsError(f"secret {describe(ref)}: {path} {exc}; point file: at a regular file that holds "
                           "only the secret") from None
    except FileNotFoundError:
        raise MailopsError(f"secret {describe(ref)}: {path} does not exist; create it with the secret in it") from None
    except PermissionError:
        raise MailopsError(f"secret {describe(ref)}: cannot read {path} (permission denied); fix its owner or mode") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MailopsError(f"secret {describe(ref)}: cannot read {path} ({type(exc).__name__}); check the file") from None
    # the line break(s) `echo TOKEN > file` and editors add end the line, they are not part of the secret
    value = value.rstrip("\r\n")
    if not value:
        raise MailopsError(f"secret {describe(ref)}: {path} is empty; write the secret into it")
    _refuse_control(ref, value, str(path))
    return value


def _refuse_control(ref: EnvSecret | FileSecret, value: str, source: str) -> None:
    """No secret (token, TSIG key, password) holds a control character: a CR/LF inside or at the end
    of an environment variable would reach the API as part of the token and read as 'cannot reach'."""
    for i, char in enumerate(value):
        if ord(char) < 0x20 or ord(char) == 0x7f:
            what = "a line break" if char in "\r\n" else f"a control character (U+{ord(char):04X})"
            place = "ends in" if value[i + 1:].strip("\r\n") == "" else f"has at position {i + 1}"
            raise MailopsError(f"secret {describe(ref)}: {source} {place} {what}; "
                               "write only the secret there (the value is not shown)")


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be an HTTP bearer token (None when it can); never contains the token."""
    for i, char in enumerate(token):
        if not 0x21 <= ord(char) <= 0x7e:
            return (f"has {'a space' if char == ' ' else 'a non-ASCII character'} at position {i + 1} "
                    "(API tokens are printable ASCII)")
    return None
