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


def resolve_hex_keys(ref: EnvSecret | FileSecret, base_dir: str | Path, min_bytes: int = 16) -> list[bytes]:
    """Keys in hex, one per line, newest first (``#`` lines and blank lines skipped), each at
    least ``min_bytes`` long: the return-path key format of the mail hosts' key file
    (:func:`mailops.returnpath.receive.read_keys`, which the inventory layer cannot import).
    A file must be mode 0600 or stricter. Errors name the reference and the key's number, never a key."""
    if isinstance(ref, EnvSecret):
        text = os.environ.get(ref.env) or ""
        if not text.strip():
            raise MailopsError(f"secret {describe(ref)}: environment variable {ref.env} is "
                               f"{'empty' if ref.env in os.environ else 'not set'}; export it before running mailops")
        where = f"environment variable {ref.env}"
    else:
        path = secret_path(ref, base_dir)
        where = str(path)
        try:
            mode = os.stat(path).st_mode
            text = read_regular_file(path, MAX_SECRET_BYTES).decode("ascii")
        except FileNotFoundError:
            raise MailopsError(f"secret {describe(ref)}: {path} does not exist; create it with one hex key per "
                               "line, e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`") from None
        except UnsafeFile as exc:
            raise MailopsError(f"secret {describe(ref)}: {path} {exc}; point file: at a regular file") from None
        except PermissionError:
            raise MailopsError(f"secret {describe(ref)}: cannot read {path} (permission denied); fix its owner "
                               "or mode") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MailopsError(f"secret {describe(ref)}: cannot read {path} ({type(exc).__name__}); write one "
                               "hex key per line") from None
        if mode & 0o077:
            raise MailopsError(f"secret {describe(ref)}: {path} is readable by others (mode {mode & 0o777:o}); "
                               f"run chmod 600 {path}")
    keys = []
    lines = [line.strip() for line in text.splitlines()]
    for number, line in enumerate((x for x in lines if x and not x.startswith("#")), start=1):
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise MailopsError(f"secret {describe(ref)}: key {number} in {where} is not hex; write one hex key "
                               "per line (the value is not shown)") from None
        if len(key) < min_bytes:
            raise MailopsError(f"secret {describe(ref)}: key {number} in {where} has {len(key)} bytes; use at least "
                               f"{min_bytes} (e.g. `openssl rand -hex 32`)")
        keys.append(key)
    if not keys:
        raise MailopsError(f"secret {describe(ref)}: no key in {where}; write one hex key per line "
                           "(e.g. `openssl rand -hex 32`)")
    return keys
