"""SSL contexts built from certificate paths, for clients (worker, admin) and the broker.

Both sides take plain paths as the deployment guide names them (``tls_cert_path``,
``tls_key_path``, a CA bundle): one place turns them into an :class:`ssl.SSLContext`, so the
client and the broker agree on the protocol floor and on what "verify" means.
"""

from __future__ import annotations

import ssl


def client_context(ca: str | None = None, cert: str | None = None,
                   key: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A context that verifies the broker against ``ca`` (or the system store).

    ``cert``/``key`` add a client certificate for brokers that require mutual TLS.
    ``verify=False`` is for lab setups only: it accepts any certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    elif key:
        raise ValueError("a TLS key was given without a certificate")
    return ctx


def server_context(cert: str, key: str, ca: str | None = None,
                   require_client_cert: bool = False) -> ssl.SSLContext:
    """A server context; with ``ca`` client certificates are verified against it."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ValueError("require_client_cert needs a CA to verify client certificates")
    return ctx


def client_context_from_paths(ca: str | None, cert: str | None,
                              key: str | None) -> ssl.SSLContext | None:
    """The CLI helper: ``None`` (plain TCP) unless at least one TLS path was given."""
    if not (ca or cert or key):
        return None
    return client_context(ca=ca, cert=cert, key=key)
