"""`[mqtt]` credentials and TLS from files, never inline; `laadplein check` names the file and the key; the
shipped access list is what `laadplein broker-acl` writes for the example square."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config, load_config_text
from controller.cli.broker import write_passwords
from controller.cli.check import check_main
from controller.cli.main import main as cli_main
from drivers.mqtt.acl import acl_text, broker_users
from drivers.mqtt.credentials import MqttFileError, read_password, tls_client_context

REPO = Path(__file__).resolve().parent.parent
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
sensor = true
"""


def with_mqtt(keys: str) -> str:
    return BASE + "[mqtt]\n" + keys


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "square.toml")
    return [f"{i.key_path}: {i.message}" for i in info.value.issues]


def test_an_inline_password_is_refused_and_names_the_key():
    found = issues(with_mqtt('username = "laadplein"\npassword = "secret"\n'))
    assert len(found) == 1 and found[0].startswith("mqtt.password:")


@pytest.mark.parametrize(
    ("keys", "key", "words"),
    [
        ('password_file = "pw"\n', "mqtt.username", "password_file is set"),
        ('ca_file = "ca.pem"\ncert_file = "c.pem"\n', "mqtt.key_file", "cert_file is set"),
        ('ca_file = "ca.pem"\nkey_file = "k.pem"\n', "mqtt.cert_file", "key_file is set"),
        ('cert_file = "c.pem"\nkey_file = "k.pem"\n', "mqtt.ca_file", "only sent over TLS"),
    ],
)
def test_files_that_do_not_fit_together_are_named(keys, key, words):
    found = issues(with_mqtt(keys))
    assert any(f.startswith(f"{key}:") and words in f for f in found), found


def test_relative_files_are_taken_from_the_config_files_folder(tmp_path):
    path = tmp_path / "square.toml"
    path.write_text(with_mqtt('username = "gw"\npassword_file = "secrets/pw"\nca_file = "ca.pem"\n'
                              'cert_file = "/abs/c.pem"\nkey_file = "k.pem"\n'))
    mqtt = load_config(path).mqtt
    assert (mqtt.password_file, mqtt.ca_file) == (tmp_path / "secrets" / "pw", tmp_path / "ca.pem")
    assert (mqtt.cert_file, mqtt.key_file) == (Path("/abs/c.pem"), tmp_path / "k.pem")


def test_the_password_is_the_first_line_and_an_unusable_file_is_named(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret word\nignored\n")
    assert read_password(pw) == "s3cret word"
    pw.write_text("\n")
    with pytest.raises(MqttFileError, match="empty") as info:
        read_password(pw)
    assert info.value.key == "mqtt.password_file" and str(pw) in info.value.message
    with pytest.raises(MqttFileError, match="cannot read"):
        read_password(tmp_path / "missing")


def test_the_tls_context_checks_the_brokers_certificate_and_names_a_bad_file(tmp_path):
    from tests.integration.mosquitto import make_certificate

    cert, key = make_certificate(tmp_path)
    context = tls_client_context(cert)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls_client_context(cert, cert, key)  # the same pair as a client certificate
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(MqttFileError) as info:
        tls_client_context(tmp_path / "junk.pem")
    assert info.value.key == "mqtt.ca_file" and "junk.pem" in info.value.message
    with pytest.raises(MqttFileError) as info:
        tls_client_context(cert, cert, tmp_path / "nokey.pem")
    assert info.value.key == "mqtt.key_file" and "nokey.pem" in info.value.message


def test_check_names_the_file_and_key_of_an_unreadable_password_file(tmp_path, capsys):
    path = tmp_path / "square.toml"
    path.write_text(with_mqtt('username = "gw"\npassword_file = "missing-pw"\nca_file = "missing-ca.pem"\n'))
    assert check_main(str(path)) == 2
    out = capsys.readouterr().out.splitlines()
    line_of = {key: n for n, key in enumerate(path.read_text().splitlines(), 1) for key in [key.split(" ")[0]]}
    assert any(re.fullmatch(rf"{re.escape(str(path))}:{line_of['password_file']}: mqtt\.password_file: .*missing-pw.*", o)
               for o in out), out
    assert any(re.fullmatch(rf"{re.escape(str(path))}:{line_of['ca_file']}: mqtt\.ca_file: .*missing-ca\.pem.*", o)
               for o in out), out


def test_the_shipped_access_list_is_the_one_broker_acl_writes_for_the_example(capsys):
    example = REPO / "config" / "examples" / "hoofddorp-marktplein.toml"
    assert cli_main(["broker-acl", "--config", str(example)]) == 0
    assert capsys.readouterr().out == (REPO / "scripts" / "mosquitto" / "laadplein.acl").read_text()


def test_each_device_has_its_own_user_and_only_its_own_topics():
    text = acl_text("lp/t", [("B01", True), ("B02", False)], "gw")
    blocks = {b.split("\n")[0].removeprefix("user "): b for b in ("\n" + text).split("\nuser ")[1:]}
    assert list(blocks) == broker_users([("B01", True), ("B02", False)], "gw") == [
        "gw", "dashboard", "light-B01", "sensor-B01", "light-B02"]
    writes = {user: sorted(re.findall(r"^topic (?:write|readwrite) (\S+)", b, re.MULTILINE)) for user, b in blocks.items()}
    assert writes == {"gw": ["lp/t/#"], "dashboard": [], "light-B01": ["lp/t/bays/B01/light/ack"],
                      "sensor-B01": ["lp/t/bays/B01/occupancy"], "light-B02": ["lp/t/bays/B02/light/ack"]}
    assert "pattern" not in text and "\ntopic" not in text.split("\nuser ")[0]  # nothing for anonymous clients


def test_passwords_are_new_random_and_private(tmp_path):
    path = tmp_path / "pw.txt"
    made = write_passwords(path, ["gw", "light-B01"])
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "".join(f"{u}:{p}\n" for u, p in made.items())
    assert len(set(made.values())) == 2 and all(len(p) >= 32 for p in made.values())
    with pytest.raises(FileExistsError):
        write_passwords(path, ["gw"])
