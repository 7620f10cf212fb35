"""The OCPP endpoint's TLS (wss://, security profile 2): certificates, key checks and the cipher suites.

OCPP 2.0.1 part 2 (A00.FR.318) asks the central system to offer TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_RSA_WITH_AES_128_GCM_SHA256 and TLS_RSA_WITH_AES_256_GCM_SHA384.
Python's default server ciphers have no static-RSA suite, so the list is set here; the ECDSA suites need an
ECDSA certificate, which stands beside an RSA one on the same context.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["OCPP_TLS12_CIPHERS", "TlsFileError", "tls_server_context"]

# TLS 1.2 suites, OpenSSL names: the four of A00.FR.318, and the ECDHE_RSA GCM pair (forward secrecy for an
# RSA certificate). TLS 1.3 keeps OpenSSL's own suites.
OCPP_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:"  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    "ECDHE-ECDSA-AES256-GCM-SHA384:"  # TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    "ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES256-GCM-SHA384:"
    "AES128-GCM-SHA256:"  # TLS_RSA_WITH_AES_128_GCM_SHA256
    "AES256-GCM-SHA384"  # TLS_RSA_WITH_AES_256_GCM_SHA384
)


class TlsFileError(ValueError):
    """The TLS certificate or key file cannot be used: `key` is the config key, `message` names the file."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def tls_server_context(
    cert_file: Path,
    key_file: Path,
    ecdsa_cert_file: Path | None = None,
    ecdsa_key_file: Path | None = None,
) -> ssl.SSLContext:
    """The server side of wss:// (security profile 2): the gateway's certificate chain and key, TLS 1.2 or newer,
    the cipher suites OCPP asks for; and an ECDSA pair beside an RSA one when `ecdsa_cert_file` is given.

    Raises TlsFileError naming the file that is missing, unreadable, not a PEM certificate or key,
    a key that does not belong to the certificate, or an ECDSA pair beside a certificate that is not RSA.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # OCPP security whitepaper: TLS 1.2 or newer
    context.set_ciphers(OCPP_TLS12_CIPHERS)
    main_is_ec = _load_pair(context, Path(cert_file), Path(key_file), "ocpp.tls_cert_file", "ocpp.tls_key_file")
    if ecdsa_cert_file is not None and ecdsa_key_file is not None:
        ecdsa_cert_file, ecdsa_key_file = Path(ecdsa_cert_file), Path(ecdsa_key_file)
        if main_is_ec:
            raise TlsFileError("ocpp.tls_cert_file", f"{cert_file}: an ECDSA certificate, and tls_ecdsa_cert_file "
                               f"is set too; the ECDSA pair stands beside an RSA one (OpenSSL keeps one of each kind)")
        is_ec = _load_pair(context, ecdsa_cert_file, ecdsa_key_file, "ocpp.tls_ecdsa_cert_file", "ocpp.tls_ecdsa_key_file")
        if not is_ec:
            raise TlsFileError("ocpp.tls_ecdsa_cert_file", f"{ecdsa_cert_file}: not an ECDSA certificate; "
                               "an RSA one belongs in tls_cert_file")
    return context


def _load_pair(context: ssl.SSLContext, cert_file: Path, key_file: Path, cert_key: str, key_key: str) -> bool:
    """Load one certificate chain and its key into `context`; True when the certificate's key is ECDSA."""
    cert_text = _read_pem(cert_key, cert_file)
    key_text = _read_pem(key_key, key_file)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise TlsFileError(cert_key, f"{cert_file}: not a PEM certificate (no BEGIN CERTIFICATE line)")
    if "PRIVATE KEY-----" not in key_text:
        raise TlsFileError(key_key, f"{key_file}: not a PEM private key (no BEGIN ... PRIVATE KEY line)")
    if "ENCRYPTED" in key_text:
        raise TlsFileError(key_key, f"{key_file}: the key is encrypted; the gateway needs it "
                           "unencrypted (readable only by the gateway's user)")
    try:
        context.load_cert_chain(cert_file, key_file, password=lambda: _no_key_password(key_key))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsFileError(key_key, f"{key_file}: not the key of the certificate in {cert_file}") from None
        raise TlsFileError(cert_key, f"{cert_file} with the key in {key_file}: "
                           f"not a usable certificate and key ({exc.reason or exc})") from None
    try:
        certificate = x509.load_pem_x509_certificate(cert_text.encode("ascii", errors="replace"))
    except ValueError:
        raise TlsFileError(cert_key, f"{cert_file}: its first certificate does not read") from None
    return isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)


def _read_pem(key: str, path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise TlsFileError(key, f"{path}: no such file") from None
    except OSError as exc:
        raise TlsFileError(key, f"{path}: cannot read it ({exc.strerror or exc})") from None


def _no_key_password(key_key: str) -> str:
    # Never prompt on a terminal for an encrypted key's password: fail instead.
    raise TlsFileError(key_key, "the key needs a password")
