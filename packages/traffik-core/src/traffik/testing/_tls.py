"""Throwaway TLS certificates for test servers, made with the ``openssl`` command.

A private CA signs one certificate for the servers (``localhost`` and ``127.0.0.1``,
good for server and client authentication, as Redis replication and the cluster bus
use the server certificate as a client certificate) and one for clients. A second,
unrelated CA is there to test what a client that trusts the wrong CA sees.

The ``openssl`` command is used (not a Python package) so that traffik-core's
``testing`` extra needs nothing more; Debian ships it in the ``openssl`` package.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from dataclasses import dataclass

__all__ = ["TLSFiles", "make_tls_files"]

_DAYS = "2"
_CURVE = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
# Python 3.13's default context verifies strictly (VERIFY_X509_STRICT): the CA needs
# key usages and every certificate an authority key identifier.
_CA_EXTENSIONS = (
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-addext", "subjectKeyIdentifier=hash",
)  # fmt: skip
_LEAF_EXTENSIONS = """\
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=DNS:localhost,IP:127.0.0.1
"""


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the PEM files of a test CA and the certificates it signed."""

    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    #: A CA that signed nothing here: trusting it instead must fail verification.
    other_ca_cert: str

    def client_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` that trusts the test CA (and shows the client certificate)."""
        context = ssl.create_default_context(cafile=self.ca_cert)
        if client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def url_query(self, *, client_cert: bool = True, ca_cert: str | None = None) -> str:
        """``ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...`` for a redis-py ``rediss://`` URL."""
        query = f"ssl_ca_certs={ca_cert or self.ca_cert}"
        if client_cert:
            query += f"&ssl_certfile={self.client_cert}&ssl_keyfile={self.client_key}"
        return query


def _openssl(binary: str, directory: str, *args: str) -> None:
    result = subprocess.run(
        [binary, *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"'openssl {' '.join(args[:2])}' failed with status {result.returncode}: "
            f"{result.stderr.strip()[-500:]}"
        )


def _make_ca(binary: str, directory: str, name: str) -> None:
    _openssl(
        binary, directory, "req", "-x509", "-new", "-nodes", *_CURVE,
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", _DAYS,
        "-subj", f"/CN=traffik test {name}", *_CA_EXTENSIONS,
    )  # fmt: skip


def _make_leaf(binary: str, directory: str, name: str) -> None:
    _openssl(
        binary, directory, "req", "-new", "-nodes", *_CURVE,
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        binary, directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt",
        "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", _DAYS,
        "-extfile", "leaf.ext",
    )  # fmt: skip


def make_tls_files(directory: str, openssl: str) -> TLSFiles:
    """Write a CA, a server and a client certificate (and another CA) into ``directory``.

    ``openssl`` is the path of the ``openssl`` executable. Keys are P-256 (fast to
    make), certificates valid for two days.
    """
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "leaf.ext"), "w", encoding="ascii") as ext:
        ext.write(_LEAF_EXTENSIONS)
    _make_ca(openssl, directory, "ca")
    _make_ca(openssl, directory, "other-ca")
    _make_leaf(openssl, directory, "server")
    _make_leaf(openssl, directory, "client")

    def path(name: str) -> str:
        return os.path.join(directory, name)

    return TLSFiles(
        ca_cert=path("ca.crt"),
        server_cert=path("server.crt"),
        server_key=path("server.key"),
        client_cert=path("client.crt"),
        client_key=path("client.key"),
        other_ca_cert=path("other-ca.crt"),
    )
