"""DNS records as mailops compares them: one canonical value per record.

Providers hand records back in many spellings (TXT raw or as quoted
character-strings, names with or without a trailing dot, TTL as float,
MX preference split off into ``priority``).  Everything is normalised here
so that a plan compares like with like and a second sync plans nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# A character-string in a TXT rdata holds at most 255 bytes (RFC 1035 3.3.14).
TXT_CHUNK = 255


@dataclass(frozen=True, order=True)
class Record:
    """One resource record.

    name:  FQDN, lower case, no trailing dot (``mta1.shop.test``)
    type:  upper case (``TXT``)
    value: canonical text -- TXT: the logical string, joined and unquoted;
           MX: ``10 mx.example.com.``; CNAME/PTR/NS: FQDN with trailing dot;
           A/AAAA: compressed address text.
    ttl:   seconds
    """

    name: str
    type: str
    value: str
    ttl: int = 300

    @classmethod
    def make(cls, name: str, type: str, value: str, ttl: int | float = 300) -> "Record":
        rtype = type.upper()
        return cls(normalize_name(name), rtype, normalize_value(rtype, value), int(ttl))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.type, self.value)

    def __str__(self) -> str:
        value = self.value if self.type != "TXT" else f'"{self.value}"'
        return f"{self.name} {self.ttl} {self.type} {value}"


def normalize_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _fqdn_dot(text: str) -> str:
    text = text.strip().lower()
    return text if text.endswith(".") else text + "."


def normalize_value(rtype: str, value: str) -> str:
    rtype = rtype.upper()
    if rtype == "TXT":
        return join_txt(value)
    if rtype == "A":
        return str(ipaddress.IPv4Address(value.strip()))
    if rtype == "AAAA":
        return str(ipaddress.IPv6Address(value.strip()))
    if rtype in ("CNAME", "PTR", "NS"):
        return _fqdn_dot(value)
    if rtype == "MX":
        pref, _, exchange = value.strip().partition(" ")
        return f"{int(float(pref))} {_fqdn_dot(exchange) if exchange.strip() != '.' else '.'}"
    return value.strip()


def split_txt(value: str) -> list[str]:
    """Split a logical TXT value into character-strings of at most 255 bytes.

    Splits on byte boundaries that are also character boundaries, so a UTF-8
    sequence is never cut in half."""
    data = value.encode("utf-8")
    if not data:
        return [""]
    chunks: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + TXT_CHUNK, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        chunks.append(data[start:end].decode("utf-8"))
        start = end
    return chunks


def quote_txt(value: str) -> str:
    """Presentation form: ``"part1" "part2"`` with quotes and backslashes escaped."""
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in split_txt(value))


def join_txt(text: str) -> str:
    """The logical string of a TXT value given raw or as quoted character-strings.

    ``"v=spf1 " "-all"`` -> ``v=spf1 -all``; ``v=spf1 -all`` stays as it is.
    Only a value that starts with a double quote is parsed as quoted strings."""
    text = text.strip()
    if not text.startswith('"'):
        return text
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        if text[i] != '"':
            # Unquoted trailing word: keep it as is rather than guess.
            parts.append(text[i:].strip())
            break
        i += 1
        buf = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                nxt = text[i + 1]
                if nxt.isdigit() and i + 3 < n and text[i + 1:i + 4].isdigit():
                    buf.append(chr(int(text[i + 1:i + 4])))
                    i += 4
                    continue
                buf.append(nxt)
                i += 2
                continue
            buf.append(text[i])
            i += 1
        i += 1  # closing quote
        parts.append("".join(buf))
    return "".join(parts)


def relative_name(name: str, zone: str) -> str:
    """``mta1.shop.test`` in zone ``shop.test`` -> ``mta1``; the apex -> ``@``."""
    name, zone = normalize_name(name), normalize_name(zone)
    if name == zone:
        return "@"
    if name.endswith("." + zone):
        return name[: -len(zone) - 1]
    raise ValueError(f"{name} is not in zone {zone}")


def in_zone(name: str, zone: str) -> bool:
    name, zone = normalize_name(name), normalize_name(zone)
    return name == zone or name.endswith("." + zone)
