"""`lab down` leaves nothing behind, and a failed `lab up` undoes itself.

These tests take the lab down, so they carry the ``takes_lab_down`` mark and
tests/conftest.py runs them after every other test of the session (in this
file's order: the failed-up test needs the lab down)."""

from __future__ import annotations

import subprocess

import pytest

from mailops.errors import MailopsError
from mailops.lab import core, machine
from mailops.lab.config import LabConfig

pytestmark = [pytest.mark.lab, pytest.mark.takes_lab_down]


def _host_view(cfg: LabConfig) -> dict:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    pidns = subprocess.run(["lsns", "-t", "pid", "-n", "-o", "NS"], capture_output=True, text=True).stdout.split()
    return {"links": [l for l in links.splitlines() if cfg.bridge in l or " vb-" in l], "pidns": len(pidns)}


def test_down_removes_everything(lab, lab_cfg):
    assert _host_view(lab_cfg)["links"], "lab should be up before this test"
    core.down(lab_cfg)
    assert core.leftovers(lab_cfg) == []
    view = _host_view(lab_cfg)
    assert view["links"] == []
    assert view["pidns"] == 1, "a machine's PID namespace is still alive"
    assert not lab_cfg.state_dir.exists()


def test_failed_up_cleans_up_what_it_started(lab_cfg, monkeypatch):
    from tests.conftest import require_lab_prerequisites

    require_lab_prerequisites()
    assert core.leftovers(lab_cfg) == []

    real_start = machine.start

    def boom(cfg, m, root, timeout=60.0):
        if m.role == "vps":
            raise MailopsError("injected failure")
        return real_start(cfg, m, root, timeout)

    monkeypatch.setattr(machine, "start", boom)
    with pytest.raises(MailopsError, match="lab up failed while starting machine vps1: injected failure"):
        core.up(lab_cfg, vps=1)
    assert core.leftovers(lab_cfg) == []


def test_refuses_a_range_that_conflicts_with_a_route(tmp_path):
    from tests.conftest import require_lab_prerequisites

    require_lab_prerequisites()
    host_net = subprocess.run(["ip", "-j", "-4", "route", "show", "scope", "link"], capture_output=True,
                              text=True).stdout
    import ipaddress, json
    nets = [r["dst"] for r in json.loads(host_net) if "/" in r.get("dst", "")]
    if not nets:
        pytest.skip("host has no link-scope IPv4 route to collide with")
    cfg = LabConfig(state_dir=tmp_path / "state", ipv4_network=str(ipaddress.ip_network(nets[0])), bridge="mo-clash0")
    with pytest.raises(MailopsError, match="conflicts"):
        core.up(cfg, vps=1)
    assert not (tmp_path / "state" / "machines").exists()
    assert subprocess.run(["ip", "link", "show", "mo-clash0"], capture_output=True).returncode != 0
