"""The throughput benchmark's driver: runs inside a lab machine, copied there by
bench/throughput.py (to /root/mailops-throughput.py) and called over SSH as

    python3 mailops-throughput.py ACTION 'JSON SPEC'

ACTION is prepare (bench transport, sink and listeners), run (one measured run
with the CPU sampler), capture (one message's headers), crypto, profile or
opendkim; it prints one JSON line.  Plain python3, standard library only: the
VPS has nothing else.
"""

import json
import os
import re
import smtplib
import ssl
import subprocess
import sys
import threading
import time

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
        msg = ("From: %s\r\nTo: capture@capture.test\r\nSubject: capture\r\n%s"
               "Message-ID: <capture.%d@shop.test>\r\n\r\nhello\r\n"
               % (spec["sender"], "".join(f"{h}\r\n" for h in spec.get("headers", [])), time.time_ns()))
        host, port = spec["target"].rsplit(":", 1)
        s = smtplib.SMTP(host, int(port), timeout=30)
        if spec.get("user"):
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx); s.login(spec["user"], spec["password"])
        try:
            s.sendmail(spec["sender"], ["capture@capture.test"], msg)
        except smtplib.SMTPException as exc:
            time.sleep(0.5)  # the refusing milter's log lines reach the journal after the reply
            log = subprocess.run("journalctl -q -o cat -n 2000 -t opendkim -t postfix/bench-signed "
                                 "-t postfix/bench-opendkim-inline -t postfix/bench-rspamd | tail -3",
                                 shell=True, capture_output=True, text=True).stdout
            return f"NOTHING ARRIVED; refused: {exc}; log: {log}"
        s.quit()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            files = os.listdir(d)
            if files:
                time.sleep(0.3)
                with open(os.path.join(d, files[0]), errors="replace") as f:
                    text = f.read()
                return text if spec.get("full") else text.split("\n\n", 1)[0]
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
                (spec["ip"] + ":10587", "bench-submission-unsigned", {"smtpd_milters": ""}),
                *[(addr, "bench-" + name, dict(off, smtpd_milters=milter))
                  for addr, name, milter in spec.get("milters", [])]):
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
    key = sh("find /etc/opendkim/keys -name '*.private' -size +1k | head -1").strip()
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


def _socket_dir(path, owner):
    # as the opendkim role does it: owner:postfix 02750, so only Postfix reaches the socket
    sh(f"mkdir -p {path} && chown {owner}:postfix {path} && chmod 02750 {path}")


def _secret(path, data, owner):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    sh(f"chown {owner} {path}")


def role_keys(rsa_only=False):
    """The role's signing keys (SigningTable -> KeyTable -> file), in every form a signer reads.
    rsa_only: the role's OpenDKIM is made to sign with the RSA key alone (SigningTable without the
    Ed25519 entry, the role's file kept as SigningTable.bench-orig and put back on the next run)."""
    import base64
    orig = "/etc/opendkim/SigningTable.bench-orig"
    if os.path.exists(orig):
        os.replace(orig, "/etc/opendkim/SigningTable")
        sh("systemctl restart opendkim")
    with open("/etc/opendkim/KeyTable") as f:
        table = {l.split()[0]: l.split()[1].split(":", 2) for l in f if l.strip() and not l.startswith("#")}
    with open("/etc/opendkim/SigningTable") as f:
        active = [l.split()[1] for l in f if l.strip() and not l.startswith("#")]
    keys = {}
    for ref in active:
        dom, sel, path = table[ref]
        der = subprocess.run(["openssl", "pkey", "-in", path, "-outform", "DER"], capture_output=True,
                             check=True).stdout
        pub = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"], capture_output=True,
                             check=True).stdout
        k = {"selector": sel, "der_b64": base64.b64encode(der).decode()}  # PKCS#8
        if len(der) == 48:  # PKCS#8 Ed25519: the 32-byte seed is last, the SPKI ends in the public key
            k["seed_b64"] = base64.b64encode(der[-32:]).decode()
            k["sodium_b64"] = base64.b64encode(der[-32:] + pub[-32:]).decode()
            k["dns"] = "v=DKIM1; k=ed25519; p=" + base64.b64encode(pub[-32:]).decode()
            keys["ed25519"] = k
        else:
            k["pem"] = subprocess.run(["openssl", "rsa", "-in", path, "-traditional"], capture_output=True,
                                      text=True, check=True).stdout  # PKCS#1 PEM: every signer reads it
            # libopendkim decodes inline key data with d2i_PrivateKey_bio: PKCS#1 DER for RSA
            k["der_b64"] = base64.b64encode(subprocess.run(
                ["openssl", "rsa", "-in", path, "-traditional", "-outform", "DER"], capture_output=True,
                check=True).stdout).decode()
            k["dns"] = "v=DKIM1; k=rsa; p=" + base64.b64encode(pub).decode()
            keys["rsa"] = k
        keys["domain"] = dom
    if set(keys) != {"rsa", "ed25519", "domain"}:
        raise SystemExit(f"the role's SigningTable must hold one RSA and one Ed25519 key, found {active}")
    if rsa_only:
        sh(f"cp -p /etc/opendkim/SigningTable {orig}")
        sh(f"grep -v ' {keys['ed25519']['selector']}._domainkey.' {orig} > /etc/opendkim/SigningTable")
        sh("opendkim -n -x /etc/opendkim.conf && systemctl restart opendkim")
        del keys["ed25519"]
    conf = {}
    with open("/etc/opendkim.conf") as f:
        for l in f:
            if l.split()[:1] in (["SignHeaders"], ["OversignHeaders"]):
                conf[l.split()[0]] = l.split(None, 1)[1].strip()
    keys["sign_headers"] = conf["SignHeaders"].split(",")
    keys["oversign"] = [h.lower() for h in conf.get("OversignHeaders", "").split(",") if h]
    return keys


def signers(spec):
    """Install and start the other signers beside the role's OpenDKIM: OpenDKIM instances with
    tuned settings, rspamd with only dkim_signing, dkimpy-milter.  They sign with the keys the
    role installed (converted to each signer's format) and the role's SignHeaders."""
    keys = role_keys(spec.get("rsa_only", False))
    want = [p for p in ("rspamd", "dkimpy-milter", "python3-nacl")
            if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
    if want:
        sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
           + " ".join(want) + " >/tmp/signers-apt.log 2>&1 || { tail -20 /tmp/signers-apt.log; exit 1; }")
    milters = []
    rsa, ed = keys["rsa"], keys.get("ed25519")
    both = [k for k in (rsa, ed) if k]
    dom = keys["domain"]
    # OpenDKIM variants: a second opendkim process per variant, the role's opendkim.conf plus settings
    with open("/etc/opendkim.conf") as f:
        base = [l for l in f.read().splitlines() if l.split()[:1] not in (["Socket"], ["PidFile"])]
    subprocess.run("systemctl stop 'mailops-bench-odk-*'; systemctl reset-failed 'mailops-bench-odk-*'",
                   shell=True, capture_output=True)
    for name, settings in spec["opendkim"].items():
        unit = f"mailops-bench-odk-{name}"
        _socket_dir(f"{SPOOL}/bench-odk-{name}", "opendkim")
        settings = dict(settings)
        if settings.pop("inline keys", None):
            # KeyTable with the key data itself (base64 DER) instead of a path: no file read per message
            kt = f"/etc/opendkim/KeyTable-bench-{name}"
            _secret(kt, "".join(f"{k['selector']}._domainkey.{dom} {dom}:{k['selector']}:{k['der_b64']}\n"
                                for k in both), "opendkim")
            settings["KeyTable"] = kt
        lines = [l for l in base if l.split()[:1] not in [[k] for k in settings]]
        lines += [f"Socket local:{SPOOL}/bench-odk-{name}/s.sock"] + [f"{k} {v}" for k, v in settings.items()]
        conf = f"/etc/opendkim-bench-{name}.conf"
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        sh(f"opendkim -n -x {conf}")
        sh(f"systemd-run --unit={unit} --collect /usr/sbin/opendkim -f -x {conf}")
        milters.append((f"opendkim {name}", f"unix:bench-odk-{name}/s.sock"))
    # rspamd: proxy worker as milter on a UNIX socket, dkim_signing the only symbol that runs
    kd = "/var/lib/rspamd/dkim"
    sh(f"mkdir -p {kd} && chown _rspamd:_rspamd {kd} && chmod 0700 {kd}")
    _secret(f"{kd}/{dom}.rsa.key", rsa["pem"], "_rspamd")
    if ed:
        _secret(f"{kd}/{dom}.ed25519.key", ed["sodium_b64"], "_rspamd")
    _socket_dir(f"{SPOOL}/bench-rspamd", "_rspamd")  # rspamd sets no group: the socket is 0666 in it
    headers = ":".join(("(o)" if h.lower() in keys["oversign"] else "") + h.lower() for h in keys["sign_headers"])
    local = {
        "worker-proxy.inc": f'bind_socket = "{SPOOL}/bench-rspamd/milter.sock mode=0666 owner=_rspamd";\n'
                            'milter = yes;\ntimeout = 120s;\n'
                            'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n',
        "dkim_signing.conf": "enabled = true;\nsign_local = true;\nsign_authenticated = true;\n"
                             "allow_username_mismatch = true;\nuse_esld = false;\ncheck_pubkey = false;\n"
                             f'sign_headers = "{headers}";\n'
                             f"domain {{\n  {dom} {{\n    selectors = [\n"
                             + ",\n".join(f'      {{ path = "{kd}/{dom}.{a}.key"; selector = "{k["selector"]}"; }}'
                                          for a, k in (("rsa", rsa), ("ed25519", ed)) if k)
                             + "\n    ];\n  }\n}\n",
        # run nothing but DKIM signing for every message (the settings module's symbols_enabled)
        "settings.conf": 'dkim_only {\n  priority = high;\n  ip = ["0.0.0.0/0", "::/0"];\n'
                         '  apply {\n    symbols_enabled = ["DKIM_SIGNED"];\n  }\n}\n',
    }
    for fn, text in local.items():
        with open(f"/etc/rspamd/local.d/{fn}", "w") as f:
            f.write(text)
    sh("rspamadm configtest >/tmp/rspamd-configtest.log 2>&1 || { tail -20 /tmp/rspamd-configtest.log; exit 1; }")
    sh("systemctl restart rspamd")
    milters.append(("rspamd", "unix:bench-rspamd/milter.sock"))
    # dkimpy-milter (its own package and service), RSA + Ed25519
    kd = "/etc/dkimpy-milter/keys"
    sh(f"mkdir -p {kd} && chown dkimpy-milter {kd} && chmod 0700 {kd}")
    _secret(f"{kd}/rsa.key", rsa["pem"], "dkimpy-milter")
    if ed:
        _secret(f"{kd}/ed25519.key", ed["seed_b64"], "dkimpy-milter")
    _socket_dir(f"{SPOOL}/bench-dkimpy", "dkimpy-milter")
    conf = "/etc/dkimpy-milter/dkimpy-milter.conf"
    with open(conf) as f:
        lines = f.read().splitlines()
    settings = {"Mode": "s", "Socket": f"local:{SPOOL}/bench-dkimpy/s.sock", "UMask": "007",
                "Domain": dom, "Selector": rsa["selector"], "KeyFile": f"{kd}/rsa.key",
                "Canonicalization": "relaxed/simple", "InternalHosts": "127.0.0.1"}
    if ed:
        settings.update(SelectorEd25519=ed["selector"], KeyFileEd25519=f"{kd}/ed25519.key")
    lines = [l for l in lines if l.split()[:1] not in [[k] for k in settings] + [["SelectorEd25519"],
                                                                                  ["KeyFileEd25519"]]]
    with open(conf, "w") as f:
        f.write("\n".join(lines + [f"{k} {v}" for k, v in settings.items()]) + "\n")
    sh("systemctl restart dkimpy-milter")
    milters.append(("dkimpy", "unix:bench-dkimpy/s.sock"))
    deadline = time.monotonic() + 60  # rspamd takes a while to load its configuration
    for name, sock in milters:
        path = f"{SPOOL}/{sock.split(':', 1)[1]}"
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not os.path.exists(path):
            raise SystemExit(f"{name}: no socket {path}: "
                             + subprocess.run("journalctl -q -n 15 -o cat; tail -15 /var/log/rspamd/rspamd.log",
                                              shell=True, capture_output=True, text=True).stdout)
    versions = sh("dpkg-query -W -f '${Package} ${Version}\\n' opendkim rspamd dkimpy-milter python3-dkim")
    return {"milters": milters, "versions": versions.strip().splitlines(),
            "dns": {k["selector"]: k["dns"] for k in both}}


if __name__ == "__main__":
    spec = json.loads(sys.argv[2])
    actions = {"run": run, "capture": capture, "prepare": prepare, "opendkim": opendkim, "crypto": crypto,
               "profile": profile, "signers": signers}
    print(json.dumps(actions[sys.argv[1]](spec)))
