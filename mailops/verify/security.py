"""Security probes of a mail server made from OUTSIDE it (the "security" group of `mailops verify`).

Every probe connects from this machine to one public address of the server (IPv4 and IPv6
each) and returns one CheckResult named `<kind>.<port>.<family>`, e.g. `relay.25.ipv6`:

  relay.{25,587,465}       unauthenticated relaying to a foreign domain is refused (8 address tricks)
  auth-before-tls.587      AUTH is not offered before STARTTLS
  auth.25                  AUTH is never offered on 25, before or after STARTTLS
  tls.{587,465}            TLS < 1.2 is refused; records the normal handshake (and verifies it)
  ciphers.{587,465}        no weak TLS 1.2 suite is accepted (anonymous, NULL, export, RC4, 3DES,
                           static RSA, SHA1); a class this machine's OpenSSL cannot offer is "not tested"
  wrong-password.587       a wrong password gets 535
  send-as-other.{587,465}  a logged-in user cannot use another user's address as MAIL FROM
  vrfy.25                  VRFY does not reveal which mailboxes exist

Nothing is ever relayed or delivered: no probe sends DATA; sessions end with RSET and QUIT.
A probe that cannot talk to the server is "inconclusive", never "pass".

Certificates: with `ca_bundle` the tls.* checks verify the chain and the host name against it.
With None (a self-signed server) nothing is verified and the tls.* detail says so.  The other
probes never verify, so that a certificate problem cannot hide a relay or AUTH problem.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
import ssl
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from mailops.verify.result import CheckResult, Status

GROUP = "security"
SMTP, SUBMISSIONS, SUBMISSION = 25, 465, 587
EHLO_NAME = "mailops-probe.invalid"
# Target of the address-literal trick: the lab's receiving host.  Nothing is ever sent there.
LITERAL_TARGET = "198.51.100.2"

Outcome = tuple[Status, str, str]  # status, detail, fix


class ProbeError(Exception):
    """The server did not speak SMTP as expected: the probe is inconclusive."""


class StartTlsRefused(ProbeError):
    """STARTTLS not accepted (the tls.587 check fails on it; elsewhere it is inconclusive)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class _Smtp:
    """Just enough SMTP to probe: raw commands and reply codes, STARTTLS, AUTH. Never DATA."""

    def __init__(self, address: str, port: int, timeout: float, server_name: str,
                 implicit_tls: ssl.SSLContext | None = None):
        self.server_name = server_name
        self.sock = socket.create_connection((address, port), timeout=timeout)
        try:
            if implicit_tls is not None:
                self.sock = implicit_tls.wrap_socket(self.sock, server_hostname=server_name)
            self.file = self.sock.makefile("rb")
            code, lines = self._reply()
            if code != 220:
                raise ProbeError(f"greeting {code} {' '.join(lines)}")
            self.extensions = self.ehlo()
        except BaseException:
            self.sock.close()
            raise

    def _reply(self) -> tuple[int, list[str]]:
        lines = []
        while True:
            line = self.file.readline(4096)
            if not line:
                raise ProbeError("the server closed the connection")
            lines.append(line[4:].decode(errors="replace").strip())
            if line[3:4] != b"-":
                break
        if not line[:3].isdigit():
            raise ProbeError(f"not an SMTP reply: {line[:60]!r}")
        return int(line[:3]), lines

    def cmd(self, line: str) -> tuple[int, str]:
        self.sock.sendall(line.encode() + b"\r\n")
        code, lines = self._reply()
        return code, " ".join(lines)

    def ehlo(self) -> dict[str, str]:
        """EHLO; the extensions as {KEYWORD: parameters}, e.g. {"AUTH": "PLAIN LOGIN"}."""
        self.sock.sendall(f"EHLO {EHLO_NAME}\r\n".encode())
        code, lines = self._reply()
        if code != 250:
            raise ProbeError(f"EHLO answered {code} {' '.join(lines)}")
        # "AUTH=PLAIN" is the old form some servers add for broken clients
        return {words[0].upper(): (words[1:] or [""])[0]
                for words in (line.replace("=", " ", 1).split(None, 1) for line in lines[1:] if line)}

    def starttls(self, ctx: ssl.SSLContext) -> None:
        """STARTTLS and a fresh EHLO; ssl.SSLError when the handshake fails."""
        code, text = self.cmd("STARTTLS")
        if code != 220:
            raise StartTlsRefused(f"STARTTLS answered {code} {text}")
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.server_name)
        self.file = self.sock.makefile("rb")
        self.extensions = self.ehlo()

    def auth(self, login: str, password: str) -> tuple[int, str]:
        # Dovecot delays failed logins by up to 15 s per client address (auth penalty)
        self.sock.settimeout(self.sock.gettimeout() + 15)
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            return self.cmd("AUTH PLAIN " + _b64(f"\0{login}\0{password}"))
        if "LOGIN" not in mechanisms:
            raise ProbeError(f"no AUTH PLAIN or LOGIN offered (AUTH {' '.join(mechanisms) or 'absent'})")
        for step in ("AUTH LOGIN", _b64(login)):
            code, text = self.cmd(step)
            if code != 334:
                return code, text
        return self.cmd(_b64(password))

    def close(self) -> None:
        try:
            self.cmd("QUIT")
        except (OSError, ProbeError):
            pass
        self.sock.close()

    def __enter__(self) -> _Smtp:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _legacy_context() -> ssl.SSLContext:
    """A client that offers only TLS 1.0 and 1.1."""
    ctx = _unverified_context()
    with warnings.catch_warnings():  # Python deprecates these versions; offering them is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 offers TLS < 1.2 only at security level 0
    return ctx


# Weak TLS 1.2 suite classes, offered one class per handshake (OpenSSL cipher strings).
WEAK_CIPHERS = {
    "anonymous": "aNULL",
    "no encryption": "eNULL",
    "export": "EXPORT",
    "RC4": "RC4",
    "3DES": "3DES",
    "static RSA (no forward secrecy)": "kRSA",
    "SHA1 MAC (CBC)": "SHA1",
}
CIPHERS_FIX = ("offer only authenticated, forward-secret AEAD suites on 587/465: role variable "
               "postfix_submission_tls_ciphers (-o smtpd_tls_mandatory_ciphers=high -o tls_high_cipherlist=...)")


def _weak_contexts() -> tuple[dict[str, ssl.SSLContext], list[str]]:
    """A TLS-1.2-only client per weak class (TLS 1.3 suites would be offered whatever the list),
    and the classes this machine's OpenSSL cannot offer at all."""
    usable, untestable = {}, []
    for label, spec in WEAK_CIPHERS.items():
        ctx = _unverified_context()
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.set_ciphers(f"{spec}:@SECLEVEL=0")  # OpenSSL 3 refuses most of them above level 0
        except ssl.SSLError:  # "No cipher can be selected": compiled out of this OpenSSL
            untestable.append(label)
            continue
        usable[label] = ctx
    return usable, untestable


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _login_address(login: str, domain: str) -> str:
    return login if "@" in login else f"{login}@{domain}"


class _Prober:
    def __init__(self, host_name: str, sending_domains: list[str], users: list[tuple[str, str]],
                 foreign_domain: str, ca_bundle: str | None, timeout: float):
        if not users:
            raise ValueError("probe_host needs at least one submission user")
        self.host = host_name
        self.domain = sending_domains[0] if sending_domains else host_name
        self.users = users
        self.foreign = foreign_domain
        self.timeout = timeout
        self.plain_ctx = _unverified_context()
        self.legacy_ctx = _legacy_context()
        self.weak_ctxs, self.untestable_ciphers = _weak_contexts()
        if ca_bundle:
            self.checked_ctx = ssl.create_default_context(cafile=ca_bundle)
        else:
            self.checked_ctx = _unverified_context()
        self.verifies = bool(ca_bundle)

    def jobs(self) -> list[tuple[str, int, Callable[[str, int], Outcome]]]:
        """(check kind, port, probe) for each address; the probe is called as probe(address, port)."""
        return [*(("relay", port, self.relay) for port in (SMTP, SUBMISSION, SUBMISSIONS)),
                ("auth-before-tls", SUBMISSION, self.auth_offered),
                ("auth", SMTP, self.auth_offered),
                *(("tls", port, self.tls) for port in (SUBMISSION, SUBMISSIONS)),
                *(("ciphers", port, self.ciphers) for port in (SUBMISSION, SUBMISSIONS)),
                *(("send-as-other", port, self.send_as_other) for port in (SUBMISSION, SUBMISSIONS)),
                # one wrong password per address and run: fail2ban bans after a few (5 in 10 min by default)
                ("wrong-password", SUBMISSION, self.wrong_password),
                ("vrfy", SMTP, self.vrfy)]

    def connect(self, address: str, port: int, *, starttls: bool = True,
                ctx: ssl.SSLContext | None = None) -> _Smtp:
        """A greeted session after EHLO; inside TLS on 465, and on 587 after STARTTLS unless told not to."""
        ctx = ctx or self.plain_ctx
        session = _Smtp(address, port, self.timeout, self.host, ctx if port == SUBMISSIONS else None)
        if port == SUBMISSION and starttls:
            try:
                session.starttls(ctx)
            except BaseException:
                session.sock.close()
                raise
        return session

    # -- probes: each returns (status, detail, fix) ------------------------------------------
    def relay(self, address: str, port: int) -> Outcome:
        user = "relay-probe"
        tricks = {
            "plain": f"{user}@{self.foreign}",
            "percent-hack": f"{user}%{self.foreign}@{self.host}",
            "bang-path": f"{self.foreign}!{user}@{self.host}",
            "quoted-local-part": f'"{user}@{self.foreign}"@{self.host}',
            "source-route": f"@{self.host}:{user}@{self.foreign}",
            "address-literal": f"{user}@[{LITERAL_TARGET}]",
            "upper-case-domain": f"{user}@{self.foreign.upper()}",
            "trailing-dot": f"{user}@{self.foreign}.",
        }
        accepted: dict[str, str] = {}  # trick -> what was accepted
        deferred: set[str] = set()
        senders = (f"probe@{self.foreign}", f"relay-probe@{self.domain}")
        for sender in senders:
            # one session per sender: 8 refusals stay under Postfix's smtpd_soft_error_limit (10)
            with self.connect(address, port) as s:
                s.cmd(f"MAIL FROM:<{sender}>")  # a refused MAIL FROM makes every RCPT a 5xx (503)
                for trick, recipient in tricks.items():
                    code, text = s.cmd(f"RCPT TO:<{recipient}>")
                    if code < 400:
                        accepted.setdefault(trick, f"RCPT TO:<{recipient}> after MAIL FROM:<{sender}>: {code} {text}")
                    elif code < 500:
                        deferred.add(trick)
                if accepted:
                    s.cmd("RSET")  # an accepted RCPT is never followed by DATA
        total = len(tricks) * len(senders)
        if accepted:
            fix = ("smtpd_relay_restrictions must end in reject_unauth_destination and mynetworks list only "
                   "loopback" if port == SMTP else
                   "require AUTH on this service: -o smtpd_relay_restrictions=permit_sasl_authenticated,reject "
                   "and mynetworks = loopback only")
            return ("fail", f"port {port} accepts unauthenticated relaying via {', '.join(accepted)} "
                    f"(e.g. {next(iter(accepted.values()))})", fix)
        if deferred:
            return ("warn", f"port {port} refuses relaying only temporarily (4xx) via {', '.join(sorted(deferred))}",
                    "refuse relaying with a 5xx: soft_bounce = no, reject_unauth_destination")
        return "pass", f"all {total} relay attempts on port {port} refused with 5xx", ""

    def auth_offered(self, address: str, port: int) -> Outcome:
        with self.connect(address, port, starttls=False) as s:
            seen = ["before STARTTLS"] if "AUTH" in s.extensions else []
            tls_note = ""
            if port == SMTP:  # on 25 AUTH must stay off after STARTTLS too
                if "STARTTLS" in s.extensions:
                    s.starttls(self.plain_ctx)
                    if "AUTH" in s.extensions:
                        seen.append("after STARTTLS")
                else:
                    tls_note = " (no STARTTLS offered)"
        if seen:
            fix = ("on submission in master.cf: -o smtpd_tls_security_level=encrypt -o smtpd_tls_auth_only=yes"
                   if port == SUBMISSION else "offer SASL only on 587/465: smtpd_sasl_auth_enable = no in main.cf")
            return "fail", f"port {port} offers AUTH {' and '.join(seen)}", fix
        where = "before STARTTLS" if port == SUBMISSION else "before or after STARTTLS"
        return "pass", f"port {port} offers no AUTH {where}{tls_note}", ""

    def tls(self, address: str, port: int) -> Outcome:
        try:
            with self.connect(address, port, ctx=self.checked_ctx) as s:
                normal = f"{s.sock.version()} {s.sock.cipher()[0]}"
        except ssl.SSLCertVerificationError as exc:
            return ("fail", f"port {port}: certificate not valid for {self.host}: {exc.verify_message}",
                    f"install a certificate for {self.host} from a CA clients trust (tls role)")
        except ssl.SSLError as exc:
            return ("fail", f"port {port}: TLS handshake failed: {exc}",
                    "check smtpd_tls_chain_files and the TLS settings of this service")
        except StartTlsRefused as exc:
            return "fail", f"port {port}: {exc}", "offer STARTTLS on 587: -o smtpd_tls_security_level=encrypt"
        try:
            with self.connect(address, port, ctx=self.legacy_ctx) as s:
                legacy = f"{s.sock.version()} {s.sock.cipher()[0]}"
        except ssl.SSLError:
            legacy = ""  # handshake refused: what we want
        if legacy:
            return ("fail", f"port {port} accepts a TLS < 1.2 handshake ({legacy})",
                    "smtpd_tls_mandatory_protocols = >=TLSv1.2 (587/465 at level encrypt use it, not "
                    "smtpd_tls_protocols)")
        checked = "certificate verified" if self.verifies else "certificate not verified (no CA bundle given)"
        return "pass", f"port {port} refuses TLS < 1.2; negotiates {normal}; {checked}", ""

    def ciphers(self, address: str, port: int) -> Outcome:
        not_tested = (f"; not tested (this machine's OpenSSL cannot offer them): {', '.join(self.untestable_ciphers)}"
                      if self.untestable_ciphers else "")
        if not self.weak_ctxs:
            return "inconclusive", f"port {port}: no weak suite class could be offered{not_tested}", ""
        accepted = []
        for label, ctx in self.weak_ctxs.items():
            try:
                with self.connect(address, port, ctx=ctx) as s:
                    accepted.append(f"{label} ({s.sock.cipher()[0]})")
            except ssl.SSLError:
                pass  # handshake refused: what we want
        if accepted:
            return "fail", f"port {port} accepts weak TLS 1.2 suites: {', '.join(accepted)}{not_tested}", CIPHERS_FIX
        return "pass", f"port {port} refuses {', '.join(self.weak_ctxs)} suites{not_tested}", ""

    def wrong_password(self, address: str, port: int) -> Outcome:
        login, password = self.users[0]
        with self.connect(address, port) as s:
            code, text = s.auth(login, password + "-wrong")
        if code == 535:
            return "pass", f"port {port}: wrong password for {login} refused ({code} {text})", ""
        if code < 400:
            return ("fail", f"port {port}: wrong password for {login} accepted ({code} {text})",
                    "the SASL backend (Dovecot passdb) must check passwords")
        return "inconclusive", f"port {port}: wrong password answered {code} {text}, expected 535", ""

    def send_as_other(self, address: str, port: int) -> Outcome:
        login, password = self.users[0]
        own = _login_address(login, self.domain)
        # another user's address; with one user an address nobody may use
        other = (_login_address(self.users[1][0], self.domain) if len(self.users) > 1
                 else f"not-{secrets.token_hex(4)}@{own.rsplit('@', 1)[1]}")
        recipient = f"postmaster@{self.domain}"
        with self.connect(address, port) as s:
            code, text = s.auth(login, password)
            if code != 235:
                return "inconclusive", f"port {port}: could not log in as {login}: {code} {text}", ""

            def answer(sender: str) -> tuple[int, str]:
                code, text = s.cmd(f"MAIL FROM:<{sender}>")
                if code < 400:
                    code, text = s.cmd(f"RCPT TO:<{recipient}>")
                s.cmd("RSET")  # never DATA
                return code, text

            spoofed, own_answer = answer(other), answer(own)
        if spoofed[0] < 400:
            return ("fail", f"port {port}: {login} may send as <{other}> ({spoofed[0]} {spoofed[1]})",
                    "add reject_sender_login_mismatch to -o smtpd_sender_restrictions (smtpd_sender_login_maps)")
        if spoofed[0] < 500:
            return ("warn", f"port {port}: sending as <{other}> refused only temporarily ({spoofed[0]})",
                    "refuse foreign senders with a 5xx: reject_sender_login_mismatch")
        if own_answer[0] >= 400:
            return ("warn", f"port {port}: {login} may not send as its own <{own}> either ({own_answer[0]} "
                    f"{own_answer[1]}), so the refusal proves nothing",
                    "map each login to its own address in smtpd_sender_login_maps")
        return "pass", f"port {port}: {login} refused as <{other}> ({spoofed[0]}), accepted as <{own}>", ""

    def vrfy(self, address: str, port: int) -> Outcome:
        existing, unknown = f"postmaster@{self.domain}", f"no-such-{secrets.token_hex(4)}@{self.domain}"
        with self.connect(address, port) as s:
            answers = {a: s.cmd(f"VRFY {a}") for a in (existing, unknown)}
        codes = {a: code for a, (code, _) in answers.items()}
        fix = "set disable_vrfy_command = yes"
        if any(code in (250, 251) for code in codes.values()):
            return "fail", f"port {port}: VRFY reveals mailboxes: {answers}", fix
        if (codes[existing] < 400) != (codes[unknown] < 400):  # e.g. 252 vs 550: an enumeration oracle
            return ("fail", f"port {port}: VRFY tells existing from unknown addresses "
                    f"({codes[existing]} for {existing}, {codes[unknown]} for {unknown})", fix)
        code, text = answers[existing]
        return "pass", f"port {port}: VRFY gives nothing away ({code} {text})", ""


def probe_host(host_name: str, addresses: list[str], *, sending_domains: list[str], users: list[tuple[str, str]],
               foreign_domain: str = "relay-test.invalid", ca_bundle: str | None = None, timeout: float = 10.0,
               workers: int = 16) -> list[CheckResult]:
    """Probe a mail server from this machine on each of its addresses, concurrently.

    host_name: the server's name (EHLO/TLS name; the relay tricks route through it);
    sending_domains: its domains (first one: relay sender, postmaster recipient, VRFY target);
    users: (login, password) of submission users, ideally two (send-as-other uses the second's address);
    ca_bundle: verify certificates against it; None for a self-signed server (nothing is verified).
    """
    prober = _Prober(host_name, sending_domains, users, foreign_domain, ca_bundle, timeout)

    def run(kind: str, address: str, port: int, probe: Callable[[str, int], Outcome]) -> CheckResult:
        name = f"{kind}.{port}.ipv{ipaddress.ip_address(address).version}"
        try:
            status, detail, fix = probe(address, port)
        except (OSError, ProbeError) as exc:  # no connection, timeout, broken dialogue
            status, detail, fix = "inconclusive", f"could not probe {_where(address, port)}: {exc!r}", ""
        return CheckResult(GROUP, host_name, name, status, detail, fix)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, kind, address, port, probe)
                   for address in addresses for kind, port, probe in prober.jobs()]
        return [f.result() for f in futures]
