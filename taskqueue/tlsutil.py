"""TLS contexts for every port and every client, built one way.

Server side: certificate + key, and with a CA bundle, mandatory client certificates
(mutual TLS). Client side: verify the broker against a CA bundle (or the system store), and
present a client certificate when one is given.
"""

from __future__ import annotations

import ssl


def server_context(cert_path: str, key_path: str, ca_path: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    if ca_path:
        context.load_verify_locations(ca_path)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_path: str | None = None, cert_path: str | None = None,
                   key_path: str | None = None, check_hostname: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_path)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if cert_path:
        context.load_cert_chain(cert_path, key_path)
    return context


def client_context_from_paths(ca: str | None = None, cert: str | None = None,
                              key: str | None = None,
                              server_name: str | None = None) -> ssl.SSLContext | None:
    """A client context when any TLS option is given, else None (plaintext).

    ``server_name`` is the name to verify the broker's certificate against instead of the
    host in the address: the guide's server certificate is issued to ``CN=task-queue``
    with no IP subjectAltName, so ``--broker-addr 10.0.1.10:6379`` needs
    ``--tls-server-name task-queue``.
    """
    if not (ca or cert or key or server_name):
        return None
    context = client_context(ca, cert, key)
    context.server_name_override = server_name
    return context


def server_hostname(context: ssl.SSLContext, host: str) -> str:
    """The name a TLS connection to ``host`` verifies (see client_context_from_paths)."""
    return getattr(context, "server_name_override", None) or host
