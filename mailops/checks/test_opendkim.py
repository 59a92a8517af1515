"""OpenDKIM signing milter (opendkim role)."""

from __future__ import annotations

KEY_DIR = "/etc/opendkim/keys"


def test_opendkim_enabled_and_running(host):
    svc = host.service("opendkim")
    assert svc.is_enabled, "opendkim is not enabled"
    assert svc.is_running, "opendkim is not running: submissions are refused with 4xx (milter_default_action=tempfail)"


def test_config_is_valid(host):
    out = host.run("opendkim -n -x /etc/opendkim.conf")
    assert out.rc == 0, f"opendkim -n rejects /etc/opendkim.conf: {out.stderr.strip()}"


def test_signing_mode(host):
    conf = host.file("/etc/opendkim.conf").content_string
    settings = {}
    for line in conf.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            settings[parts[0]] = parts[1].strip()
    assert settings.get("Mode") == "s", f"OpenDKIM Mode is {settings.get('Mode')!r}, expected s (sign)"
    assert "List-Unsubscribe-Post" in settings.get("SignHeaders", ""), "List-Unsubscribe-Post is not signed"
    assert settings.get("OversignHeaders", "").startswith("From"), "From is not oversigned"


def test_socket_reachable_by_postfix(host):
    sock = host.file("/var/spool/postfix/opendkim/opendkim.sock")
    assert sock.exists and sock.is_socket, "the OpenDKIM socket is missing from Postfix's spool"
    assert sock.group == "postfix" and sock.mode & 0o060 == 0o060, \
        f"Postfix cannot connect: socket {sock.user}:{sock.group} {oct(sock.mode)}"


def test_key_files_private(host):
    out = host.run(f"find {KEY_DIR} -type f -name '*.private'")
    files = [l for l in out.stdout.splitlines() if l]
    for path in files:
        f = host.file(path)
        assert f.user == "opendkim", f"{path} is owned by {f.user}, expected opendkim"
        assert f.mode == 0o600, f"{path} has mode {oct(f.mode)}, expected 0600"


def test_signing_table_keys_installed(host):
    signing = host.file("/etc/opendkim/SigningTable").content_string
    keytable = host.file("/etc/opendkim/KeyTable").content_string
    keys = {}
    for line in keytable.splitlines():
        if line and not line.startswith("#"):
            name, spec = line.split(None, 1)
            keys[name] = spec.split(":")[2]
    for line in signing.splitlines():
        if line and not line.startswith("#"):
            pattern, name = line.split(None, 1)
            assert name in keys, f"SigningTable uses {name}, which is not in the KeyTable"
            assert host.file(keys[name]).exists, f"key file {keys[name]} for {name} is missing"
