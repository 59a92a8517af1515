"""Tokens with a line break or a non-ASCII character (issue 14 item 10): one line saying what is wrong
with the token, never the token, never 'cannot reach the API' or a traceback.

A file secret loses the line break(s) at its end (``echo TOKEN > file`` writes one): that is the
documented behaviour and stays; a break inside it, or at the end of an environment variable, is refused."""

from __future__ import annotations

import pytest

from mailops.dns.providers.cloudflare import CloudflareProvider
from mailops.dns.providers.hcloud import HcloudReverseProvider
from mailops.errors import MailopsError
from mailops.inventory.scalars import EnvSecret, FileSecret
from mailops.inventory.secrets import resolve

TOKEN = "s3cr3t-T0ken_value"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\n\n"])
def test_file_secret_loses_the_line_break_echo_writes(tmp_path, ending):
    (tmp_path / "token").write_bytes((TOKEN + ending).encode())
    assert resolve(FileSecret(file="token"), tmp_path) == TOKEN


@pytest.mark.parametrize("value, said", [(TOKEN + "\n", "ends in a line break"), (TOKEN + "\r", "ends in a line break"),
                                         (TOKEN[:4] + "\r\n" + TOKEN[4:], "has at position 5 a line break"),
                                         (TOKEN + "\x1b", r"ends in a control character \(U\+001B\)")])
def test_env_secret_with_a_control_character_is_refused_without_the_value(monkeypatch, value, said):
    monkeypatch.setenv("MO_TEST_TOKEN", value)
    with pytest.raises(MailopsError, match=rf"secret \{{env: MO_TEST_TOKEN\}}: environment variable MO_TEST_TOKEN "
                                           rf"{said}; write only the secret there") as err:
        resolve(EnvSecret(env="MO_TEST_TOKEN"), "/")
    assert TOKEN not in str(err.value) and TOKEN[4:] not in str(err.value)


def test_file_secret_with_a_line_break_inside_is_refused(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\nsecond-line\n")
    with pytest.raises(MailopsError, match=rf"{tmp_path / 'token'} has at position {len(TOKEN) + 1} a line break") as err:
        resolve(FileSecret(file="token"), tmp_path)
    assert TOKEN not in str(err.value)


@pytest.mark.parametrize("make, setting", [
    (lambda t: CloudflareProvider("cf", t, "http://127.0.0.1:9"), "mailops_dns_providers.cf"),
    (lambda t: HcloudReverseProvider("cf", t, "http://127.0.0.1:9"), "mailops_reverse_dns_providers.cf")])
@pytest.mark.parametrize("token, said", [(TOKEN + "é", f"a non-ASCII character at position {len(TOKEN) + 1}"),
                                         ("ab cd", "a space at position 3")])
def test_provider_refuses_a_token_that_cannot_be_a_header(make, setting, token, said):
    with pytest.raises(MailopsError, match=rf"the API token has {said} \(API tokens are printable ASCII\); "
                                           rf"put the token exactly as .* in api_token of {setting}") as err:
        make(token)
    assert token not in str(err.value)
