"""The gateway secret as a systemd credential ($CREDENTIALS_DIRECTORY), the secret file otherwise."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controller.store.secrets import (
    CREDENTIAL_NAME,
    SECRET_BYTES,
    SecretError,
    load_or_create_secret,
)


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    """A credentials directory as systemd hands it to the service: 0400 files of the service user."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    secret = folder / CREDENTIAL_NAME
    secret.write_bytes(os.urandom(SECRET_BYTES))
    secret.chmod(0o400)
    return folder


def test_the_credential_is_the_secret_and_nothing_is_written(tmp_path: Path, credentials: Path, caplog) -> None:
    state = tmp_path / "state"
    path = state / "laadplein.secret"
    secret = load_or_create_secret(path, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert secret == (credentials / CREDENTIAL_NAME).read_bytes()
    assert not state.exists()  # no plain copy made beside the database
    assert load_or_create_secret(path, {"CREDENTIALS_DIRECTORY": str(credentials)}) == secret
    assert "readable by other users" not in caplog.text


def test_the_same_secret_left_on_disk_is_used_with_a_warning(tmp_path: Path, credentials: Path, caplog) -> None:
    path = tmp_path / "laadplein.secret"
    path.write_bytes((credentials / CREDENTIAL_NAME).read_bytes())
    path.chmod(0o600)
    assert load_or_create_secret(path, {"CREDENTIALS_DIRECTORY": str(credentials)}) == path.read_bytes()
    assert f"{path} is the credential {CREDENTIAL_NAME} unencrypted: remove it" in caplog.text


def test_another_secret_on_disk_is_refused_and_kept(tmp_path: Path, credentials: Path) -> None:
    path = tmp_path / "laadplein.secret"
    old = os.urandom(SECRET_BYTES)
    path.write_bytes(old)
    with pytest.raises(SecretError, match="different gateway secrets"):
        load_or_create_secret(path, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert path.read_bytes() == old


def test_a_credential_of_the_wrong_size_is_refused(tmp_path: Path, credentials: Path) -> None:
    (credentials / CREDENTIAL_NAME).chmod(0o600)
    (credentials / CREDENTIAL_NAME).write_bytes(b"not 32 bytes\n")
    with pytest.raises(SecretError, match="32 bytes"):
        load_or_create_secret(tmp_path / "laadplein.secret", {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert not (tmp_path / "laadplein.secret").exists()


@pytest.mark.parametrize("env", [{}, {"CREDENTIALS_DIRECTORY": ""}, {"CREDENTIALS_DIRECTORY": "other"}])
def test_without_the_credential_the_file_is_made_as_before(tmp_path: Path, env: dict[str, str]) -> None:
    if env.get("CREDENTIALS_DIRECTORY") == "other":  # credentials of other names only
        folder = tmp_path / "credentials"
        folder.mkdir()
        (folder / "api-token").write_text("x")
        env = {"CREDENTIALS_DIRECTORY": str(folder)}
    path = tmp_path / "state" / "laadplein.secret"
    secret = load_or_create_secret(path, env)
    assert path.read_bytes() == secret and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_daemon_reads_the_process_environment(tmp_path: Path, credentials: Path, monkeypatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    path = tmp_path / "laadplein.secret"
    assert load_or_create_secret(path) == (credentials / CREDENTIAL_NAME).read_bytes()
    assert not path.exists()
