"""Fuzzing the checker: whatever the files hold, check_inventory returns one-line
problems and never raises."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailops.inventory import Problem, check_inventory
from mailops.inventory.model import GLOBAL_VARS, HOST_VARS
from tests.helpers import HOSTS, LAB_INVENTORY as LAB, SETTINGS as MAILOPS, copy_inventory

LAB_TEXT = {name: (LAB / name).read_text() for name in (HOSTS, MAILOPS)}
SHAPE = re.compile(r"^[^\n]+?(:\d+)?: [^\n]+: [^\n]+$")

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

# Keys the checker looks at, so random data reaches the interesting code paths.
KNOWN_KEYS = sorted({*GLOBAL_VARS, *HOST_VARS, "all", "hosts", "children", "vars", "mailhosts", "type",
                     "cloudflare", "rfc2136", "hcloud", "dns_provider", "dkim", "dmarc", "spf", "policy",
                     "rua", "login", "password", "password_hash", "api_token", "env", "file", "zones",
                     "shop.test", "mta1.shop.test", "warmup", "schedule", "day", "destinations"})
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=20),
                    st.sampled_from(KNOWN_KEYS), st.sampled_from(["198.51.100.11", "mailto:a@b.test", "1s"]))
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12), st.integers(0, 5))
data = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(keys, inner, max_size=5)), max_leaves=25)


def check_files(files: dict[str, bytes]) -> list[Problem]:
    root = Path(tempfile.mkdtemp(prefix="mo-fuzz-"))
    try:
        copy_inventory(root / "inv")
        for name, content in files.items():
            (root / "inv" / name).write_bytes(content)
        problems = check_inventory(root / "inv")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert isinstance(problems, list)
    for p in problems:
        assert isinstance(p, Problem)
        assert SHAPE.match(str(p)), str(p)
        assert p.file and p.field and p.message
    return problems


def dump(value) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode("utf-8")


@FUZZ
@given(hosts=data, mailops=data)
def test_random_yaml_documents(hosts, mailops):
    check_files({HOSTS: dump(hosts), MAILOPS: dump(mailops)})


@FUZZ
@given(mailops=st.dictionaries(st.sampled_from(sorted(GLOBAL_VARS)), data, max_size=6), hosts=data)
def test_random_values_for_known_variables(mailops, hosts):
    inventory = {"all": {"children": {"mailhosts": {"hosts": {"mta1.shop.test": hosts}}}}}
    check_files({HOSTS: dump(inventory), MAILOPS: dump(mailops)})


@FUZZ
@given(hosts=st.binary(max_size=200), mailops=st.binary(max_size=200))
def test_random_bytes(hosts, mailops):
    check_files({HOSTS: hosts, MAILOPS: mailops})


@st.composite
def mutated(draw, name):
    """The real lab file with a few random edits (cut, insert, duplicate, replace)."""
    text = LAB_TEXT[name]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        op = draw(st.sampled_from(["cut", "insert", "dup", "replace"]))
        piece = draw(st.sampled_from([":", " ", "\n", "- ", "{", "[", "!vault ", "&a ", "*a", "<<: ", "\t",
                                      "mailops_", "0", "'", '"', "#", "~", "1024", "rejectt"])
                     | st.text(max_size=5))
        if op == "cut":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "dup":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + piece + text[j:]
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(hosts=mutated(HOSTS), mailops=mutated(MAILOPS))
def test_mutated_lab_files(hosts, mailops):
    check_files({HOSTS: hosts, MAILOPS: mailops})


def test_alias_bomb_and_recursion():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
    problems = check_files({MAILOPS: bomb.encode()})
    assert any("alias" in p.message for p in problems)
    problems = check_files({MAILOPS: b"mailops_domains: &x {a.test: *x}\n"})
    assert any("refers to the value that contains it" in p.message for p in problems)
    deep = "mailops_rate_limits: " + "[" * 400 + "]" * 400 + "\n"
    assert check_files({MAILOPS: deep.encode()})
