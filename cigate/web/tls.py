"""A throwaway local certificate authority and a server certificate for 127.0.0.1/localhost.

azure-core refuses to send a bearer token over plain HTTP, so the Azure SDKs only run unchanged
against a local emulator or gateway over TLS. :func:`make_local_tls` writes, into one directory:

* ``ca.pem``: the CA certificate (critical ``basicConstraints CA:TRUE``, ``keyCertSign``, SKI),
  which is what a client must trust;
* ``server.pem`` / ``server-key.pem``: the server's certificate (SAN ``localhost``,
  ``127.0.0.1``, ``::1``; ``serverAuth``; SKI/AKI, so Python 3.13's ``VERIFY_X509_STRICT``
  accepts the chain too) and its unencrypted key (mode 0600);
* ``bundle.pem``: certifi's roots (else the system's) followed by the CA, so one process that
  trusts it still reaches real Azure and Entra ID.

``REQUESTS_CA_BUNDLE`` (azure-core sync, requests) and ``SSL_CERT_FILE`` (openai/httpx2,
aiohttp) each *replace* their library's default roots: :meth:`LocalTLS.env` points both at the
bundle. The CA's private key is never written: nothing else can ever be signed by it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LocalTLS", "make_local_tls"]

#: Names the server certificate is valid for.
HOSTS = ("localhost", "127.0.0.1", "::1")
_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class LocalTLS:
    """Where :func:`make_local_tls` put the CA, the server's certificate and key, the bundle."""

    ca: Path
    certfile: Path
    keyfile: Path
    bundle: Path

    def env(self) -> dict[str, str]:
        """The two variables that make requests/azure-core and openai/httpx2 trust the CA."""
        return {"REQUESTS_CA_BUNDLE": str(self.bundle), "SSL_CERT_FILE": str(self.bundle)}

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl`` context trusting only the local CA (for hermetic test clients)."""
        return ssl.create_default_context(cafile=str(self.ca))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cigate local TLS"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _default_roots() -> bytes:
    try:
        import certifi
    except ImportError:  # requests (and so certifi) comes with azure-identity; be safe anyway
        cafile = ssl.get_default_verify_paths().cafile
        return Path(cafile).read_bytes() if cafile and Path(cafile).is_file() else b""
    return Path(certifi.where()).read_bytes()


def make_local_tls(directory: Path, *, hosts: tuple[str, ...] = HOSTS) -> LocalTLS:
    """A new CA and a server certificate for ``hosts`` in ``directory`` (created, mode 0700)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + _VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_name = _name(f"cigate local CA {now:%Y-%m-%d %H:%M:%S}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = LocalTLS(
        ca=directory / "ca.pem",
        certfile=directory / "server.pem",
        keyfile=directory / "server-key.pem",
        bundle=directory / "bundle.pem",
    )
    tls.ca.write_bytes(_pem(ca))
    tls.certfile.write_bytes(_pem(server))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(tls.keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    roots = _default_roots()
    tls.bundle.write_bytes(
        roots + (b"" if roots.endswith(b"\n") or not roots else b"\n") + _pem(ca)
    )
    return tls
