"""mailops-returnpath-map: the lookups Postfix makes on a mail host with a return path
(role returnpath; Python 3 standard library only).

One TCP service on 127.0.0.1 (default port 10033) speaks two Postfix protocols, told apart
by the first byte a client sends:

* socketmap (https://www.postfix.org/socketmap_table.5.html), netstrings
  ``<len>:<name> <key>,`` answered ``OK <value>``, ``NOTFOUND ``, ``TEMP <why>`` or
  ``PERM <why>``; three maps:

  - ``sender`` (sender_canonical_maps, envelope sender only): an envelope sender in one of
    this host's sending domains becomes a fresh return-path token address in the domain's
    return-path domain (:func:`mailops.returnpath.address.encode`, the first key), recorded
    in the token table; anything else (other domains, partial keys such as ``@domain``, an
    address that already is a return path) is NOTFOUND.  The null sender is never looked up.
  - ``rcpt`` (relay_recipient_maps): what port 25 accepts in the relay domains: a return-path
    token that this fleet issued for the domain and that is not too old, the report addresses,
    postmaster@ and abuse@ of the sending domains, and the replication address of this
    host; NOTFOUND for everything else (Postfix then rejects it: 550 5.1.1).
  - ``suppressed`` (an access map): ``550 5.7.1 ... suppressed since ...`` for a recipient
    that a global suppression blocks, NOTFOUND otherwise.

* the policy delegation protocol (https://www.postfix.org/SMTPD_POLICY_README.html),
  ``name=value`` lines: at RCPT on the submission services the answer is the
  :func:`mailops.returnpath.suppression.reply` text for a recipient suppressed globally or
  for the sender's domain (a complaint is scoped to the domain complained about, which a
  recipient-only access map cannot see), ``DUNNO`` otherwise.

Any internal error is a temporary answer (socketmap ``TEMP``, policy ``451 4.3.5``); when
the service is down Postfix itself temp-fails (main.cf sets the policy default_action to
a 4xx): mail is deferred, never accepted unchecked.

Usage (PYTHONPATH=/usr/local/lib/mailops-returnpath):
  python3 -m mailops.returnpath.socketmap --config FILE --key-file FILE --tokens FILE --suppressions FILE
  python3 -m mailops.returnpath.socketmap --check-config FILE [--key-file FILE]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import socketserver
import sqlite3
import sys
import threading

from mailops.errors import MailopsError
from mailops.returnpath import address
from mailops.returnpath.settings import Settings, load_settings
from mailops.returnpath.suppression import SuppressionList, reply

DEFAULT_CONFIG = "/etc/mailops/returnpath.json"
MAX_NETSTRING = 100_000          # Postfix's own socketmap limit for a reply
MAX_LENGTH_DIGITS = 6
MAX_POLICY_LINE = 4096
MAX_POLICY_LINES = 200
POLICY_DEFER = "451 4.3.5 Suppression list cannot be checked right now; try again later"


class ProtocolError(ValueError):
    """A request that is not a netstring (the connection is closed)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the maps ----------------------------------------------------------------------------

class Maps:
    """The answers, one instance per client connection (sqlite connections are per thread)."""

    def __init__(self, settings: Settings, keys, tokens_path: str, suppressions_path: str) -> None:
        self.settings = settings
        self.keys = keys
        self.tokens_path = tokens_path
        self.suppressions_path = suppressions_path
        self._tokens = None
        self._suppressions = None

    def close(self) -> None:
        for db in (self._tokens, self._suppressions):
            if db is not None:
                db.close()

    @property
    def tokens(self) -> address.TokenTable:
        if self._tokens is None:
            self._tokens = address.TokenTable(self.tokens_path)
        return self._tokens

    @property
    def suppressions(self) -> SuppressionList:
        if self._suppressions is None:
            self._suppressions = self.settings.suppression_list(self.suppressions_path)
        return self._suppressions

    def socketmap(self, request: str) -> str:
        """One socketmap request (``name key``) -> the reply text."""
        name, sep, key = request.partition(" ")
        if not sep:
            return "PERM request must be '<map> <key>'"
        handler = {"sender": self.sender, "rcpt": self.rcpt, "suppressed": self.suppressed}.get(name)
        if handler is None:
            return "PERM unknown map; the maps are sender, rcpt and suppressed"
        try:
            value = handler(key)
        except (sqlite3.Error, OSError, MailopsError) as exc:
            log(f"{name}: temporary failure: {type(exc).__name__}: {exc}")
            return "TEMP " + _printable(f"{type(exc).__name__}: {exc}")[:200]
        return "NOTFOUND " if value is None else "OK " + value

    @staticmethod
    def _split(key: str):
        key = key.strip().lower()
        local, at, domain = key.rpartition("@")
        if not at or not local or not domain or len(key) > 320:
            return None
        return local, domain

    def sender(self, key: str) -> str | None:
        parts = self._split(key)
        if parts is None:
            return None
        local, domain = parts
        rp_domain = self.settings.sending_domains.get(domain)
        if rp_domain is None or address.is_return_path(key):
            return None
        token = address.encode(self.keys, domain, return_domain=rp_domain)
        self.tokens.issued(token, sender=f"{local}@{domain}")
        return token.address

    def rcpt(self, key: str) -> str | None:
        parts = self._split(key)
        if parts is None:
            return None
        local, domain = parts
        text = f"{local}@{domain}"
        if text in self.settings.accept:
            return "accept"
        senders = self.settings.return_domains.get(domain)
        if senders is None:
            return None
        if local == self.settings.sync_local:
            return "accept"
        for sending_domain in senders:
            if address.validate(self.keys, text, sending_domain=sending_domain,
                                max_age_days=self.settings.max_age_days):
                return "accept"
        return None

    def suppressed(self, key: str, sending_domain: str | None = None) -> str | None:
        if self._split(key) is None:
            return None
        entry = self.suppressions.lookup(key.strip(), sending_domain)
        return None if entry is None else reply(entry, key.strip().lower())

    def policy(self, attrs: dict) -> str:
        """One policy request -> the action."""
        if attrs.get("request") != "smtpd_access_policy" or attrs.get("protocol_state", "").upper() != "RCPT":
            return "DUNNO"
        recipient = attrs.get("recipient", "")
        sender = attrs.get("sender", "")
        parts = self._split(sender)
        try:
            answer = self.suppressed(recipient, parts[1] if parts else None)
        except (sqlite3.Error, OSError, MailopsError) as exc:
            log(f"policy: temporary failure: {type(exc).__name__}: {exc}")
            return POLICY_DEFER
        if answer is None:
            return "DUNNO"
        log(f"refused {recipient[:320]!r} from {sender[:320]!r}: {answer}")
        # smtpd itself writes "<rcpt>: Recipient address rejected: " before the text
        return answer.replace(f"<{recipient.strip().lower()}>: ", "", 1)


def _printable(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


# --- the wire ----------------------------------------------------------------------------

def read_netstring(stream) -> bytes | None:
    """One netstring from a binary stream; None at a clean end of stream, ProtocolError for
    anything else than ``<digits>:<data>,`` within the size limit."""
    digits = b""
    while True:
        char = stream.read(1)
        if not char:
            if digits:
                raise ProtocolError("the stream ended inside a netstring length")
            return None
        if char == b":":
            break
        if not char.isdigit() or len(digits) >= MAX_LENGTH_DIGITS:
            raise ProtocolError("a netstring must start with its length in digits")
        digits += char
    if not digits:
        raise ProtocolError("a netstring must start with its length in digits")
    length = int(digits)
    if length > MAX_NETSTRING:
        raise ProtocolError(f"a netstring of {length} bytes is over the {MAX_NETSTRING}-byte limit")
    data = stream.read(length)
    if len(data) != length or stream.read(1) != b",":
        raise ProtocolError("a netstring must end with ',' after its length of data")
    return data


def netstring(data: bytes) -> bytes:
    return str(len(data)).encode("ascii") + b":" + data + b","


class Handler(socketserver.StreamRequestHandler):
    timeout = 3600

    def handle(self) -> None:
        maps = Maps(self.server.settings, self.server.keys, self.server.tokens_path, self.server.suppressions_path)
        try:
            first = self.rfile.peek(1)[:1]
            if first.isdigit():
                self._socketmap(maps)
            elif first:
                self._policy(maps)
        except (OSError, socket.timeout):
            pass
        finally:
            maps.close()

    def _socketmap(self, maps: Maps) -> None:
        while True:
            try:
                request = read_netstring(self.rfile)
            except ProtocolError as exc:
                log(f"socketmap: {exc}; closing the connection")
                return
            if request is None:
                return
            answer = maps.socketmap(request.decode("utf-8", "replace"))
            self.wfile.write(netstring(answer.encode("utf-8", "replace")[:MAX_NETSTRING]))
            self.wfile.flush()

    def _policy(self, maps: Maps) -> None:
        attrs: dict[str, str] = {}
        lines = 0
        while True:
            raw = self.rfile.readline(MAX_POLICY_LINE + 1)
            if not raw:
                return
            if len(raw) > MAX_POLICY_LINE or lines > MAX_POLICY_LINES:
                log("policy: request too long; closing the connection")
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                name, sep, value = line.partition("=")
                if sep:
                    attrs[name.strip()] = value
                lines += 1
                continue
            action = maps.policy(attrs)
            self.wfile.write(f"action={_printable(action)}\n\n".encode("ascii"))
            self.wfile.flush()
            attrs, lines = {}, 0


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, settings: Settings, keys, tokens_path: str, suppressions_path: str,
                 address_=None) -> None:
        self.settings, self.keys = settings, keys
        self.tokens_path, self.suppressions_path = tokens_path, suppressions_path
        bind = address_ or (settings.listen, settings.port)
        self.address_family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        super().__init__(bind, Handler)


def notify_systemd(message: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(message.encode())


HOUSEKEEPING_SECONDS = 3600


def housekeeping(settings: Settings, tokens_path: str, suppressions_path: str) -> tuple[int, int]:
    """Forget tokens past their age limit (a bounce to them is refused anyway) and tombstones
    older than any peer can lag; (tokens, tombstones) removed."""
    tokens = address.TokenTable(tokens_path)
    suppressions = settings.suppression_list(suppressions_path)
    try:
        return tokens.expire(settings.max_age_days + 1), suppressions.purge_tombstones()
    finally:
        tokens.close()
        suppressions.close()


def _housekeeper(settings: Settings, tokens_path: str, suppressions_path: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            removed = housekeeping(settings, tokens_path, suppressions_path)
            if any(removed):
                log(f"housekeeping: {removed[0]} expired token(s), {removed[1]} old tombstone(s) removed")
        except (sqlite3.Error, OSError, MailopsError) as exc:
            log(f"housekeeping failed (tried again in an hour): {exc}")
        stop.wait(HOUSEKEEPING_SECONDS)


def serve(settings: Settings, keys, tokens_path: str, suppressions_path: str) -> int:
    # create the databases (and their schema) before the first client, as the service's user
    address.TokenTable(tokens_path).close()
    settings.suppression_list(suppressions_path).close()
    server = Server(settings, keys, tokens_path, suppressions_path)
    stopping = threading.Event()
    threading.Thread(target=_housekeeper, args=(settings, tokens_path, suppressions_path, stopping),
                     daemon=True).start()

    def stop(_signum, _frame) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on {settings.listen}:{settings.port}: {len(settings.sending_domains)} sending domain(s), "
        f"{len(settings.return_domains)} return-path domain(s), {len(settings.accept)} report/operator "
        f"address(es), {len(settings.peers)} peer(s)")
    notify_systemd("READY=1")
    try:
        server.serve_forever()
    finally:
        stopping.set()
        server.server_close()
    return 0


def main(argv=None) -> int:
    from mailops.returnpath.receive import read_keys   # receive imports this module's settings

    parser = argparse.ArgumentParser(prog="mailops-returnpath-map", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"JSON settings (default {DEFAULT_CONFIG})")
    parser.add_argument("--check-config", metavar="FILE", help="validate FILE and exit (0 when valid)")
    parser.add_argument("--key-file", help="return-path keys, hex, one per line, newest first (mode 0600)")
    parser.add_argument("--tokens", help="token table (sqlite)")
    parser.add_argument("--suppressions", help="suppression list (sqlite)")
    args = parser.parse_args(argv)
    try:
        if args.check_config:
            settings = load_settings(args.check_config)
            if args.key_file:
                read_keys(args.key_file)
            print(f"{args.check_config}: valid ({len(settings.sending_domains)} sending domain(s), "
                  f"{len(settings.return_domains)} return-path domain(s), {len(settings.peers)} peer(s))")
            return 0
        if not (args.key_file and args.tokens and args.suppressions):
            raise MailopsError("--key-file, --tokens and --suppressions are required to serve")
        settings = load_settings(args.config)
        keys = read_keys(args.key_file)
        return serve(settings, keys, args.tokens, args.suppressions)
    except (MailopsError, sqlite3.Error, OSError) as exc:
        log(f"mailops-returnpath-map: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
