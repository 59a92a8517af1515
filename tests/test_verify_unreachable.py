"""`mailops verify` against mail hosts it cannot reach over SSH: one inconclusive row per host
with the reason, in bounded time, instead of every server check failing with ssh's exit 255.

No lab and no root: one host's SSH port on 127.0.0.1 refuses (nothing listens), the other's
accepts the connection and never says a word (a listener this test starts and never serves)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.helpers import copy_inventory, mailops


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


@pytest.fixture
def silent_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # the kernel completes the handshake; nobody ever accepts or writes
        yield s.getsockname()[1]


def unreachable_inventory(tmp_path, refused: int, silent: int):
    def hosts(data: dict) -> None:
        group = data["all"]["children"]["mailhosts"]["hosts"]
        mta1 = group["mta1.shop.test"]
        group["mta2.shop.test"] = dict(mta1, ansible_host="127.0.0.1", ansible_port=silent,
                                       mailops_ipv4="198.51.100.12", mailops_ipv6="2001:db8:51::12")
        mta1.update(ansible_host="127.0.0.1", ansible_port=refused)
    return copy_inventory(tmp_path / "inv", hosts=hosts)


def test_unreachable_hosts_are_one_inconclusive_row_each_in_bounded_time(tmp_path, closed_port, silent_port):
    inventory = unreachable_inventory(tmp_path, closed_port, silent_port)
    t = time.monotonic()
    proc = mailops("verify", "--json", "--only", "server", "-i", str(inventory), check=False, timeout=90)
    seconds = time.monotonic() - t
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    rows = {r["subject"]: r for r in report["results"]}
    assert len(report["results"]) == 2 and set(rows) == {"mta1.shop.test", "mta2.shop.test"}, report["results"]
    assert all(r["status"] == "inconclusive" and r["group"] == "server" for r in rows.values()), rows
    assert rows["mta1.shop.test"]["detail"] == (
        f"cannot reach mta1.shop.test over SSH (127.0.0.1:{closed_port}): connection refused")
    assert rows["mta2.shop.test"]["detail"].startswith(
        f"cannot reach mta2.shop.test over SSH (127.0.0.1:{silent_port}): timed out after "), rows
    assert "SSH banner" in rows["mta2.shop.test"]["detail"]
    assert proc.returncode == 0  # inconclusive is not a failure
    assert seconds < 30, f"verify took {seconds:.0f}s"


def test_a_port_that_hangs_up_without_speaking_ssh_is_named(tmp_path, closed_port):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def answer() -> None:
            for _ in range(2):
                conn, _addr = listener.accept()
                conn.sendall(b"220 mail.example ESMTP\r\n")  # a mail server on the SSH port
                conn.close()
        threading.Thread(target=answer, daemon=True).start()
        inventory = unreachable_inventory(tmp_path, closed_port, port)
        proc = mailops("verify", "--json", "--only", "server", "--host", "mta2.shop.test", "-i", str(inventory),
                       check=False, timeout=90)
    rows = json.loads(proc.stdout)["results"]
    assert len(rows) == 1 and rows[0]["status"] == "inconclusive", rows
    assert rows[0]["detail"] == (f"cannot reach mta2.shop.test over SSH (127.0.0.1:{port}): it answered "
                                 "'220 mail.example ESMTP', not an SSH banner"), rows


def test_a_host_that_speaks_ssh_but_fails_the_login_is_named(tmp_path, closed_port):
    """Past the banner, ssh itself must log in; here the peer hangs up after its version line."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def answer() -> None:
            for _ in range(2):  # the probe, then ssh
                conn, _addr = listener.accept()
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
                time.sleep(0.2)
                conn.close()
        threading.Thread(target=answer, daemon=True).start()
        inventory = unreachable_inventory(tmp_path, closed_port, port)
        proc = mailops("verify", "--json", "--only", "server", "--host", "mta2.shop.test", "-i", str(inventory),
                       check=False, timeout=90)
    rows = json.loads(proc.stdout)["results"]
    assert len(rows) == 1 and rows[0]["status"] == "inconclusive", rows
    assert rows[0]["detail"].startswith("cannot log in to mta2.shop.test over SSH: "), rows
    assert "Connection closed" in rows[0]["detail"] or "connection" in rows[0]["detail"].lower(), rows
