"""Filters of the mailops ``sasl`` role: turn submission users into Dovecot
passwd-file entries on the controller.

* ``sasl_secret_problems(users, base_dir)`` lists what is wrong with the users'
  secret references (missing environment variable, unreadable file, both or
  neither of password/password_hash, ...).  Messages name the reference, never
  the secret, so the task that reports them does not need ``no_log``.
* ``sasl_passwd_entries(users, base_dir, rounds)`` resolves each ``password``
  reference ({env: VAR} or {file: PATH}, a relative PATH is relative to
  base_dir, normally the inventory directory) and returns
  ``[{"login": ..., "hash": "{SHA512-CRYPT}$6$rounds=...$salt$..."}]``.
  A ``password_hash`` given in the inventory is passed through (crypt hashes
  get Dovecot's ``{CRYPT}`` prefix).

The salt is derived from the password and the login
(HMAC-SHA256(password, login)), so the same password always gives the same
hash (idempotent runs), a changed password a new hash with a new salt, and two
users with the same password different hashes.  SHA512-CRYPT is implemented
here in pure Python (Drepper's specification, the ``$6$`` scheme of glibc and
libxcrypt) because passlib is not a dependency and Python 3.13 removed the
``crypt`` module.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

try:  # inside Ansible
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - unit tests without Ansible
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SHA512_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
)
ROUNDS_MIN = 1000
ROUNDS_MAX = 999_999_999


def _repeat(data: bytes, length: int) -> bytes:
    return (data * (length // len(data) + 1))[:length]


def sha512_crypt(password: str, salt: str, rounds: int = 5000) -> str:
    """``crypt(password, "$6$rounds=R$salt$")`` (glibc/libxcrypt compatible)."""
    if not ROUNDS_MIN <= int(rounds) <= ROUNDS_MAX:
        raise AnsibleFilterError(f"SHA512-CRYPT rounds must be {ROUNDS_MIN}..{ROUNDS_MAX}, got {rounds}")
    rounds = int(rounds)
    p = password.encode("utf-8")
    s = salt.encode("ascii")[:16]
    b = hashlib.sha512(p + s + p).digest()
    ctx = hashlib.sha512(p + s)
    ctx.update(_repeat(b, len(p)))
    n = len(p)
    while n:
        ctx.update(b if n & 1 else p)
        n >>= 1
    a = ctx.digest()
    dp = hashlib.sha512(p * len(p)).digest()
    p_seq = _repeat(dp, len(p)) if p else b""
    ds = hashlib.sha512(s * (16 + a[0])).digest()
    s_seq = _repeat(ds, len(s)) if s else b""
    c = a
    for i in range(rounds):
        ctx = hashlib.sha512(p_seq if i & 1 else c)
        if i % 3:
            ctx.update(s_seq)
        if i % 7:
            ctx.update(p_seq)
        ctx.update(c if i & 1 else p_seq)
        c = ctx.digest()
    out = []
    for i0, i1, i2 in _SHA512_ORDER:
        w = (c[i0] << 16) | (c[i1] << 8) | c[i2]
        for _ in range(4):
            out.append(_ITOA64[w & 0x3F])
            w >>= 6
    w = c[63]
    for _ in range(2):
        out.append(_ITOA64[w & 0x3F])
        w >>= 6
    return f"$6$rounds={rounds}${s.decode()}${''.join(out)}"


def _salt_for(password: str, login: str) -> str:
    digest = hmac.new(password.encode("utf-8"), b"mailops-sasl-salt\0" + login.lower().encode("utf-8"),
                      hashlib.sha256).digest()
    return "".join(_ITOA64[x & 0x3F] for x in digest[:16])


def _describe(ref) -> str:
    if isinstance(ref, dict) and len(ref) == 1:
        (key, value), = ref.items()
        return f"{{{key}: {value}}}"
    return "a value that is not {env: VAR} or {file: PATH}"


def _resolve(ref, base_dir) -> tuple[str | None, str | None]:
    """(secret, None) or (None, problem)."""
    if not isinstance(ref, dict) or len(ref) != 1 or next(iter(ref)) not in ("env", "file"):
        return None, "password must be a secret reference {env: VAR} or {file: PATH} (plain strings are refused)"
    kind, name = next(iter(ref.items()))
    if not isinstance(name, str) or not name:
        return None, f"password {_describe(ref)}: the {kind} name must be a non-empty string"
    if kind == "env":
        value = os.environ.get(name)
        if not value:
            state = "empty" if value == "" else "not set"
            return None, f"password {{env: {name}}}: environment variable {name} is {state} on the controller"
        return value, None
    path = Path(os.path.expandvars(os.path.expanduser(name)))
    if not path.is_absolute():
        path = Path(base_dir or ".") / path
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        return None, f"password {{file: {name}}}: {path} does not exist on the controller"
    except IsADirectoryError:
        return None, f"password {{file: {name}}}: {path} is a directory"
    except PermissionError:
        return None, f"password {{file: {name}}}: cannot read {path} (permission denied)"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"password {{file: {name}}}: cannot read {path} ({type(exc).__name__})"
    if not value:
        return None, f"password {{file: {name}}}: {path} is empty"
    return value, None


def _check_hash(value) -> str | None:
    if not isinstance(value, str) or not value:
        return "password_hash must be a non-empty string"
    if any(ch in value for ch in ":\n\r \t"):
        return "password_hash must not contain ':', spaces or line breaks"
    if not (value.startswith("{") or value.startswith("$")):
        return "password_hash must be a crypt hash ($6$..., $y$..., $2b$...) or {SCHEME}..."
    return None


def _login_problem(user) -> tuple[str, str | None]:
    if not isinstance(user, dict):
        return "?", "each user must be a mapping with login and password or password_hash"
    login = user.get("login")
    if not isinstance(login, str) or "@" not in login or any(c in login for c in ": \t\n"):
        return str(login), "login must be an email address (no spaces or ':')"
    has_pw, has_hash = "password" in user, "password_hash" in user
    if has_pw == has_hash:
        return login, "give exactly one of password ({env: VAR} / {file: PATH}) or password_hash"
    return login, None


def sasl_secret_problems(users, base_dir=None) -> list[str]:
    problems = []
    seen = set()
    for user in users or []:
        login, problem = _login_problem(user)
        if problem is None and login.lower() in seen:
            problem = "login is listed twice"
        if problem is None:
            seen.add(login.lower())
            if "password" in user:
                _, problem = _resolve(user["password"], base_dir)
            else:
                problem = _check_hash(user["password_hash"])
        if problem:
            problems.append(f"sasl user {login}: {problem}")
    return problems


def sasl_passwd_entries(users, base_dir=None, rounds=100000) -> list[dict]:
    problems = sasl_secret_problems(users, base_dir)
    if problems:
        raise AnsibleFilterError("; ".join(problems))
    entries = []
    for user in users or []:
        login = user["login"].lower()
        if "password" in user:
            secret, _ = _resolve(user["password"], base_dir)
            value = "{SHA512-CRYPT}" + sha512_crypt(secret, _salt_for(secret, login), rounds)
        else:
            value = user["password_hash"]
            if value.startswith("$"):
                value = "{CRYPT}" + value
        entries.append({"login": login, "hash": value})
    return entries


class FilterModule:
    def filters(self):
        return {
            "sasl_passwd_entries": sasl_passwd_entries,
            "sasl_secret_problems": sasl_secret_problems,
        }
