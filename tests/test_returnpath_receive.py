"""A message on the return path handled end to end (mailops.returnpath.receive): stored,
suppressed, once; deferred (exit 75) rather than lost when it cannot be stored."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from email.mime.text import MIMEText

import pytest

from mailops.errors import MailopsError

from mailops.returnpath import address
from mailops.returnpath.receive import EX_OK, EX_TEMPFAIL, EX_USAGE, main, read_keys, receive
from mailops.returnpath.store import EventStore
from mailops.returnpath.suppression import HARD_BOUNCE, SuppressionList
from tests.helpers import ROOT
from tests.test_returnpath_messages import KEY, RETURN_PATH, arf, dsn, report


def test_a_bounce_is_stored_and_suppresses_once():
    store, sl = EventStore(), SuppressionList(origin="mta1")
    raw = dsn()
    event, new, made = receive(raw, RETURN_PATH, "", store=store, suppressions=sl)
    assert (event.kind, new, [(e.target, e.cause) for e in made]) == ("bounce", True, [("bob@example.org", HARD_BOUNCE)])
    sl.remove("bob@example.org")                                    # an operator lifts it ...
    _event, new, made = receive(raw, RETURN_PATH, "", store=store, suppressions=sl)
    assert (new, made) == (False, [])                               # ... a redelivery does not bring it back
    assert sl.lookup("bob@example.org") is None


def test_command_stores_suppresses_and_uses_the_token(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("# newest first\n" + KEY.hex() + "\n")
    key_file.chmod(0o600)
    token = address.encode(KEY, "shop.test")
    tokens = address.TokenTable(str(tmp_path / "tokens.sqlite3"))
    tokens.issued(token, recipients=["carol@example.org"])
    tokens.close()
    broken = report("delivery-status", "failed\n", MIMEText("no machine-readable part"))
    args = ["--events", str(tmp_path / "events.sqlite3"), "--suppressions", str(tmp_path / "s.sqlite3"),
            "--key-file", str(key_file), "--tokens", str(tmp_path / "tokens.sqlite3"),
            "--recipient", token.address, "--sender", ""]
    assert main(args, stdin=io.BytesIO(broken)) == EX_OK
    assert main(args, stdin=io.BytesIO(arf())) == EX_OK
    sl = SuppressionList(str(tmp_path / "s.sqlite3"))
    assert sl.lookup("carol@example.org") is None                    # a bounce of unknown severity does not suppress
    assert sl.lookup("bob@example.org", "shop.test").cause == "complaint"
    store = EventStore(str(tmp_path / "events.sqlite3"))
    assert store.counts()["bounce"] == 1 and store.counts()["complaint"] == 1
    assert store.bounce_list()[0]["recipient"] == "carol@example.org"


def test_command_defers_when_it_cannot_store(tmp_path, capsys):
    args = ["--events", str(tmp_path / "missing-dir" / "events.sqlite3"), "--recipient", RETURN_PATH]
    assert main(args, stdin=io.BytesIO(dsn())) == EX_TEMPFAIL
    assert "deferred" in capsys.readouterr().err


def test_command_usage_error():
    assert main(["--recipient"], stdin=io.BytesIO(b"")) == EX_USAGE


def test_key_file_rules(tmp_path):
    path = tmp_path / "keys"
    path.write_text(KEY.hex() + "\n")
    path.chmod(0o644)
    with pytest.raises(MailopsError, match="readable by others .*chmod 600"):
        read_keys(str(path))
    path.chmod(0o600)
    assert read_keys(str(path)) == [KEY]
    path.write_text("zz\n")
    with pytest.raises(MailopsError, match="key 1 is not hex"):
        read_keys(str(path))
    path.write_text("00ff\n")
    with pytest.raises(MailopsError, match="at least 16"):
        read_keys(str(path))
    args = ["--events", str(tmp_path / "e.sqlite3"), "--key-file", str(path), "--recipient", RETURN_PATH]
    assert main(args, stdin=io.BytesIO(dsn())) == EX_TEMPFAIL                  # a bad key defers, never drops


def test_runs_as_a_module_under_the_system_python(tmp_path):
    # Debian's python3, as Postfix's pipe(8) would run it
    system_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    proc = subprocess.run([system_python, "-S", "-m", "mailops.returnpath.receive", "--events",
                           str(tmp_path / "e.sqlite3"), "--recipient", RETURN_PATH, "--sender", ""],
                          input=dsn(), capture_output=True, timeout=60, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == EX_OK, proc.stderr.decode()
    assert b"bounce" in proc.stderr and b"stored" in proc.stderr
