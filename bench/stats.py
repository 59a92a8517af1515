"""Benchmark: streaming Postfix log statistics (mailops.ops.postfixlog).

    .venv/bin/python bench/stats.py [--lines 1000000] [--format iso|rfc3339|syslog] [--rounds 3] [--compare-with DIR]

Writes a synthetic Postfix 3.7 log (submission smtpd, cleanup, opendkim, qmgr,
smtp sent/deferred/bounced with retries, TLS noise, port-25 NOQUEUE rejects,
removed) to a temporary file at 10%, 30% and 100% of --lines, and parses each
as `mailops stats --file` does (mailops.ops.logs.collect_local: blocks of 128 KiB,
whole lines parsed as one string): wall time and lines/second (without
tracemalloc), then the peak memory of the parse (tracemalloc) and the process's
max RSS.  Delivered mail
goes to a pool of 20,000 addresses, bounces to 300 of them and deferrals to
500 (the same bad and greylisting mailboxes keep being mailed), and the
deferred queue holds at most 300 messages (the oldest expire), so the
distinct keys (domains, hours, reasons, failing recipients) saturate: the
peak memory should stay nearly flat as the log grows, while per-queue state
is dropped on "removed".

Then, side by side on the same --lines log in traditional syslog format (the only
one pflogsumm reads), when pflogsumm is installed (apt-get install pflogsumm):
`mailops stats --file LOG --json` and `pflogsumm LOG` as processes, --rounds
rounds alternating, each process's wall time and max RSS (wait4), the parse alone
in-process (collect_local, as above), the ratios, and the totals both tools count
(they must agree).  --compare-with DIR runs the CLI of DIR's mailops package (e.g. a
worktree of the commit before a change) in the same rounds, and checks its whole JSON
report equals this tree's.  The load average is printed before and after: the machine may
be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailops.ops.logs import collect_local  # noqa: E402
from mailops.ops.postfixlog import LogStats  # noqa: E402

START = datetime(2026, 11, 22, 0, 0, 0, tzinfo=timezone.utc)
DOMAINS = [f"{name}.test" for name in ("inbox", "gmail", "outlook", "yahoo", "gmx", "web", "orange", "free",
                                        "icloud", "proton")] + [f"corp{i:02d}.test" for i in range(30)]
RECIPIENTS = [f"user{i:05d}@{DOMAINS[i % len(DOMAINS)]}" for i in range(20_000)]
# the same bad addresses keep being mailed, and a few mailboxes keep greylisting
BOUNCING = RECIPIENTS[:300]
GREYLISTING = RECIPIENTS[300:800]
MAX_DEFERRED_QUEUE = 300
SENDERS = ["news@shop.test", "orders@shop.test", "digest@news.test"]
HOSTNAME = "mta1"


def _stamp(moment: datetime, fmt: str) -> str:
    if fmt == "iso":
        return moment.strftime("%Y-%m-%dT%H:%M:%S+0000")
    if fmt == "rfc3339":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    return moment.strftime("%b %e %H:%M:%S")     # "Nov  2 16:50:01": day padded with a space


def synthetic_log(n_lines: int, fmt: str = "iso", seed: int = 7) -> Iterator[str]:
    """Yields exactly n_lines lines of a busy sending server's log."""
    rng = random.Random(seed)
    moment = START
    stamp = _stamp(moment, fmt)
    emitted = 0
    serial = 0
    retry_queue: list[tuple[str, str, str]] = []   # (queue id, sender, recipient) deferred, to retry

    def line(program: str, pid: int, msg: str) -> str:
        return f"{stamp} {HOSTNAME} {program}[{pid}]: {msg}\n"

    def qmgr(msg: str) -> str:
        return line("postfix/qmgr", 900, msg)

    def mx_of(rcpt: str) -> str:
        return f"mx.{rcpt.split('@')[1]}[198.51.100.{rng.randrange(2, 250)}]:25"

    def queue_id() -> str:
        return f"{rng.getrandbits(40):010X}"

    while emitted < n_lines:
        if rng.random() < 0.1:                     # about ten lines per second of log time
            moment += timedelta(seconds=1)
            stamp = _stamp(moment, fmt)
        batch: list[str] = []
        roll = rng.random()
        if retry_queue and roll < 0.06:            # qmgr retries a deferred message
            qid, sender, rcpt = retry_queue.pop(rng.randrange(len(retry_queue)))
            smtp_pid = 3100 + rng.randrange(50)
            batch.append(qmgr(f"{qid}: from=<{sender}>, size=4211, nrcpt=1 (queue active)"))
            if rng.random() < 0.7:
                batch.append(line("postfix/smtp", smtp_pid,
                                  f"{qid}: to=<{rcpt}>, relay={mx_of(rcpt)}, delay=1900, delays=1899/0.01/0.3/0.4, "
                                  f"dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {queue_id()})"))
                batch.append(qmgr(f"{qid}: removed"))
            else:
                batch.append(line("postfix/smtp", smtp_pid,
                                  f"{qid}: to=<{rcpt}>, relay=none, delay=3900, delays=3899/0.01/30/0, dsn=4.4.1, "
                                  f"status=deferred (connect to {mx_of(rcpt)}: Connection timed out)"))
                retry_queue.append((qid, sender, rcpt))
        elif roll < 0.12:                          # a relay attempt on port 25
            ip = f"203.0.113.{rng.randrange(1, 255)}"
            rcpt = f"x{rng.randrange(500)}@elsewhere.test"
            batch.append(line("postfix/smtpd", 2000, f"connect from unknown[{ip}]"))
            batch.append(line("postfix/smtpd", 2000,
                              f"NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 <{rcpt}>: Relay access denied; "
                              f"from=<spam{rng.randrange(10**6)}@bulk.test> to=<{rcpt}> proto=ESMTP helo=<[{ip}]>"))
            batch.append(line("postfix/smtpd", 2000,
                              f"disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=0/1 rset=1 quit=1 commands=4/5"))
        else:                                      # the application submits a message on 587
            serial += 1
            qid = f"{(serial * 2654435761) & 0xFFFFFFFFFF:010X}"
            sender = SENDERS[serial % len(SENDERS)]
            fate = rng.random()
            pool = RECIPIENTS if fate < 0.86 else GREYLISTING if fate < 0.95 else BOUNCING
            rcpt = pool[rng.randrange(len(pool))]
            pid, smtp_pid = 1500 + rng.randrange(20), 3100 + rng.randrange(50)
            client = "app.shop.test[198.51.100.50]"
            batch.append(line("postfix/submission/smtpd", pid, f"connect from {client}"))
            batch.append(line("postfix/submission/smtpd", pid,
                              f"{qid}: client={client}, sasl_method=PLAIN, sasl_username={sender}"))
            batch.append(line("postfix/cleanup", 1700, f"{qid}: message-id=<{serial}.{rng.getrandbits(32):x}@shop.test>"))
            batch.append(line("opendkim", 600, f"{qid}: DKIM-SIGNATURE field added (s=mo2026, d=shop.test)"))
            batch.append(qmgr(f"{qid}: from=<{sender}>, size={rng.randrange(2000, 90000)}, nrcpt=1 (queue active)"))
            batch.append(line("postfix/submission/smtpd", pid, f"disconnect from {client} ehlo=2 starttls=1 auth=1 "
                                                               "mail=1 rcpt=1 data=1 quit=1 commands=8"))
            mx = mx_of(rcpt)
            batch.append(line("postfix/smtp", smtp_pid, f"Trusted TLS connection established to {mx}: TLSv1.3 "
                                                        "with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"))
            head = f"{qid}: to=<{rcpt}>, relay={mx}, delay=0.{rng.randrange(10, 99)}, delays=0.05/0.01/0.2/0.3, "
            said = f"host {mx[:-3]} said:"
            if fate < 0.86:
                batch.append(line("postfix/smtp", smtp_pid,
                                  head + f"dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {queue_id()})"))
                batch.append(qmgr(f"{qid}: removed"))
            elif fate < 0.95:
                batch.append(line("postfix/smtp", smtp_pid,
                                  head + f"dsn=4.2.1, status=deferred ({said} 450 4.2.1 <{rcpt}>: "
                                  "Recipient address rejected: try later (in reply to RCPT TO command))"))
                retry_queue.append((qid, sender, rcpt))
            else:
                if fate < 0.985:
                    dsn, text = "5.1.1", f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
                else:
                    dsn, text = "5.7.1", f"550 5.7.1 Message rejected as spam, ref {rng.getrandbits(48):012x}"
                batch.append(line("postfix/smtp", smtp_pid, head + f"dsn={dsn}, status=bounced "
                                                                   f"({said} {text} (in reply to end of DATA command))"))
                batch.append(line("postfix/cleanup", 1700, f"{qid[::-1]}: message-id=<{serial}.bounce@mta1.shop.test>"))
                batch.append(line("postfix/bounce", 1800, f"{qid}: sender non-delivery notification: {qid[::-1]}"))
                batch.append(qmgr(f"{qid}: removed"))
        if len(retry_queue) > MAX_DEFERRED_QUEUE:  # the oldest reaches maximal_queue_lifetime
            old_qid, old_sender, _ = retry_queue.pop(0)
            batch.append(qmgr(f"{old_qid}: from=<{old_sender}>, status=expired, returned to sender"))
            batch.append(qmgr(f"{old_qid}: removed"))
        for text in batch:
            if emitted >= n_lines:
                return
            emitted += 1
            yield text


def parse_file(path: Path) -> tuple[LogStats, float]:
    started = time.perf_counter()
    stats = collect_local(path, now=START + timedelta(days=30))
    return stats, time.perf_counter() - started


def load() -> str:
    return "load average " + " ".join(f"{n:.2f}" for n in os.getloadavg())


def run_process(argv: list[str], env: dict | None = None) -> tuple[float, float, bytes]:
    """Wall seconds, max RSS in MiB (of this child alone, from wait4) and stdout of one process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{argv[0]} exited {proc.returncode}")
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, out.read()


def pflogsumm_totals(text: str) -> dict[str, int]:
    """pflogsumm's Grand Totals in mailops's terms (its "deferred (N deferrals)": N)."""
    import re
    found = {}
    for name, pattern in (("sent", r"(\d+)\s+delivered"), ("deferred", r"deferred\s+\((\d+)\s+deferrals\)"),
                          ("bounced", r"(\d+)\s+bounced"), ("rejected", r"(\d+)\s+rejected")):
        match = re.search(pattern, text)
        found[name] = int(match.group(1)) if match else -1
    return found


def side_by_side(lines: int, rounds: int, tmp: str, compare_with: Path | None = None) -> None:
    pflogsumm = shutil.which("pflogsumm")
    if pflogsumm is None:
        print("pflogsumm is not installed (apt-get install pflogsumm): no side-by-side comparison")
        return
    path = Path(tmp) / "mail-syslog.log"
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(synthetic_log(lines, "syslog"))
    mailops = str(Path(sys.executable).with_name("mailops"))
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "pflogsumm"], capture_output=True,
                             text=True).stdout or "?"
    runs: dict[str, list[tuple[float, float]]] = {"mailops stats": [], "pflogsumm": [], "parse only": []}
    if compare_with is not None:
        runs["other tree"] = []
        other_env = {**os.environ, "PYTHONPATH": str(compare_with)}    # its mailops package, this interpreter
    same_report = True
    for _ in range(rounds):           # alternating, so a busy moment of the machine hits both
        wall, rss, out = run_process([mailops, "stats", "--file", str(path), "--json"])
        runs["mailops stats"].append((wall, rss))
        report = json.loads(out)
        ours = report["totals"]
        if compare_with is not None:
            wall, rss, out = run_process([mailops, "stats", "--file", str(path), "--json"], env=other_env)
            runs["other tree"].append((wall, rss))
            same_report = same_report and json.loads(out) == report
        wall, rss, out = run_process([pflogsumm, str(path)])
        runs["pflogsumm"].append((wall, rss))
        theirs = pflogsumm_totals(out.decode("utf-8", "replace"))
        stats, seconds = parse_file(path)
        runs["parse only"].append((seconds, 0.0))
    print(f"side by side, {lines:,} syslog-format lines, best of {rounds} alternating rounds "
          f"(pflogsumm {version}, Perl; mailops through its CLI, Python {platform.python_version()}):")
    print(f"{'':>24} {'wall s':>7} {'lines/s':>10} {'max RSS MiB':>12}  rounds")
    best = {}
    for name, rs in runs.items():
        wall = min(w for w, _ in rs)
        rss = max(r for _, r in rs)
        best[name] = (wall, rss)
        label = {"mailops stats": "mailops stats --file", "pflogsumm": "pflogsumm",
                 "parse only": "mailops parse only", "other tree": "--compare-with tree"}[name]
        rounds_text = ", ".join(f"{w:.2f}" for w, _ in rs)
        print(f"{label:>24} {wall:>7.2f} {lines / wall:>10,.0f} "
              + (f"{rss:>12.1f}" if rss else f"{'(in-process)':>12}") + f"  [{rounds_text}]")
    ratio = best["pflogsumm"][0] / best["mailops stats"][0]
    print(f"mailops / pflogsumm: lines/s {ratio:.2f} x through the CLI (goal of issue 17: >= 4 x: "
          f"{'met' if ratio >= 4 else 'NOT met'}), {best['pflogsumm'][0] / best['parse only'][0]:.2f} x the parse "
          f"alone; max RSS {best['mailops stats'][1] / best['pflogsumm'][1]:.2f} x")
    if compare_with is not None:
        other = best["other tree"][0]
        print(f"--compare-with {compare_with}: {other:.2f} s through the CLI, {best['pflogsumm'][0] / other:.2f} x "
              f"pflogsumm; this tree {other / best['mailops stats'][0]:.2f} x faster; the whole JSON report "
              + ("the same in every round" if same_report else "DIFFERS"))
    agree = all(ours[k] == theirs[k] for k in theirs)
    print("totals, mailops: " + ", ".join(f"{k} {ours[k]}" for k in theirs) + "; pflogsumm: "
          + ", ".join(f"{k} {v}" for k, v in theirs.items()) + ("  (the same)" if agree else "  <-- DIFFER"))
    print(f"after the side-by-side rounds: {load()}")
    path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="largest log (also run at 10%% and 30%%)")
    ap.add_argument("--format", choices=("iso", "rfc3339", "syslog"), default="iso")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the side-by-side run with pflogsumm")
    ap.add_argument("--compare-with", type=Path, metavar="DIR",
                    help="also run the CLI of the mailops package in DIR (e.g. a worktree of an older commit) "
                         "in the same rounds, and compare its whole JSON report")
    args = ap.parse_args()

    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}  {platform.node()}  {os.cpu_count()} CPUs  "
          f"Python {platform.python_version()}  timestamps: {args.format}  {load()}")
    sizes = sorted({max(1, args.lines // 10), max(1, args.lines * 3 // 10), args.lines})
    header = (f"{'lines':>10} {'gen s':>7} {'parse s':>8} {'lines/s':>10} {'peak MiB':>9} {'maxrss MiB':>11} "
              f"{'in-flight':>9} {'soft':>6} {'hard':>6} {'reasons':>7}")
    print(header)
    peaks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="mailops-bench-") as tmp:
        for size in sizes:
            path = Path(tmp) / f"mail-{size}.log"
            started = time.perf_counter()
            with open(path, "w", encoding="utf-8") as out:
                out.writelines(synthetic_log(size, args.format))
            generated = time.perf_counter() - started

            stats, seconds = parse_file(path)           # timed without tracemalloc's overhead
            tracemalloc.start()
            traced, _ = parse_file(path)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            peaks[size] = peak / 2**20
            hard, soft = stats.bounces.counts()
            print(f"{size:>10,} {generated:>7.1f} {seconds:>8.2f} {size / seconds:>10,.0f} {peaks[size]:>9.2f} "
                  f"{maxrss_mib:>11.1f} {stats.inflight:>9,} {soft:>6,} {hard:>6,} {len(stats.reasons):>7,}")
            path.unlink()
        side_by_side(args.lines, args.rounds, tmp, args.compare_with)
    smallest, largest = sizes[0], sizes[-1]
    print(f"peak memory {largest:,} / {smallest:,} lines: {peaks[largest] / peaks[smallest]:.2f} x "
          f"(lines {largest / smallest:.0f} x)")
    report = stats.report(top=3)
    print("last run totals:", report["totals"], " ndr_sent:", report["ndr_sent"])
    for row in report["top_reasons"]:
        print(f"  {row['count']:>7,} {row['status']:<8} {row['reason']}")


if __name__ == "__main__":
    main()
