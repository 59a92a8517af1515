"""Cached Debian root filesystems the lab machines are copied from.

* ``base``: what a new cloud server has: systemd, SSH and python3, nothing else;
  one per Debian suite (``trixie-base``, ``bookworm-base``).
* ``receiver``: base plus the receiving MTA stack (Postfix, OpenDKIM in verify
  mode, OpenDMARC, the SPF policy daemon) and the mailbox side (Dovecot IMAP,
  LMTP and Sieve).

Images are built into a temporary directory and renamed into place, so an
interrupted build never leaves a half image that later runs would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from mailops.errors import MailopsError
from mailops.lab.config import SUITES, LabConfig, Machine
from mailops.lab.system import run

BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2")
RECEIVER_PACKAGES = ("postfix", "opendkim", "opendkim-tools", "opendmarc", "postfix-policyd-spf-python",
                     "bind9-dnsutils",
                     # the mailbox side: IMAP for verify's seed mailbox, LMTP + Sieve to file into Junk
                     "dovecot-imapd", "dovecot-lmtpd", "dovecot-sieve")
IMAGE_VERSION = 2  # bump when what goes into an image changes
MARKER = ".mailops-image.json"


def image_path(cfg: LabConfig, name: str, suite: str | None = None) -> Path:
    return cfg.images_dir / f"{suite or cfg.suite}-{name}"


def machine_image(cfg: LabConfig, m: Machine, suite: str | None = None) -> tuple[Path, str]:
    """The image a new copy of machine m is made from, and its suite."""
    suite = suite or cfg.suite_for(m)
    return image_path(cfg, "receiver" if m.role == "receiver" else "base", suite), suite


def image_info(cfg: LabConfig, name: str, suite: str | None = None) -> dict | None:
    try:
        info = json.loads((image_path(cfg, name, suite) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("version") == IMAGE_VERSION else None


def disk_usage(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def _finish(cfg: LabConfig, name: str, suite: str, tmp: Path, started: float, extra: dict) -> dict:
    info = {"version": IMAGE_VERSION, "name": name, "suite": suite, "built_at": time.time(),
            "build_seconds": round(time.monotonic() - started, 1), **extra}
    (tmp / MARKER).write_text(json.dumps(info, indent=2))
    final = image_path(cfg, name, suite)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    info["bytes"] = disk_usage(final)
    (final / MARKER).write_text(json.dumps(info, indent=2))
    return info


def _scrub(root: Path) -> None:
    """Remove per-machine identity so every copy becomes a distinct machine."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.is_symlink() or dbus_id.exists():
        dbus_id.unlink()
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for lists in (root / "var/lib/apt/lists").glob("*_dists_*"):
        lists.unlink()


def build_base(cfg: LabConfig, suite: str, log) -> dict:
    cfg.images_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.images_dir / f".{suite}-base.building"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    log(f"building the base image with debootstrap ({suite}, {cfg.mirror}); takes 1-2 minutes once")
    try:
        run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), suite, str(tmp),
             cfg.mirror], "building the lab base image (debootstrap)", timeout=1200)
        _scrub(tmp)
        # The image's apt must reach the mirror the way the proxy will ask for it.
        (tmp / "etc/apt/sources.list").write_text(
            f"deb {cfg.mirror} {suite} main\n"
            f"deb {cfg.mirror} {suite}-updates main\n"
            f"deb {cfg.mirror.rsplit('/debian', 1)[0]}/debian-security {suite}-security main\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _finish(cfg, "base", suite, tmp, started, {"packages": list(BASE_PACKAGES)})


def build_receiver(cfg: LabConfig, suite: str, log) -> dict:
    base = image_path(cfg, "base", suite)
    tmp = cfg.images_dir / f".{suite}-receiver.building"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    log(f"building the {suite} receiving-host image (postfix, opendkim, opendmarc, policyd-spf, dovecot)")
    try:
        run(["cp", "-a", str(base), str(tmp)], "copying the base image")
        (tmp / MARKER).unlink(missing_ok=True)
        # No services may start inside the build; they start when the machine boots.
        policy = tmp / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (tmp / "etc/resolv.conf").unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", tmp / "etc/resolv.conf")
        script = ("set -e; export DEBIAN_FRONTEND=noninteractive; "
                  "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; "
                  "apt-get -q update; apt-get -q -y --no-install-recommends install " + " ".join(RECEIVER_PACKAGES)
                  + "; apt-get clean")
        run(["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--resolv-conf=off", "-D", str(tmp),
             "/bin/sh", "-c", script], "installing the receiving host's packages", timeout=1200)
        policy.unlink()
        _scrub(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _finish(cfg, "receiver", suite, tmp, started, {"packages": list(BASE_PACKAGES + RECEIVER_PACKAGES)})


def ensure_images(cfg: LabConfig, log) -> dict[str, dict]:
    """Build missing images: a base image of every supported suite (the lab's VPSes may be
    re-installed with either, and the cloud emulator offers both), the receiver image of the
    receiver's suite; return {"<suite>-<name>": info} with 'built': True for new ones."""
    wanted = [(suite, "base") for suite in SUITES]
    wanted.append((cfg.suite_for(cfg.receiver), "receiver"))
    return {f"{suite}-{name}": ensure_image(cfg, name, suite, log) for suite, name in wanted}


def ensure_image(cfg: LabConfig, name: str, suite: str, log) -> dict:
    """One image, built if missing (the receiver image needs the base image of its suite)."""
    info = image_info(cfg, name, suite)
    if info is not None:
        return {**info, "built": False}
    if name == "receiver":
        ensure_image(cfg, "base", suite, log)
    info = {"base": build_base, "receiver": build_receiver}[name](cfg, suite, log)
    return {**info, "built": True}


def remove_images(cfg: LabConfig) -> None:
    if cfg.images_dir.exists():
        shutil.rmtree(cfg.images_dir)
    if not any(cfg.cache_dir.iterdir()) if cfg.cache_dir.exists() else False:
        cfg.cache_dir.rmdir()


def check_image(cfg: LabConfig, name: str, suite: str | None = None) -> None:
    if image_info(cfg, name, suite) is None:
        raise MailopsError(f"lab image {suite or cfg.suite}-{name} is missing; run `mailops lab up` to build it")
