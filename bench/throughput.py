"""Benchmark: mail throughput of a provisioned server, DKIM-signed, unsigned and
stock Debian Postfix, side by side in one run.

    .venv/bin/python bench/throughput.py               # set up vps5 + vps6, measure (~7-10 min)
    .venv/bin/python bench/throughput.py --reuse       # skip the set-up (machines already prepared)
    .venv/bin/python bench/throughput.py --quick       # fewer messages, one size, no submission client

Run as root with the lab up.  Only two lab machines are used: --signed-vps
(default vps5) and --stock-vps (default vps6); both are reset to fresh
machines unless --reuse.

Machines
  signed-vps  converged as mta<N>.shop.test by the mailops roles sasl, opendkim
              and postfix, the way tests/test_roles_mail.py does it: temporary
              inventory, a key store made here (one active RSA-2048 key for
              shop.test), a stand-in self-signed certificate, one submission
              user (bench@shop.test).  The roles come from a SNAPSHOT taken at
              start into a temporary directory (ANSIBLE_ROLES_PATH points at
              it): by default the committed roles (`git archive HEAD roles`),
              so other people's uncommitted edits are not measured; --roles
              REV takes another revision, --roles worktree copies the working
              tree instead.  No lab DNS is touched.
  stock-vps   fresh Debian 12, `apt-get install postfix` with debconf "Internet
              Site": Debian's defaults, no milter.

Load and delivery (identical on both machines)
  * Mail for the bench domain sink.test is routed by transport_maps to
    smtp-sink on 127.0.0.1:2525 inside the same machine (this and the bench
    listeners below are the only changes made to either server).
  * smtp-source (from the postfix package) runs inside the machine:
    --sessions parallel sessions, one message per connection (smtp-source's
    default), --messages messages of 2 KB body (half as many of 20 KB),
    From bench@shop.test To rcpt@sink.test.  It speaks neither STARTTLS nor
    AUTH, so on the mailops server it talks to two bench-only loopback
    listeners whose -o options are copied from the submission service (read
    with `postconf -P submission/inet`: same cleanup service with the header
    privacy checks, same milter, milter_macro_daemon_name=ORIGINATING) except
    TLS/AUTH off and the client restrictions turned into permit_mynetworks:
        127.0.0.1:10025  signed    smtpd_milters as on submission (OpenDKIM)
        127.0.0.1:10026  unsigned  smtpd_milters empty
    Everything else - the process, main.cf, master.cf, OpenDKIM running - is
    the same server.  On the stock server smtp-source talks to 127.0.0.1:25
    (the stock smtpd, permit_mynetworks relays to sink.test).
  * submission (unless --no-submission): a small Python client inside the
    mailops machine does what an application does on port 587: STARTTLS, AUTH
    PLAIN, then messages over the same connection; --sessions connections in
    parallel (4 processes x threads).  Signed on 587 itself; unsigned on a
    clone of the submission service (<vps ip>:10587, identical -o options,
    smtpd_milters empty).  Stock Debian has no submission service, so this mode
    gives the signing cost only.
  * Before measuring, one message through each listener is captured by a
    second smtp-sink (-d) to prove the variants are what they claim: a
    DKIM-Signature d=shop.test on signed, none on unsigned or stock.

Figures
  accepted/s   messages / wall time of the load generator (it waits for the 250
               after DATA, i.e. after cleanup and the milter are done).
  delivered/s  messages / time from start until the queue is empty again, with
               the sink's counter checked to have grown by exactly --messages.
  Each (size, variant) is warmed up once (a fifth of the messages), then run
  --repeat times; variants rotate within every repetition (a-b-c, b-c-a, ...)
  so drift in the shared machine's load hits all of them alike.  The table
  shows medians; 1 - signed/unsigned is the DKIM signing cost.
  server CPU   CPU ms per message of the server's processes in the machine
               (everything but the load generator, the sampler and smtp-sink,
               which stands in for the receiving servers).
  capacity     cores x 1000 / server CPU: the rate the server would reach with
               the machine to itself.  The lab VPSes share the host's cores with
               whatever else runs there (other people's tests), so the measured
               rates move with that load; CPU per message hardly does, which
               makes capacity the steadier figure for the ratios.
  others       cores busy outside the benchmarked machine during the run.

Where the time goes
  During every run a sampler inside the machine reads /proc/<pid>/stat every
  0.1 s (pid + start time as key) and sums utime+stime per command name;
  processes that exit between two samples are recovered from the master
  process's cutime (shown as "postfix, exited").  The load generator's CPU is
  measured exactly with wait4().  /proc/stat (the host's, nspawn does not
  virtualise it) gives the whole machine's busy CPU, so CPU used outside the
  benchmarked machine (other lab users) is reported as "others".  The section
  prints CPU milliseconds per message per component for signed and unsigned,
  and the difference: that is what signing costs, and where.  Inside
  OpenDKIM, the RSA-2048 private-key operation (`openssl speed rsa2048`) and
  the PEM key parse (PEM_read_bio_PrivateKey through ctypes, as OpenDKIM does
  for every message) are measured on the machine; the rest of OpenDKIM's CPU
  is milter protocol, threads, logging and its per-message resolver context.
  The lower bound printed is what a signer that did nothing but the RSA
  signature would cost.  Unless --no-profile, gdb (installed in the signed
  machine) samples OpenDKIM's thread stacks during one extra, unmeasured
  signed run, and the computing stacks are grouped (RSA signature, RSA
  blinding setup, key parse, resolver context, thread creation, ...).  The
  variant "milter, no key" (2 KB only) sends through the signed listener From
  a domain without a key: what the milter costs when nothing is signed.
  Process limits: smtpd/cleanup/smtp counts are Postfix's defaults on both
  servers; the log is searched for "process limit" and milter warnings after
  every run, and "machine busy" shows whether the CPU was the limit.

Options: --messages, --submission-messages, --sessions, --sizes, --repeat,
--quick; --opendkim NAME=VALUE rewrites opendkim.conf on the signed machine
before measuring (for experiments; the role's file comes back on the next
converge).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from mailops.errors import MailopsError
from mailops.lab import core
from mailops.lab.config import LabConfig

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SELECTOR = "mo-bench-a"
SENDER = "bench@shop.test"
NOKEY_SENDER = "bench@nokey.test"
RCPT = "rcpt@sink.test"
SINK = "127.0.0.1:2525"
CAPTURE = "127.0.0.1:2526"
REMOTE_DRIVER = "/root/mailops-throughput.py"

# ---------------------------------------------------------------------------
# Runs inside a lab machine: prepares it (bench transport, sink, listeners) and
# measures one run with the CPU sampler.  Plain python3, standard library only.
DRIVER = r'''
import json, os, re, smtplib, ssl, subprocess, sys, threading, time

HZ = os.sysconf("SC_CLK_TCK")
SPOOL = "/var/spool/postfix"
QDIRS = ("maildrop", "incoming", "active", "deferred", "hold")
SINK_OUT = "/run/mailops-bench-sink.out"


def sh(cmd):
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{cmd}: exit {p.returncode}: {p.stdout} {p.stderr}")
    return p.stdout


def queue_count():
    n = 0
    for d in QDIRS:
        for _r, _d, files in os.walk(os.path.join(SPOOL, d)):
            n += len(files)
    return n


def sink_count():
    try:
        with open(SINK_OUT, "rb") as f:
            f.seek(max(0, os.path.getsize(SINK_OUT) - 300))
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else 0
    except OSError:
        return 0


def host_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


def read_procs():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        fl = data[data.rindex(")") + 2:].split()
        out[(int(pid), fl[19])] = (comm, int(fl[11]) + int(fl[12]), int(fl[13]) + int(fl[14]), int(fl[1]))
    return out


class Sampler(threading.Thread):
    def __init__(self, exclude):
        super().__init__(daemon=True)
        self.exclude = exclude
        self.stop = threading.Event()
        self.base = read_procs()
        self.last = dict(self.base)
        self.seen_new = set()

    def run(self):
        while not self.stop.wait(0.1):
            self.sample()

    def sample(self):
        now = read_procs()
        for k, v in now.items():
            if k not in self.base:
                self.seen_new.add(k)
            self.last[k] = v
        self.alive = set(now)

    def result(self):
        self.sample()
        by = {}
        master = [k for k, v in self.base.items() if v[0] == "master"]
        exited_master_children = 0
        for k, (comm, ticks, _c, ppid) in self.last.items():
            if k[0] in self.exclude or ppid in self.exclude:
                continue
            d = ticks - (self.base[k][1] if k in self.base else 0)
            if d:
                by[comm] = by.get(comm, 0) + d
            if master and ppid == master[0][0] and k not in self.alive:
                # the master's cutime grows by the child's whole CPU time when it is reaped
                exited_master_children += ticks
        if master:
            m = master[0]
            reaped = self.last[m][2] - self.base[m][2]
            missing = reaped - exited_master_children
            if missing > 0:
                by["postfix, exited"] = by.get("postfix, exited", 0) + missing
        return {c: t / HZ for c, t in by.items()}

    def spawned(self):
        counts = {}
        for k in self.seen_new:
            if k[0] not in self.exclude and self.last[k][3] not in self.exclude:
                counts[self.last[k][0]] = counts.get(self.last[k][0], 0) + 1
        return counts


def last_pid():
    with open("/proc/loadavg") as f:
        return int(f.read().split()[-1])


CLIENT = r"""
import smtplib, ssl, sys, threading, time, uuid
host, port, user, pw, sender, rcpt, size, threads, per = sys.argv[1:10]
port, size, threads, per = int(port), int(size), int(threads), int(per)
body = ("x" * 76 + "\r\n") * max(1, size // 78)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
errors = []
def session(n):
    try:
        s = smtplib.SMTP(host, port, timeout=120)
        s.starttls(context=ctx); s.login(user, pw)
        for i in range(n):
            date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
            msg = ("From: %s\r\nTo: %s\r\nSubject: bench %d\r\nDate: %s\r\nMessage-ID: <%s@shop.test>\r\n\r\n%s"
                   % (sender, rcpt, i, date, uuid.uuid4().hex, body))
            s.sendmail(sender, [rcpt], msg)
        s.quit()
    except Exception as exc:
        errors.append(repr(exc))
counts = [per // threads + (1 if i < per % threads else 0) for i in range(threads)]
ts = [threading.Thread(target=session, args=(c,)) for c in counts if c]
[t.start() for t in ts]; [t.join() for t in ts]
if errors:
    print(errors[0], file=sys.stderr); sys.exit(1)
"""


def run(spec):
    n = spec["messages"]
    deadline = time.monotonic() + 60
    while queue_count() and time.monotonic() < deadline:
        time.sleep(0.2)
    sink0 = sink_count()
    hb0, ht0 = host_cpu()
    children = []
    pid0 = last_pid()
    since = int(time.time())
    sampler = Sampler(exclude={os.getpid()})
    sampler.start()
    self0 = os.times()
    t0 = time.monotonic()
    if spec["mode"] == "source":
        children.append(subprocess.Popen(
            ["smtp-source", "-s", str(spec["sessions"]), "-m", str(n), "-l", str(spec["size"]),
             "-f", spec["sender"], "-t", spec["rcpt"], "-S", "bench", "-M", "bench.shop.test", spec["target"]],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    else:
        procs = min(4, spec["sessions"])
        for p in range(procs):
            threads = spec["sessions"] // procs + (1 if p < spec["sessions"] % procs else 0)
            per = n // procs + (1 if p < n % procs else 0)
            host, port = spec["target"].rsplit(":", 1)
            children.append(subprocess.Popen(
                [sys.executable, "-c", CLIENT, host, port, spec["user"], spec["password"], spec["sender"],
                 spec["rcpt"], str(spec["size"]), str(threads), str(per)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    sampler.exclude |= {c.pid for c in children}
    load_cpu = 0.0
    failed = []
    for c in children:
        _pid, status, ru = os.wait4(c.pid, 0)
        load_cpu += ru.ru_utime + ru.ru_stime
        if status:
            failed.append(c.stderr.read().decode()[-500:])
    t_acc = time.monotonic() - t0
    deadline = time.monotonic() + 300
    while (queue_count() or sink_count() - sink0 < n) and time.monotonic() < deadline:
        time.sleep(0.02)
    t_del = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()
    cpu = sampler.result()
    self1 = os.times()
    hb1, ht1 = host_cpu()
    warnings = subprocess.run(f"journalctl -q -o cat --since @{since} | grep -Eci 'process limit|milter'",
                              shell=True, capture_output=True, text=True).stdout.strip()
    cpu["load generator"] = load_cpu
    cpu["bench sampler"] = (self1.user + self1.system) - (self0.user + self0.system)
    return {"accepted_s": t_acc, "delivered_s": t_del, "sink": sink_count() - sink0, "queue": queue_count(),
            "failed": failed, "cpu": cpu, "host_busy_s": (hb1 - hb0) / HZ,
            "spawned": sampler.spawned(), "pids_used": last_pid() - pid0, "warnings": int(warnings or 0),
            "host_cores": os.cpu_count()}


def capture(spec):
    """Send one message through a listener to the capture sink; return its headers."""
    d = "/run/mailops-bench-capture"
    sh(f"rm -rf {d}; mkdir -p {d}; chown postfix {d}")
    unit = f"mailops-bench-capture-{time.time_ns()}"
    sh(f"systemd-run --unit={unit} --collect /usr/sbin/smtp-sink -u postfix "
       f"-d {d}/%M%S. 127.0.0.1:2526 64")
    try:
        time.sleep(0.3)
        msg = ("From: %s\r\nTo: capture@capture.test\r\nSubject: capture\r\n"
               "Message-ID: <capture.%d@shop.test>\r\n\r\nhello\r\n" % (spec["sender"], time.time_ns()))
        host, port = spec["target"].rsplit(":", 1)
        s = smtplib.SMTP(host, int(port), timeout=30)
        if spec.get("user"):
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx); s.login(spec["user"], spec["password"])
        s.sendmail(spec["sender"], ["capture@capture.test"], msg)
        s.quit()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            files = os.listdir(d)
            if files:
                time.sleep(0.3)
                with open(os.path.join(d, files[0]), errors="replace") as f:
                    return f.read().split("\n\n", 1)[0]
            time.sleep(0.1)
        return "NOTHING ARRIVED; queue:\n" + sh("postqueue -p | tail -5")
    finally:
        subprocess.run(["systemctl", "stop", unit])


def prepare(spec):
    """Bench transport, sink and (mailops server) the bench listeners."""
    with open("/etc/postfix/bench_transport", "w") as f:
        for domain, addr in (("sink.test", spec["sink"]), ("capture.test", spec["capture"])):
            host, port = addr.rsplit(":", 1)
            f.write(f"{domain} smtp:[{host}]:{port}\n")
    sh("postconf -e transport_maps=texthash:/etc/postfix/bench_transport")
    services = []
    if spec.get("listeners"):
        sub = {}
        for line in sh("postconf -P submission/inet").splitlines():
            name, _, value = line.partition("=")
            sub[name.strip().split("/", 2)[2]] = value.strip()
        off = {"smtpd_tls_security_level": "none", "smtpd_tls_auth_only": "no", "smtpd_sasl_auth_enable": "no",
               "smtpd_client_restrictions": "permit_mynetworks, reject",
               "smtpd_sender_restrictions": "permit_mynetworks, reject",
               "smtpd_relay_restrictions": "permit_mynetworks, reject",
               "smtpd_recipient_restrictions": "permit_mynetworks, reject"}
        for addr, name, opts in (
                ("127.0.0.1:10025", "bench-signed", off),
                ("127.0.0.1:10026", "bench-unsigned", dict(off, smtpd_milters="")),
                (spec["ip"] + ":10587", "bench-submission-unsigned", {"smtpd_milters": ""})):
            merged = dict(sub, **opts, syslog_name="postfix/" + name)
            lines = [f"{addr} inet n - y - - smtpd"]
            lines += ["  { -o %s = %s }" % (k, v) if " " in v else f"  -o {k}={v}"
                      for k, v in merged.items()]
            services.append("\n".join(lines))
    with open("/etc/postfix/master.cf") as f:
        master = f.read().split("# mailops throughput bench\n")[0]
    with open("/etc/postfix/master.cf", "w") as f:
        f.write(master + "".join("# mailops throughput bench\n" + s + "\n" for s in services))
    sh("postfix check && postsuper -d ALL 2>/dev/null; postfix reload")
    sh("systemctl stop 'mailops-bench-sink*' 2>/dev/null || true; rm -f " + SINK_OUT)
    sh(f"systemd-run --unit=mailops-bench-sink-{time.time_ns()} --collect -p StandardOutput=truncate:{SINK_OUT} "
       f"/usr/sbin/smtp-sink -c -u postfix {spec['sink']} 1024")
    time.sleep(0.5)
    return {"postconf_n": sh("postconf -n"), "master_bench": services}


def crypto(spec):
    """What one signature costs on this machine: the RSA-2048 private-key operation
    (openssl speed) and parsing the PEM key (as OpenDKIM does for every message)."""
    import ctypes
    line = sh("openssl speed -seconds 2 rsa2048 2>/dev/null | grep '^rsa 2048'")
    sign_ms = float(line.split()[3].rstrip("s")) * 1000
    key = sh("find /etc/opendkim/keys -name '*.private' | head -1").strip()
    with open(key, "rb") as f:
        pem = f.read()
    c = ctypes.CDLL("libcrypto.so.3")
    vp = ctypes.c_void_p
    c.BIO_new_mem_buf.restype, c.BIO_new_mem_buf.argtypes = vp, [ctypes.c_char_p, ctypes.c_int]
    c.PEM_read_bio_PrivateKey.restype, c.PEM_read_bio_PrivateKey.argtypes = vp, [vp] * 4
    c.EVP_PKEY_free.argtypes = c.BIO_free.argtypes = [vp]
    best = None
    for _ in range(3):
        t = time.process_time()
        for _ in range(100):
            b = c.BIO_new_mem_buf(pem, len(pem))
            k = c.PEM_read_bio_PrivateKey(b, None, None, None)
            assert k, "cannot parse " + key
            c.EVP_PKEY_free(k)
            c.BIO_free(b)
        ms = (time.process_time() - t) * 10
        best = ms if best is None else min(best, ms)
    return {"sign_ms": sign_ms, "parse_ms": best}


PROFILE_GROUPS = [  # first match wins, searched in the whole stack
    ("RSA blinding setup", r"RSA_setup_blinding|BN_BLINDING"),
    ("RSA signature", r"RSA_sign|BN_mod_exp|rsa_ossl_private|RSA_private_encrypt"),
    ("key parse", r"PEM_read_bio|OSSL_DECODER|d2i_|dkim_privkey_load|EVP_PKEY_"),
    ("resolver context", r"ub_ctx_|libunbound|libnettle"),
    ("thread creation", r"clone3|pthread_create|create_thread"),
    ("logging", r"syslog"),
    ("hashing, canonicalization", r"dkim_canon|dkim_header|dkim_body|dkim_eoh|SHA256|sha256|EVP_Digest"),
]
IDLE = r"poll|libc_read|^read$|futex|accept|select|sigwait|sigtimedwait|nanosleep|epoll|recv|cond_wait|cond_timedwait"


def profile(spec):
    """Poor man's profiler: stacks of all OpenDKIM threads, sampled with gdb."""
    pid = sh("pgrep -x opendkim | head -1").strip()
    stacks = []
    for _ in range(spec["samples"]):
        out = subprocess.run(["gdb", "-p", pid, "-batch", "-nx", "-ex", "set pagination 0",
                              "-ex", "thread apply all bt 20"], capture_output=True, text=True, timeout=60).stdout
        cur = None
        for line in out.splitlines():
            if line.startswith("#0"):
                if cur:
                    stacks.append(cur)
                cur = [line]
            elif line.startswith("#") and cur is not None:
                cur.append(line)
            elif cur:
                stacks.append(cur)
                cur = None
        if cur:
            stacks.append(cur)
        time.sleep(spec.get("interval", 0.2))
    counts, busy, writev = {}, 0, 0
    for st in stacks:
        m = re.search(r"^#0\s+(?:0x[0-9a-f]+ in )?(\S+)", st[0])
        if m and re.search(IDLE, m.group(1)):
            continue
        if m and "writev" in m.group(1):
            # a milter reply: it wakes the MTA's process, which on a busy machine preempts the writer
            # right there, so these stacks are mostly waiting for a CPU, not using one
            writev += 1
            continue
        busy += 1
        text = "\n".join(st)
        label = next((lb for lb, rx in PROFILE_GROUPS if re.search(rx, text)), "other")
        counts[label] = counts.get(label, 0) + 1
    return {"stacks": len(stacks), "busy": busy, "counts": counts, "writev": writev}


def opendkim(spec):
    """Rewrite settings in /etc/opendkim.conf (experiments) and restart."""
    path = "/etc/opendkim.conf"
    with open(path) as f:
        lines = f.read().splitlines()
    for key, value in spec["settings"].items():
        lines = [l for l in lines if l.split()[:1] != [key]] + [f"{key} {value}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    sh("opendkim -n -x /etc/opendkim.conf && systemctl restart opendkim")
    time.sleep(1)
    return {"conf": "\n".join(lines)}


if __name__ == "__main__":
    spec = json.loads(sys.argv[2])
    actions = {"run": run, "capture": capture, "prepare": prepare, "opendkim": opendkim, "crypto": crypto,
               "profile": profile}
    print(json.dumps(actions[sys.argv[1]](spec)))
'''


# ---------------------------------------------------------------------------
# Controller side.
def ssh(cfg: LabConfig, vps: str, script: str, timeout: float = 600, check: bool = True) -> str:
    proc = core.ssh_run(cfg, vps, script, timeout=timeout)
    if check and proc.returncode != 0:
        raise SystemExit(f"{vps}: {script[:120]!r} failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                         f"\n{proc.stderr[-2000:]}")
    return proc.stdout


def driver(cfg: LabConfig, vps: str, action: str, spec: dict, timeout: float = 600) -> dict:
    out = ssh(cfg, vps, f"python3 {REMOTE_DRIVER} {action} {shlex.quote(json.dumps(spec))}", timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def install_driver(cfg: LabConfig, vps: str) -> None:
    proc = core.ssh_run(cfg, vps, f"cat > {REMOTE_DRIVER}", input=DRIVER)
    if proc.returncode:
        raise SystemExit(f"{vps}: cannot install the driver: {proc.stderr}")


def _keystore(store: Path) -> None:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rel = f"shop.test/{SELECTOR}.key"
    (store / "shop.test").mkdir(parents=True)
    fd = os.open(store / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    pub = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    (store / "keys.json").write_text(json.dumps({"version": 1, "keys": [{
        "domain": "shop.test", "selector": SELECTOR, "algorithm": "rsa", "bits": 2048, "state": "active",
        "created": "2026-01-01T00:00:00+00:00", "activated": "2026-01-02T00:00:00+00:00", "retired": None,
        "private_key": rel, "dns_value": "v=DKIM1; k=rsa; p=" + base64.b64encode(pub).decode()}]}, indent=2))


def converge_mailops(cfg: LabConfig, vps: str, work: Path, roles: Path, password: str) -> float:
    """Converge vps with the sasl, opendkim and postfix roles (as tests/test_roles_mail.py)."""
    number = int(vps.removeprefix("vps"))
    ipv4, ipv6 = f"198.51.100.{10 + number}", f"2001:db8:51::{10 + number}"
    fqdn = f"mta{number}.shop.test"
    store = work / "keys"
    _keystore(store)
    tls = work / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
                    "-subj", f"/CN={fqdn}", "-addext", f"subjectAltName=DNS:{fqdn}",
                    "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem")],
                   check=True, capture_output=True)
    inv = work / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "secrets").mkdir()
    (inv / "secrets" / "bench.password").write_text(password + "\n")
    ssh_dir = cfg.state_dir / "ssh"
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"mailhosts": {"hosts": {fqdn: {
        "ansible_host": ipv4, "ansible_user": "root",
        "ansible_ssh_private_key_file": str(ssh_dir / "id_ed25519"),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={ssh_dir / 'known_hosts'} -o StrictHostKeyChecking=yes",
        "ansible_python_interpreter": "/usr/bin/python3",
        "mailops_ipv4": ipv4, "mailops_ipv6": ipv6}}}}}}))
    (inv / "group_vars" / "all" / "mailops.yml").write_text(yaml.safe_dump({
        "mailops_dkim_keystore": str(store),
        "mailops_apt_proxy": cfg.proxy_url,
        "mailops_domains": {"shop.test": {"dns_provider": "lab"}},
        "mailops_submission_users": [{"login": SENDER, "password": {"file": "secrets/bench.password"}}]}))
    playbook = work / "converge.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "converge sasl, opendkim, postfix", "hosts": "mailhosts",
        "pre_tasks": [
            {"name": "apt proxy", "ansible.builtin.copy": {
                "content": "Acquire::http::Proxy \"{{ mailops_apt_proxy }}\";\n",
                "dest": "/etc/apt/apt.conf.d/01proxy", "mode": "0644"}},
            {"name": "tls dir", "ansible.builtin.file": {"path": "/etc/mailops/tls", "state": "directory",
                                                         "mode": "0755"}},
            {"name": "stand-in certificate", "no_log": True, "ansible.builtin.copy": {
                "src": f"{tls}/{{{{ item.name }}}}", "dest": "/etc/mailops/tls/{{ item.name }}",
                "mode": "{{ item.mode }}"},
             "loop": [{"name": "fullchain.pem", "mode": "0644"}, {"name": "privkey.pem", "mode": "0600"}]},
        ],
        "roles": ["sasl", "opendkim", "postfix"]}]))
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(roles), ANSIBLE_PIPELINING="True", ANSIBLE_NOCOLOR="1",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    t = time.monotonic()
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inv), str(playbook)],
                          capture_output=True, text=True, env=env, cwd=work)
    if proc.returncode:
        raise SystemExit(f"converging {vps} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return time.monotonic() - t


def install_stock(cfg: LabConfig, vps: str) -> float:
    t = time.monotonic()
    ssh(cfg, vps, f"""set -e
echo 'Acquire::http::Proxy "{cfg.proxy_url}";' > /etc/apt/apt.conf.d/01proxy
echo "postfix postfix/main_mailer_type select Internet Site" | debconf-set-selections
echo "postfix postfix/mailname string $(hostname).lab.test" | debconf-set-selections
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/tmp/apt.log 2>&1 || {{ tail -20 /tmp/apt.log; exit 1; }}
""")
    return time.monotonic() - t


def reset(cfg: LabConfig, vps: str, wait: float = 300) -> None:
    """Reset one machine; the lab lock is not blocking, so retry while someone else holds it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            core.reset(cfg, vps)
            return
        except MailopsError as exc:
            if "holds" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def setup(cfg: LabConfig, signed: str, stock: str, password: str, reuse: bool, roles_from: str) -> dict:
    info: dict = {}
    if not reuse:
        with tempfile.TemporaryDirectory(prefix="mailops-throughput-") as tmp:
            work = Path(tmp)
            roles = work / "roles"
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD" if roles_from == "worktree" else roles_from],
                                  cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
            if roles_from == "worktree":
                shutil.copytree(ROOT / "roles", roles)
                dirty = [d for d in subprocess.run(["git", "status", "--porcelain", "--", "roles"], cwd=ROOT,
                                                   capture_output=True, text=True).stdout.split("\n") if d]
                info["roles"] = f"working tree at {head}" + (f" + {len(dirty)} uncommitted" if dirty else "")
            else:
                archive = subprocess.run(["git", "archive", "--format=tar", head, "roles"], cwd=ROOT,
                                         capture_output=True, check=True).stdout
                subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
                info["roles"] = f"commit {head}"
            errors: list = []

            for vps in (stock, signed):
                reset(cfg, vps)

            def stock_job():
                try:
                    info["stock_install_s"] = install_stock(cfg, stock)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            th = threading.Thread(target=stock_job)
            th.start()
            info["converge_s"] = converge_mailops(cfg, signed, work / "signed", roles, password)
            th.join()
            if errors:
                raise errors[0]
    for vps in (signed, stock):
        install_driver(cfg, vps)
    number = int(signed.removeprefix("vps"))
    driver(cfg, signed, "prepare", {"sink": SINK, "capture": CAPTURE, "listeners": True,
                                    "ip": f"198.51.100.{10 + number}"})
    info["stock_postconf_n"] = driver(cfg, stock, "prepare", {"sink": SINK, "capture": CAPTURE})["postconf_n"]
    return info


def profile_opendkim(cfg: LabConfig, table: dict, messages: int, sessions: int, samples: int) -> dict:
    """Sample OpenDKIM's thread stacks with gdb while the signed variant runs (a separate, unmeasured run)."""
    vps, mode, target, sender = table["signed"]
    ssh(cfg, vps, "command -v gdb >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q gdb "
                  ">/tmp/gdb-install.log 2>&1", timeout=300)
    result: dict = {}

    def sampler():
        time.sleep(1.5)
        result.update(driver(cfg, vps, "profile", {"samples": samples}, timeout=600))

    th = threading.Thread(target=sampler)
    th.start()
    driver(cfg, vps, "run", {"mode": mode, "target": target, "messages": messages, "sessions": sessions,
                             "size": 2048, "sender": sender, "rcpt": RCPT}, timeout=900)
    th.join()
    return result


def profile_lines(prof: dict, odk_ms: float) -> list[str]:
    if not prof.get("busy"):
        return []
    busy = prof["busy"]
    parts = sorted(prof["counts"].items(), key=lambda kv: -kv[1])
    return [f"  OpenDKIM profile while signing: {prof['stacks']} thread stacks sampled with gdb, {busy} computing "
            f"({prof.get('writev', 0)} more inside a milter reply's writev, left out: mostly preempted by the MTA "
            f"process they wake); share (ms/msg of {odk_ms:.2f}):",
            "    " + ", ".join(f"{k} {100 * n / busy:.0f}% ({odk_ms * n / busy:.2f})" for k, n in parts)]


# variants: name -> (vps key, mode, target, envelope/header sender)
def variants(signed: str, stock: str, ip: str) -> dict:
    return {
        "signed": (signed, "source", "127.0.0.1:10025", SENDER),
        # through the milter, but From a domain without a key: OpenDKIM's cost without signing
        "milter, no key": (signed, "source", "127.0.0.1:10025", NOKEY_SENDER),
        "unsigned": (signed, "source", "127.0.0.1:10026", SENDER),
        "stock": (stock, "source", "127.0.0.1:25", SENDER),
        "587 signed": (signed, "submit", f"{ip}:587", SENDER),
        "587 unsigned": (signed, "submit", f"{ip}:10587", SENDER),
    }


def check_variants(cfg: LabConfig, table: dict, password: str) -> list[str]:
    problems = []
    for name, (vps, mode, target, sender) in table.items():
        spec = {"target": target, "sender": sender}
        if mode == "submit":
            spec.update(user=SENDER, password=password)
        headers = driver(cfg, vps, "capture", spec, timeout=120)
        sig = headers.split("DKIM-Signature:", 1)[1].split("\n")[0] if "DKIM-Signature:" in headers else ""
        want = name.endswith(" signed") or name == "signed"
        if "NOTHING ARRIVED" in headers:
            problems.append(f"{name}: capture message did not arrive: {headers}")
        elif want and "d=shop.test;" not in sig.replace(" ", ""):
            problems.append(f"{name}: expected a DKIM-Signature d=shop.test, got headers:\n{headers}")
        elif not want and sig:
            problems.append(f"{name}: expected no DKIM-Signature, got one")
    return problems


def measure(cfg: LabConfig, table: dict, names: list[str], *, messages: int, sessions: int, size: int,
            repeat: int, password: str) -> dict:
    results: dict = {n: [] for n in names}

    def one(name: str, n: int) -> dict:
        vps, mode, target, sender = table[name]
        spec = {"mode": mode, "target": target, "messages": n, "sessions": sessions, "size": size,
                "sender": sender, "rcpt": RCPT, "user": SENDER, "password": password}
        r = driver(cfg, vps, "run", spec, timeout=900)
        if r["failed"] or r["sink"] != n or r["queue"]:
            print(f"  ! {name}: load generator failed {r['failed']} / sink got {r['sink']} of {n} / "
                  f"queue {r['queue']}", flush=True)
        return r

    for name in names:
        one(name, max(20, messages // 5))
    for i in range(repeat):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            r = one(name, messages)
            results[name].append(r)
            print(f"  {size:>6} B  {name:<13} run {i + 1}: {messages / r['accepted_s']:7.1f} accepted/s  "
                  f"{messages / r['delivered_s']:7.1f} delivered/s", flush=True)
    return results


GROUPS = [
    ("opendkim", {"opendkim"}), ("smtpd", {"smtpd"}), ("cleanup", {"cleanup"}),
    ("smtp (delivery)", {"smtp"}), ("qmgr", {"qmgr"}), ("trivial-rewrite", {"trivial-rewrite"}),
    ("journald", {"systemd-journal"}), ("dovecot auth", {"auth", "dovecot"}), ("smtp-sink", {"smtp-sink"}),
    ("postfix, exited", {"postfix, exited"}),
]
NOT_SERVER = ("load generator", "bench sampler", "smtp-sink")  # the sink stands in for remote servers


def cpu_table(run: dict, messages: int) -> dict:
    """CPU ms per message per component of one run."""
    cpu = dict(run["cpu"])
    out = {}
    for label, comms in GROUPS:
        out[label] = sum(cpu.pop(c, 0.0) for c in comms) * 1000 / messages
    out["load generator"] = cpu.pop("load generator", 0.0) * 1000 / messages
    out["bench sampler"] = cpu.pop("bench sampler", 0.0) * 1000 / messages
    out["other in machine"] = sum(cpu.values()) * 1000 / messages
    return out


def summarize(runs: list[dict], messages: int) -> dict:
    """Medians over the repetitions of one variant."""
    tabs = [cpu_table(r, messages) for r in runs]
    cpu = {k: statistics.median(t[k] for t in tabs) for k in tabs[0]}
    server = [sum(v for k, v in t.items() if k not in NOT_SERVER) for t in tabs]
    inside = [sum(t.values()) for t in tabs]
    cores = runs[0]["host_cores"]
    return {
        "acc": statistics.median(messages / r["accepted_s"] for r in runs),
        "dlv": statistics.median(messages / r["delivered_s"] for r in runs),
        "each": [messages / r["delivered_s"] for r in runs],
        "cpu": cpu,
        "server_ms": statistics.median(server),
        "capacity": cores * 1000 / statistics.median(server),
        "busy": statistics.median(r["host_busy_s"] / r["delivered_s"] for r in runs),
        "others": statistics.median(max(0.0, r["host_busy_s"] - i * messages / 1000) / r["delivered_s"]
                                    for r, i in zip(runs, inside)),
        "cores": cores,
        "warnings": sum(r.get("warnings", 0) for r in runs),
    }


def pct(a: float, b: float) -> str:
    return f"{100 * (1 - a / b):.0f}%"


def report(title: str, res: dict, names: list[str], messages: int, size: int) -> tuple[list[str], dict]:
    meds = {n: summarize(res[n], messages) for n in names}
    lines = [f"{title}: {messages} messages x {size} B body",
             f"  {'variant':<14}{'accepted/s':>11}{'delivered/s':>12}  {'delivered/s per run':<20}"
             f"{'server CPU':>11}{'capacity':>10}{'machine busy':>14}{'others':>8}",
             f"  {'':<14}{'':>11}{'':>12}  {'':<20}{'ms/msg':>11}{'msg/s':>10}{'cores':>14}{'cores':>8}"]
    for n in names:
        m = meds[n]
        lines.append(f"  {n:<14}{m['acc']:11.1f}{m['dlv']:12.1f}  {', '.join(f'{x:.0f}' for x in m['each']):<20}"
                     f"{m['server_ms']:11.2f}{m['capacity']:10.0f}{m['busy']:11.2f}/{m['cores']}{m['others']:8.2f}")
    return lines, meds


def ratio_lines(meds: dict, signed: str, unsigned: str, stock: str | None) -> list[str]:
    s, u = meds[signed], meds[unsigned]
    met = "met" if max(1 - s["acc"] / u["acc"], 1 - s["dlv"] / u["dlv"]) < 0.15 else "NOT met"
    lines = [f"  {signed}/{unsigned}: accepted {s['acc'] / u['acc']:.2f}, delivered {s['dlv'] / u['dlv']:.2f}, "
             f"capacity {s['capacity'] / u['capacity']:.2f}  => signing costs {pct(s['acc'], u['acc'])} accepted, "
             f"{pct(s['dlv'], u['dlv'])} delivered, {pct(s['capacity'], u['capacity'])} capacity  "
             f"(goal < 15%: {met})"]
    if stock:
        k = meds[stock]
        lines.append(f"  {unsigned}/{stock}: accepted {u['acc'] / k['acc']:.2f}, delivered {u['dlv'] / k['dlv']:.2f}, "
                     f"capacity {u['capacity'] / k['capacity']:.2f};  {signed}/{stock}: accepted "
                     f"{s['acc'] / k['acc']:.2f}, delivered {s['dlv'] / k['dlv']:.2f}, "
                     f"capacity {s['capacity'] / k['capacity']:.2f}")
    return lines


def cpu_lines(meds: dict, names: list[str]) -> list[str]:
    labels = [lb for lb in meds[names[0]]["cpu"] if any(meds[n]["cpu"][lb] >= 0.01 for n in names)]
    lines = ["  CPU ms/message     " + "".join(f"{n:>16}" for n in names) + f"{'signed-unsigned':>17}"]
    for lb in labels:
        row = "".join(f"{meds[n]['cpu'][lb]:16.2f}" for n in names)
        lines.append(f"  {lb:<19}{row}{meds[names[0]]['cpu'][lb] - meds[names[1]]['cpu'][lb]:+17.2f}")
    lines.append(f"  {'server total':<19}" + "".join(f"{meds[n]['server_ms']:16.2f}" for n in names)
                 + f"{meds[names[0]]['server_ms'] - meds[names[1]]['server_ms']:+17.2f}")
    return lines


def where_lines(meds: dict, signed: str, unsigned: str, crypto: dict | None, messages: int = 0,
                sessions: int = 0) -> list[str]:
    s, u = meds[signed], meds[unsigned]
    extra = s["server_ms"] - u["server_ms"]
    diffs = sorted(((s["cpu"][k] - u["cpu"][k], k) for k in s["cpu"] if k not in NOT_SERVER), reverse=True)
    lines = [f"  signing adds {extra:.2f} ms of server CPU per message to {u['server_ms']:.2f} "
             f"(+{100 * extra / u['server_ms']:.0f}%): "
             + ", ".join(f"{k} {d:+.2f}" for d, k in diffs if abs(d) >= 0.05)]
    if crypto and s["cpu"]["opendkim"] > 0:
        odk = s["cpu"]["opendkim"]
        rest = odk - crypto["sign_ms"] - crypto["parse_ms"]
        lines.append(f"  inside OpenDKIM ({odk:.2f} ms/msg): RSA-2048 signature {crypto['sign_ms']:.2f} ms "
                     f"(openssl speed), private key parse {crypto['parse_ms']:.2f} ms (OpenSSL 3 PEM decoder; "
                     f"OpenDKIM reads and parses the key file again for every message), "
                     f"rest {rest:.2f} ms (milter protocol, thread per connection, per-message resolver "
                     f"context, logging, hashing)")
        floor = crypto["sign_ms"] / (u["server_ms"] + crypto["sign_ms"])
        lines.append(f"  lower bound: a signer doing nothing but the RSA-2048 signature would still cost "
                     f"{100 * floor:.0f}% of capacity here; under 15% needs unsigned work of at least "
                     f"{crypto['sign_ms'] * 0.85 / 0.15:.1f} ms CPU per message")
    if s["cpu"].get("dovecot auth", 0) > 0.05 and sessions:
        per_login = s["cpu"]["dovecot auth"] * messages / sessions
        lines.append(f"  dovecot auth: {per_login:.0f} ms CPU per login ({sessions} logins, "
                     f"{messages // sessions} messages each: {s['cpu']['dovecot auth']:.2f} ms per message); a "
                     f"client that logs in for every message pays this per message")
    busy = max(m["busy"] for m in meds.values())
    lines.append(f"  machine CPU busy {min(m['busy'] for m in meds.values()):.2f}-{busy:.2f} of {s['cores']} cores "
                 f"in every variant: CPU-bound, so throughput follows CPU per message; "
                 f"process-limit or milter warnings in the log: {sum(m['warnings'] for m in meds.values())}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--signed-vps", default="vps5")
    ap.add_argument("--stock-vps", default="vps6")
    ap.add_argument("--messages", type=int, default=1500)
    ap.add_argument("--submission-messages", type=int, default=800)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 20480])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="machines already set up by an earlier run")
    ap.add_argument("--roles", default="HEAD", metavar="REV|worktree",
                    help="roles to converge with: those of a git revision (default HEAD) or a copy of the working tree")
    ap.add_argument("--no-submission", action="store_true")
    ap.add_argument("--no-profile", action="store_true", help="skip the gdb profile of OpenDKIM")
    ap.add_argument("--profile-samples", type=int, default=25)
    ap.add_argument("--quick", action="store_true", help="500 messages, 2 KB only, 2 repeats, no submission")
    ap.add_argument("--opendkim", action="append", default=[], metavar="NAME=VALUE",
                    help="set an opendkim.conf option on the signed machine before measuring (experiments)")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.sizes, args.repeat, args.no_submission, args.no_profile = 500, [2048], 2, True, True
    cfg = LabConfig()
    t_start = time.monotonic()
    pw_file = cfg.state_dir / "throughput-bench.password"
    if args.reuse and pw_file.exists():
        password = pw_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(18)
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
    number = int(args.signed_vps.removeprefix("vps"))
    ip = f"198.51.100.{10 + number}"
    info = setup(cfg, args.signed_vps, args.stock_vps, password, args.reuse, args.roles)
    if args.opendkim:
        settings = dict(o.split("=", 1) for o in args.opendkim)
        driver(cfg, args.signed_vps, "opendkim", {"settings": settings})
    table = variants(args.signed_vps, args.stock_vps, ip)
    problems = check_variants(cfg, {k: v for k, v in table.items()
                                    if not (args.no_submission and k.startswith("587"))}, password)
    if problems:
        raise SystemExit("variants are not what they claim:\n" + "\n".join(problems))
    odk = ssh(cfg, args.signed_vps, "grep -Ev '^(#|$)' /etc/opendkim.conf | grep -Ev '^(SignHeaders|OversignHeaders)'")
    shown = {k: v for k, v in info.items() if k != "stock_postconf_n"}
    print(f"# setup done in {time.monotonic() - t_start:.0f} s {json.dumps(shown)}", flush=True)

    crypto = driver(cfg, args.signed_vps, "crypto", {})
    prof = {} if args.no_profile else profile_opendkim(cfg, table, args.messages, args.sessions, args.profile_samples)
    out: list[str] = []
    where: list[str] = []
    for size in args.sizes:
        n = args.messages if size <= 4096 else max(100, args.messages // 2)
        names = ["signed", "unsigned", "stock"] + (["milter, no key"] if size == args.sizes[0] else [])
        res = measure(cfg, table, names, messages=n, sessions=args.sessions, size=size,
                      repeat=args.repeat, password=password)
        lines, meds = report(f"smtp-source, {args.sessions} sessions, one message per connection",
                             res, names, n, size)
        out += lines + ratio_lines(meds, "signed", "unsigned", "stock") + cpu_lines(meds, names) + [""]
        where += [f"{size} B, smtp-source:"] + where_lines(meds, "signed", "unsigned", crypto)
        if size == args.sizes[0]:
            where += profile_lines(prof, meds["signed"]["cpu"]["opendkim"])
        u, k = meds["unsigned"], meds["stock"]
        diffs = sorted(((u["cpu"][c] - k["cpu"][c], c) for c in u["cpu"] if c not in NOT_SERVER), reverse=True)
        where.append(f"  mailops unsigned vs stock Debian: {u['server_ms'] - k['server_ms']:+.2f} ms/msg: "
                     + ", ".join(f"{c} {d:+.2f}" for d, c in diffs if abs(d) >= 0.05))
        if "milter, no key" in meds:
            m, s_, u = meds["milter, no key"], meds["signed"], meds["unsigned"]
            where.append(f"  the milter without a signature (From a domain without a key) costs "
                         f"{m['server_ms'] - u['server_ms']:.2f} ms/msg (OpenDKIM {m['cpu']['opendkim']:.2f}: "
                         f"connection, thread, milter round trips, header parsing; smtpd "
                         f"{m['cpu']['smtpd'] - u['cpu']['smtpd']:+.2f}, cleanup "
                         f"{m['cpu']['cleanup'] - u['cpu']['cleanup']:+.2f}); signing itself adds "
                         f"{s_['server_ms'] - m['server_ms']:.2f} ms/msg (OpenDKIM "
                         f"{s_['cpu']['opendkim'] - m['cpu']['opendkim']:+.2f}: key file, key parse, resolver "
                         f"context, RSA signature, DKIM-Signature header)")
    if not args.no_submission:
        names = ["587 signed", "587 unsigned"]
        size = args.sizes[0]
        res = measure(cfg, table, names, messages=args.submission_messages, sessions=args.sessions, size=size,
                      repeat=args.repeat, password=password)
        lines, meds = report(f"submission 587 (STARTTLS + AUTH PLAIN, Python client), {args.sessions} sessions, "
                             f"connections reused", res, names, args.submission_messages, size)
        out += lines + ratio_lines(meds, "587 signed", "587 unsigned", None) + cpu_lines(meds, names) + [""]
        where += [f"{size} B, submission 587:"] + where_lines(meds, "587 signed", "587 unsigned", crypto,
                                                             args.submission_messages, args.sessions)

    print()
    print(f"mailops throughput benchmark  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()} "
          f"{platform.machine()}, {os.cpu_count()} cores (lab VPSes share them)")
    roles = info.get("roles", "an earlier run")
    print(f"signed/unsigned: {args.signed_vps} (roles sasl, opendkim, postfix from {roles}); "
          f"stock: {args.stock_vps} (Debian postfix, Internet Site); median of {args.repeat} runs after a warm-up")
    print("opendkim.conf: " + "; ".join(" ".join(x.split()) for x in odk.strip().split("\n")))
    print("capacity = cores x 1000 / server CPU ms per message (what the machine would do on its own, without "
          "the load generator and the other lab users); others = CPU used outside the machine during the run")
    print()
    print("\n".join(out))
    print("where the time goes")
    print("\n".join(where))
    print(f"\ntotal wall time {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
