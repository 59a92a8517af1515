"""The DKIM key store on the controller: ``<store>/keys.json`` plus one PEM file per key.

Manifest (the contract the opendkim role reads)::

    {"version": 1, "keys": [{"domain": "shop.test", "selector": "mo-20261122",
      "algorithm": "rsa", "bits": 2048, "state": "pending|active|retired",
      "created": "2026-11-22T10:46:00Z", "activated": null, "retired": null,
      "private_key": "shop.test/mo-20261122.key", "dns_value": "v=DKIM1; k=rsa; p=..."}]}

Life cycle: pending -> active -> retired -> (purged after the grace period).
Every change holds an exclusive lock on ``<store>/.lock``, writes key files before
the manifest, and replaces the manifest atomically (temp file, fsync, rename,
fsync of the directory).  Private key files are created 0600 and directories 0700
from the start.  Private key material never appears in a return value, message
or exception raised here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailops.dkim import dnscheck
from mailops.dkim.manifest import (DOMAIN_RE, MANIFEST, MAX_RSA_BITS, MIN_RSA_BITS, VERSION, DkimKey, format_time,
                                   parse_manifest, parse_time, utc_now)
from mailops.dkim.signing import ALGORITHMS, STATES, signing_keys
from mailops.dns.kinds import dkim as dkim_kind
from mailops.errors import MailopsError

__all__ = [
    "ALGORITHMS", "ActivationResult", "DkimKey", "GenerateResult", "KeyStore", "STATES",
    "format_time", "parse_time",
]

LOCK = ".lock"
DEFAULT_PREFIX = "mo"
DEFAULT_GRACE_DAYS = 7
_PREFIX_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")


@dataclass(frozen=True)
class GenerateResult:
    created: list[DkimKey] = field(default_factory=list)
    existing: list[DkimKey] = field(default_factory=list)  # active keys that made generate a no-op


@dataclass(frozen=True)
class ActivationResult:
    activated: list[DkimKey]
    retired: list[DkimKey]
    # selector -> {server: value | None | LookupFailed}; empty when the check was forced off
    checks: dict[str, dict[str, Any]]
    forced: bool = False


# --------------------------------------------------------------------------- settings


def _setting(settings: Any, name: str, default: Any) -> Any:
    if settings is None:
        return default
    if isinstance(settings, Mapping):
        value = settings.get(name, default)
    else:
        value = getattr(settings, name, default)
    return default if value is None else value


def _check_settings(domain: str, settings: Any) -> tuple[str, list[str], int]:
    where = f"mailops_domains.{domain}.dkim"
    prefix = _setting(settings, "selector_prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise MailopsError(f"{where}.selector_prefix: {prefix!r} is not a valid selector prefix; "
                           "use 1-40 lowercase letters, digits and inner hyphens, e.g. mo")
    algorithms = list(_setting(settings, "algorithms", ["rsa"]))
    bad = [a for a in algorithms if a not in ALGORITHMS]
    if bad or not algorithms or len(set(algorithms)) != len(algorithms):
        raise MailopsError(f"{where}.algorithms: {algorithms!r} is not valid; "
                           "list rsa and/or ed25519, each at most once, e.g. [rsa] or [rsa, ed25519]")
    bits = _setting(settings, "rsa_bits", MIN_RSA_BITS)
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise MailopsError(f"{where}.rsa_bits: {bits!r} is not a number; set rsa_bits: 2048")
    if bits < MIN_RSA_BITS:
        raise MailopsError(f"{where}.rsa_bits: {bits}-bit RSA keys are too weak and receivers reject them; "
                           "set rsa_bits: 2048 (up to 4096)")
    if bits > MAX_RSA_BITS:
        raise MailopsError(f"{where}.rsa_bits: {bits}-bit RSA keys do not fit in DNS TXT records reliably; "
                           "set rsa_bits between 2048 and 4096")
    return prefix, algorithms, bits


def _check_domain(domain: str) -> str:
    name = domain.strip().lower().rstrip(".") if isinstance(domain, str) else ""
    if not DOMAIN_RE.fullmatch(name):
        raise MailopsError(f"{domain!r} is not a domain name; pass a fully qualified name such as shop.example.com")
    return name


# --------------------------------------------------------------------------- key material


def _new_key(algorithm: str, bits: int) -> tuple[bytes, str]:
    """(PKCS#8 PEM private key, DNS TXT value)."""
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem, dkim_kind.value_for(private.public_key())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` 0600 (never wider, not even briefly), fully written, or not at all."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if the name exists: never overwrite a key
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------- the store


class KeyStore:
    """The key store directory.  ``grace_days``: days a retired key stays published,
    one number or ``{domain: days}`` (missing domains: 7)."""

    def __init__(self, path: str | Path, grace_days: int | Mapping[str, int] = DEFAULT_GRACE_DAYS) -> None:
        self.path = Path(path)
        self.grace_days = grace_days
        # (inode, mtime, size) of the manifest last parsed, and its keys: a dns plan asks
        # once per domain, and re-validating 200 entries 200 times dominated a 200-zone sync
        self._parsed: tuple[tuple[int, int, int], list[DkimKey]] | None = None

    @classmethod
    def for_inventory(cls, inv: Any) -> "KeyStore":
        """The store of a loaded :class:`mailops.inventory.Inventory`, with its grace periods."""
        grace = {name: d.dkim.retired_grace_days for name, d in inv.domains.items()}
        return cls(inv.dkim_keystore, grace)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def private_key_path(self, key: DkimKey) -> Path:
        return self.path / key.private_key

    def grace_for(self, domain: str) -> timedelta:
        if isinstance(self.grace_days, Mapping):
            days = self.grace_days.get(domain, DEFAULT_GRACE_DAYS)
        else:
            days = self.grace_days
        return timedelta(days=days)

    # ---- reading

    def _read(self) -> list[DkimKey]:
        where = self.manifest_path
        try:
            st = where.stat()
        except FileNotFoundError:
            return []
        except OSError:
            st = None
        ident = (st.st_ino, st.st_mtime_ns, st.st_size) if st else None
        if ident is not None and self._parsed is not None and self._parsed[0] == ident:
            return list(self._parsed[1])
        keys = self._parse()
        if ident is not None:
            self._parsed = (ident, keys)
        return list(keys)

    def _parse(self) -> list[DkimKey]:
        return parse_manifest(self.manifest_path)

    def keys(self, domain: str | None = None) -> list[DkimKey]:
        """All keys (or one domain's), sorted by domain, creation time and selector."""
        keys = self._read()
        if domain is not None:
            domain = _check_domain(domain)
            keys = [k for k in keys if k.domain == domain]
        return sorted(keys, key=lambda k: (k.domain, k.created, k.selector))

    def get(self, domain: str, selector: str) -> DkimKey:
        domain = _check_domain(domain)
        for key in self.keys(domain):
            if key.selector == selector:
                return key
        known = ", ".join(k.selector for k in self.keys(domain)) or "none"
        raise MailopsError(f"{domain} has no DKIM key with selector {selector!r} in {self.manifest_path} "
                           f"(known: {known}); see mailops dkim list")

    def published_until(self, key: DkimKey) -> datetime | None:
        """When a retired key stops being published (None: not retired)."""
        if key.state != "retired" or key.retired is None:
            return None
        try:
            return parse_time(key.retired) + self.grace_for(key.domain)
        except OverflowError:  # a damaged time such as year 9999, or an absurd grace period
            raise MailopsError(
                f"{self.manifest_path}: {key.domain} key {key.selector}: retired {key.retired} plus the grace "
                "period is past the year 9999; fix the entry's retired time (or retired_grace_days)") from None

    def is_published(self, key: DkimKey, now: datetime | None = None) -> bool:
        """Pending and active keys, and retired keys within the domain's grace period."""
        if key.state in ("pending", "active"):
            return True
        until = self.published_until(key)
        return until is not None and utc_now(now) < until

    def published(self, domain: str, now: datetime | None = None) -> list[DkimKey]:
        """The keys whose records DNS must carry (what ``dns sync`` publishes)."""
        return [k for k in self.keys(domain) if self.is_published(k, now)]

    def signing(self, domain: str | None = None) -> list[DkimKey]:
        """The keys that sign (:func:`mailops.dkim.signing.signing_keys`: the newest active key per algorithm)."""
        return signing_keys(self.keys(domain))

    def is_signing(self, key: DkimKey) -> bool:
        return any(k.selector == key.selector for k in self.signing(key.domain))

    # ---- writing

    def _ensure_dir(self, path: Path) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                raise MailopsError(f"{path} exists but is not a directory; move it away or set "
                                   "mailops_dkim_keystore to another path") from None
            # refused, not fixed: mailops sets modes at creation only, and a directory someone made
            # 0755 on purpose (a shared backup area) is not silently changed under them
            if st.st_mode & 0o077:
                who = "writable" if st.st_mode & 0o022 else "readable"
                raise MailopsError(f"{path} is {who} by group or others (mode {stat.S_IMODE(st.st_mode):04o}), "
                                   f"but it holds DKIM private keys; run chmod 700 {path}") from None
        except OSError as exc:
            raise MailopsError(f"cannot create the DKIM key store directory {path} "
                               f"({exc.strerror or exc}); check mailops_dkim_keystore and permissions") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[DkimKey]]:
        """Exclusive lock; yields the current keys (re-read under the lock)."""
        parent = self.path.parent
        if not parent.is_dir():
            try:
                parent.mkdir(parents=True, mode=0o755)
            except OSError as exc:
                raise MailopsError(f"cannot create {parent} ({exc.strerror or exc}); "
                                   "check mailops_dkim_keystore and permissions") from None
        self._ensure_dir(self.path)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)

    def _save(self, keys: Iterable[DkimKey]) -> None:
        ordered = sorted(keys, key=lambda k: (k.domain, k.created, k.selector))
        text = json.dumps({"version": VERSION, "keys": [k.to_dict() for k in ordered]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".keys-", suffix=".json", dir=self.path)  # mkstemp: 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.manifest_path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise MailopsError(f"cannot write {self.manifest_path} ({exc.strerror or exc}); "
                               "check free space and permissions (the old manifest is unchanged)") from None
        _fsync_dir(self.path)

    def _selector(self, keys: list[DkimKey], domain: str, prefix: str, algorithm: str, when: datetime,
                  taken: set[str]) -> str:
        base = f"{prefix}-{when:%Y%m%d}" + ("-ed" if algorithm == "ed25519" else "")
        used = {k.selector for k in keys if k.domain == domain} | taken
        n = 1
        while True:
            selector = base if n == 1 else f"{base}-{n}"
            # an orphan key file (e.g. from an interrupted run) also blocks the name: never overwrite a key
            if selector not in used and not (self.path / domain / f"{selector}.key").exists():
                return selector
            n += 1

    def _create(self, keys: list[DkimKey], domain: str, settings: Any, algorithms: list[str],
                state: str, when: datetime) -> list[DkimKey]:
        prefix, _, bits = _check_settings(domain, settings)
        self._ensure_dir(self.path / domain)
        created: list[DkimKey] = []
        taken: set[str] = set()
        try:
            for algorithm in algorithms:
                selector = self._selector(keys, domain, prefix, algorithm, when, taken)
                taken.add(selector)
                pem, value = _new_key(algorithm, bits)
                rel = f"{domain}/{selector}.key"
                try:
                    _write_private(self.path / rel, pem)
                except OSError as exc:
                    raise MailopsError(f"cannot write the private key file {self.path / rel} "
                                       f"({exc.strerror or exc}); check free space and permissions") from None
                stamp = format_time(when)
                created.append(DkimKey(domain=domain, selector=selector, algorithm=algorithm,
                                       bits=bits if algorithm == "rsa" else None, state=state,
                                       created=stamp, activated=stamp if state == "active" else None,
                                       retired=None, private_key=rel, dns_value=value))
            self._save(keys + created)
        except BaseException:
            for key in created:  # no orphan key files when the manifest was not written
                with contextlib.suppress(OSError):
                    os.unlink(self.path / key.private_key)
            raise
        return created

    def generate(self, domain: str, settings: Any = None, now: datetime | None = None) -> GenerateResult:
        """The domain's first key(s), directly active, one per configured algorithm.

        Algorithms that already have an active key are left alone (idempotent)."""
        domain = _check_domain(domain)
        _, algorithms, _ = _check_settings(domain, settings)
        when = utc_now(now)
        with self._locked() as keys:
            active = [k for k in keys if k.domain == domain and k.state == "active"]
            have = {k.algorithm for k in active}
            missing = [a for a in algorithms if a not in have]
            created = self._create(keys, domain, settings, missing, "active", when) if missing else []
        return GenerateResult(created=created, existing=sorted(active, key=lambda k: k.selector))

    def rotate(self, domain: str, settings: Any = None, now: datetime | None = None) -> list[DkimKey]:
        """New pending key(s), one per configured algorithm, to publish and then activate."""
        domain = _check_domain(domain)
        _, algorithms, _ = _check_settings(domain, settings)
        when = utc_now(now)
        with self._locked() as keys:
            pending = [k for k in keys if k.domain == domain and k.state == "pending" and k.algorithm in algorithms]
            if pending:
                names = ", ".join(k.selector for k in pending)
                raise MailopsError(
                    f"{domain} already has a pending key ({names}); activate it "
                    f"(mailops dkim activate {domain}) or drop it (mailops dkim retire {domain} SELECTOR) "
                    "before rotating again")
            return self._create(keys, domain, settings, algorithms, "pending", when)

    def activate(self, domain: str, selector: str | None = None, *,
                 nameservers: list[str] | None = None, port: int = 53,
                 checker: dnscheck.Checker | None = None, force: bool = False,
                 now: datetime | None = None) -> ActivationResult:
        """Make pending key(s) active once DNS shows them; retire the keys they replace.

        ``selector`` None: every pending key of the domain.  Each must be visible with
        exactly its public key on every server ``checker(domain, selector)`` reports
        (default: :func:`dnscheck.published_value` on ``nameservers``), otherwise
        nothing changes and MailopsError says what each server answered.
        ``force`` skips the DNS check: mail signed with a key receivers cannot find fails DKIM.
        """
        domain = _check_domain(domain)
        when = utc_now(now)
        if checker is None:
            def checker(d: str, s: str) -> dict:
                return dnscheck.published_value(d, s, nameservers, port=port)
        # check DNS before taking the lock (queries can be slow); state is re-checked under it
        targets = self._targets(self.keys(domain), domain, selector)
        checks: dict[str, dict[str, Any]] = {}
        if not force:
            failures = []
            for key in targets:
                answers = dict(checker(domain, key.selector))
                checks[key.selector] = answers
                if not answers or not all(dnscheck.matches(key.dns_value, v) for v in answers.values()):
                    seen = "; ".join(f"{srv}: {dnscheck.describe(key.dns_value, v)}" for srv, v in answers.items())
                    failures.append(f"{key.record_name} TXT is not visible with the expected key "
                                    f"on every authoritative server ({seen or 'no server answered'})")
            if failures:
                raise MailopsError(f"{domain}: refusing to activate: " + " and ".join(failures) +
                                   "; publish the record (mailops dns sync), wait and retry, "
                                   "or pass --force (dangerous: receivers fail DKIM until DNS has the key)")
        with self._locked() as keys:
            targets = self._targets(keys, domain, selector)
            stamp = format_time(when)
            activated, retired = [], []
            new = {(k.domain, k.selector) for k in targets}
            algos = {k.algorithm for k in targets}
            updated = []
            for key in keys:
                if (key.domain, key.selector) in new:
                    key = replace(key, state="active", activated=stamp)
                    activated.append(key)
                elif key.domain == domain and key.state == "active" and key.algorithm in algos:
                    key = replace(key, state="retired", retired=stamp)
                    retired.append(key)
                updated.append(key)
            self._save(updated)
        return ActivationResult(activated=activated, retired=retired, checks=checks, forced=force)

    @staticmethod
    def _targets(keys: list[DkimKey], domain: str, selector: str | None) -> list[DkimKey]:
        mine = [k for k in keys if k.domain == domain]
        if selector is not None:
            match = [k for k in mine if k.selector == selector]
            if not match:
                known = ", ".join(k.selector for k in mine) or "none"
                raise MailopsError(f"{domain} has no DKIM key with selector {selector!r} (known: {known}); "
                                   "see mailops dkim list")
            if match[0].state != "pending":
                raise MailopsError(f"{domain}: key {selector} is {match[0].state}, not pending; only pending "
                                   f"keys can be activated (create one with mailops dkim rotate {domain})")
            return match
        pending = [k for k in mine if k.state == "pending"]
        if not pending:
            raise MailopsError(f"{domain} has no pending DKIM key to activate; "
                               f"create one with mailops dkim rotate {domain}")
        algos = [k.algorithm for k in pending]
        if len(set(algos)) != len(algos):
            names = ", ".join(k.selector for k in pending)
            raise MailopsError(f"{domain} has several pending keys of one algorithm ({names}); "
                               "choose one with --selector")
        return pending

    def retire(self, domain: str, selector: str, now: datetime | None = None) -> DkimKey:
        """Mark a key retired now (a retired key keeps its original time)."""
        domain = _check_domain(domain)
        when = utc_now(now)
        with self._locked() as keys:
            target = self._find(keys, domain, selector)
            if target.state == "retired":
                return target
            done = replace(target, state="retired", retired=format_time(when))
            self._save([done if k is target else k for k in keys])
        return done

    @staticmethod
    def _find(keys: list[DkimKey], domain: str, selector: str) -> DkimKey:
        for key in keys:
            if key.domain == domain and key.selector == selector:
                return key
        known = ", ".join(k.selector for k in keys if k.domain == domain) or "none"
        raise MailopsError(f"{domain} has no DKIM key with selector {selector!r} (known: {known}); "
                           "see mailops dkim list")

    def purge(self, now: datetime | None = None) -> list[DkimKey]:
        """Remove retired keys past their grace period: manifest entry and private key file."""
        when = utc_now(now)
        with self._locked() as keys:
            gone = [k for k in keys if k.state == "retired" and not self.is_published(k, when)]
            if not gone:
                return []
            self._save([k for k in keys if k not in gone])
            for key in gone:
                try:
                    os.unlink(self.path / key.private_key)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise MailopsError(f"removed {key.selector} from the manifest but cannot delete "
                                       f"{self.path / key.private_key} ({exc.strerror or exc}); "
                                       "delete it by hand") from None
        return gone
