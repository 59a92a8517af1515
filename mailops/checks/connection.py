"""One persistent SSH connection per host for the testinfra checks.

testinfra's ssh and ansible backends start ``ssh`` once per command: with about 125
commands per host that is most of a check run (0.2 s each through a ControlMaster
socket on a busy 2-core machine, 33 s for one host).  Here one ``ssh HOST python3``
per host runs a small loop on the host that executes each command the checks send
over the open channel, the way the user's shell would (``$SHELL -c``), and sends back
exit status, stdout and stderr.  The checks themselves are unchanged: only the
backend's ``run`` is replaced.  The state is read once per run: the same command
asked twice (``ss -l`` by every socket check, ``sshd -T`` by each parametrised
setting) is answered from the first reply.

Off with MAILOPS_CHECKS_CONNECTION=ssh (testinfra's own ssh per command).  A host
where the loop cannot start (no python3, login refused) falls back to that too.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import threading

ENV = "MAILOPS_CHECKS_CONNECTION"
COMMAND_TIMEOUT = 120  # seconds one command may take on the host before it counts as failed

# Runs on the host (python3 is there: Ansible needs it).  One JSON line per command in,
# one out; output is base64 so any bytes survive.
_AGENT = r"""
import base64, json, os, subprocess, sys
shell = os.environ.get("SHELL") or "/bin/sh"
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    req = json.loads(line)
    try:
        p = subprocess.run([shell, "-c", req["c"]], stdin=subprocess.DEVNULL, capture_output=True, timeout=req["t"])
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = 124, b"", ("timed out after %d s" % req["t"]).encode()
    sys.stdout.write(json.dumps({"rc": rc, "o": base64.b64encode(out).decode(),
                                 "e": base64.b64encode(err).decode()}) + "\n")
    sys.stdout.flush()
"""
AGENT_COMMAND = "python3 -u -c 'import base64;exec(base64.b64decode(\"%s\"))'" % \
    base64.b64encode(_AGENT.encode()).decode()


class ConnectionLost(Exception):
    pass


class Agent:
    """The command loop on one host, over one ``ssh`` process started by ``shell_command``."""

    def __init__(self, shell_command: str, *, timeout: float = COMMAND_TIMEOUT):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen("exec " + shell_command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        if self.proc.stdout.readline() != b"ready\n":
            self.proc.wait()
            why = self.why()
            self.close()
            raise ConnectionLost(why)

    def why(self) -> str:
        self._stderr.seek(0)
        lines = [l.strip() for l in self._stderr.read().decode(errors="replace").splitlines() if l.strip()]
        return (lines[-1] if lines else "the connection closed")[:200]

    def run(self, command: str) -> tuple[int, bytes, bytes]:
        with self._lock:
            try:
                self.proc.stdin.write(json.dumps({"c": command, "t": self.timeout}).encode() + b"\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            except (BrokenPipeError, OSError) as exc:
                raise ConnectionLost(str(exc)) from None
        if not line:
            raise ConnectionLost(self.why())
        reply = json.loads(line)
        return reply["rc"], base64.b64decode(reply["o"]), base64.b64decode(reply["e"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def _ssh_backend(host):
    """The ssh backend a testinfra host's commands go through (the ansible backend maps an
    ssh-connected inventory host to one), or None when they do not go over ssh."""
    backend = host.backend
    if backend.NAME == "ansible":
        if getattr(backend, "force_ansible", False):
            return None
        inner = backend.ansible_runner.get_host(backend.host, ssh_config=backend.ssh_config,
                                                ssh_identity_file=backend.ssh_identity_file)
        backend = inner.backend if inner is not None else None
    return backend if backend is not None and backend.NAME == "ssh" else None


_AGENTS: list[Agent] = []


def attach(host) -> bool:
    """Route ``host``'s commands through one persistent connection (once per host).
    False when the host is not reached over ssh, the connection is switched off, or the
    loop did not start (testinfra's per-command ssh then stays in place)."""
    backend = host.backend
    if getattr(backend, "_mailops_agent", None) is not None or os.environ.get(ENV, "persistent") == "ssh":
        return getattr(backend, "_mailops_agent", None) not in (None, False)
    ssh = _ssh_backend(host)
    if ssh is None or ssh.sudo:
        backend._mailops_agent = False
        return False
    argv, args = ssh._build_ssh_command(AGENT_COMMAND)
    # this connection is the persistent one: no ControlMaster left behind for 60 s
    argv = [a for a in argv if not a.startswith("-o ControlMaster=auto")]
    argv.insert(len(argv) - 1, "-o ControlMaster=no")  # before the final "HOST COMMAND"
    try:
        agent = Agent(ssh.quote(" ".join(argv), *args))
    except (ConnectionLost, OSError):
        backend._mailops_agent = False
        return False
    _AGENTS.append(agent)
    backend._mailops_agent = agent
    fallback = backend.run
    answers: dict[str, tuple[int, bytes, bytes]] = {}

    def run(command: str, *cmd_args: str, **kwargs):
        cmd = backend.get_command(command, *cmd_args)
        if cmd not in answers:
            if backend._mailops_agent is False:
                return fallback(command, *cmd_args, **kwargs)
            try:
                answers[cmd] = agent.run(cmd)
            except ConnectionLost:
                backend._mailops_agent = False  # the rest goes through testinfra's ssh
                return fallback(command, *cmd_args, **kwargs)
        rc, out, err = answers[cmd]
        return backend.result(rc, backend.encode(cmd), out, err)

    backend.run = run
    return True


def close_all() -> None:
    while _AGENTS:
        _AGENTS.pop().close()
