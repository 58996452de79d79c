"""TLS material for the simulator's HTTPS endpoint: a throw-away CA and a server certificate.

proxmoxer can only speak HTTPS, and tests must verify TLS rather than switch verification off, so
every simulator start mints its own CA and a server certificate signed by it. The CA certificate is
written to a file that clients pass as ``verify_ssl``/``--cacert``; the CA *key* lives only in
memory for the moment of signing and is never written anywhere, so nothing else can ever be signed
with it. File names follow PVE's (``pve-root-ca.pem``, ``pve-ssl.pem``, ``pve-ssl.key``) so the
layout looks familiar to anyone who has administered a real node.

The certificates satisfy strict X.509 verification (Python 3.13's ``VERIFY_X509_STRICT``, curl,
Go): CA with ``basicConstraints CA:TRUE`` critical, key identifiers on both certificates, a
``serverAuth`` leaf with subjectAltNames for every loopback spelling (``127.0.0.1``, ``::1``,
``localhost``) plus the bind address when it is something else.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILENAME = "pve-root-ca.pem"
CERT_FILENAME = "pve-ssl.pem"
KEY_FILENAME = "pve-ssl.key"

LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")

# Long enough for any test run or demo session, short enough that a leaked CA file is worthless
# soon. Backdated by a day so clients with a slightly skewed clock still accept it.
_VALIDITY = datetime.timedelta(days=30)
_BACKDATE = datetime.timedelta(days=1)


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the generated PEM files, and the server certificate's SHA-256 fingerprint.

    ``fingerprint_sha256`` is formatted as PVE shows it (upper-case hex pairs joined by ``:``), the
    value real nodes report as ``ssl_fingerprint``.
    """

    ca_path: Path
    cert_path: Path
    key_path: Path
    fingerprint_sha256: str

    def server_context(self) -> ssl.SSLContext:
        """A server-side context with modern defaults (TLS 1.2+), loaded with this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile=self.cert_path, keyfile=self.key_path)
        return context


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip().strip("[]")
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, created with that mode (no world-readable window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def generate_tls_material(
    cert_dir: Path,
    *,
    extra_names: Iterable[str] = (),
    common_name: str = "pve-sim",
) -> TlsMaterial:
    """Create a CA and a server certificate for ``LOOPBACK_NAMES`` + ``extra_names`` in ``cert_dir``.

    Existing files of the same names are overwritten: every start gets fresh keys, so a CA file
    from an earlier run never validates a later server (clients must re-read the CA path).
    ECDSA P-256 keys keep generation in the low milliseconds, which matters for pytest fixtures
    that start a server per test.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - _BACKDATE
    not_after = now + _VALIDITY

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} root CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Simulator"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(_san_entries([*LOOPBACK_NAMES, *extra_names])), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_path = cert_dir / CA_FILENAME
    cert_path = cert_dir / CERT_FILENAME
    key_path = cert_dir / KEY_FILENAME
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        key_path,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    digest = hashlib.sha256(server_cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return TlsMaterial(ca_path=ca_path, cert_path=cert_path, key_path=key_path, fingerprint_sha256=fingerprint)
