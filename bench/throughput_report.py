"""Figures of bench/throughput.py: CPU per message per component, medians over the
repetitions, and the report's lines (rates, ratios, where the time goes)."""

from __future__ import annotations

import statistics

GROUPS = [
    ("opendkim", {"opendkim"}), ("rspamd", {"rspamd"}), ("dkimpy-milter", {"dkimpy-milter"}),
    ("smtpd", {"smtpd"}), ("cleanup", {"cleanup"}),
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
