"""The admin API's token file (made 0600 at first start, refused when others may read it) and the
`[api]` config: where the token lives by default, TLS off loopback, the limits' bounds."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config, load_config_text
from config.schema_links import loopback_host
from controller.api.token import TokenFileError, load_or_create_token

BASE = """
[site]
id = "t"
[grid]
limit_a = 80
[[chargers]]
id = "CP01"
max_current_a = 32
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
"""


def test_a_missing_token_file_is_made_owner_only_with_a_random_token_and_only_its_name_is_logged(tmp_path, caplog):
    path = tmp_path / "state" / "api-token"
    with caplog.at_level(logging.INFO, logger="laadplein.api"):
        token = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n" and len(token) >= 40
    assert str(path) in caplog.text and token not in caplog.text
    assert load_or_create_token(path) == token  # the next start reads it
    assert load_or_create_token(tmp_path / "other") != token


def test_the_file_is_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        load_or_create_token(tmp_path / "api-token")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "api-token").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o644])
def test_a_token_file_others_may_read_or_change_is_refused_naming_the_file(tmp_path, mode):
    path = tmp_path / "api-token"
    path.write_text("a-token-long-enough-for-the-api\n")
    path.chmod(mode)
    with pytest.raises(TokenFileError) as refused:
        load_or_create_token(path)
    assert str(path) in str(refused.value) and "chmod 600" in str(refused.value)
    assert path.read_text() == "a-token-long-enough-for-the-api\n"  # left alone


@pytest.mark.parametrize("content", ["", "short\n", "two words-in-a-long-token\n"])
def test_an_empty_short_or_spaced_token_is_refused(tmp_path, content):
    path = tmp_path / "api-token"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(TokenFileError):
        load_or_create_token(path)


def test_a_token_file_that_cannot_be_made_is_a_clear_error(tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(TokenFileError, match="cannot") as refused:
        load_or_create_token(tmp_path / "not-a-folder" / "api-token")
    assert str(tmp_path / "not-a-folder" / "api-token") in str(refused.value)


def test_the_default_token_file_lies_beside_the_database(tmp_path):
    (tmp_path / "square.toml").write_text(BASE + '[storage]\npath = "db/laadplein.db"\n')
    assert load_config(tmp_path / "square.toml").api_token_file == tmp_path / "db" / "api-token"
    assert load_config_text(BASE).api_token_file == Path("/var/lib/laadplein/api-token")
    (tmp_path / "square.toml").write_text(BASE + '[api]\ntoken_file = "secret/token"\n')
    assert load_config(tmp_path / "square.toml").api_token_file == tmp_path / "secret" / "token"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "gateway.example"])
def test_a_non_loopback_api_host_needs_tls(host):
    with pytest.raises(ConfigError) as refused:
        load_config_text(BASE + f'[api]\nhost = "{host}"\n', "square.toml")
    (issue,) = refused.value.issues
    assert issue.key_path == "api.host" and "TLS" in issue.message and "cert_file" in issue.message
    square = load_config_text(BASE + f'[api]\nhost = "{host}"\ncert_file = "c.pem"\nkey_file = "k.pem"\n', "s.toml",
                              base_dir="/etc/laadplein")
    assert square.api.cert_file == Path("/etc/laadplein/c.pem")


def test_tls_takes_both_files():
    with pytest.raises(ConfigError) as refused:
        load_config_text(BASE + '[api]\ncert_file = "c.pem"\n', "square.toml")
    assert [i.key_path for i in refused.value.issues] == ["api.key_file"]


@pytest.mark.parametrize(("key", "value"), [("max_connections", 3), ("max_connections", 1025),
                                            ("request_timeout_s", 0.5), ("request_timeout_s", 121),
                                            ("host_names", ["evil host"]), ("allow_risky_calls", "yes")])
def test_api_limits_have_bounds(key, value):
    shown = f'"{value}"' if isinstance(value, str) else str(value).replace("'", '"')
    with pytest.raises(ConfigError):
        load_config_text(BASE + f"[api]\n{key} = {shown}\n", "square.toml")


def test_loopback_hosts():
    assert all(map(loopback_host, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"]))
    assert not any(map(loopback_host, ["0.0.0.0", "::", "10.0.0.1", "gateway", ""]))
