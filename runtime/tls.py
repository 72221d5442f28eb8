"""TLS: the server's SSLContext, built from the --certfile/--keyfile options.

Each worker builds its own at boot, from the files as they are then: a reload (HUP) after the certificate
was renewed in place serves the new one, and a broken new one fails the new worker's boot, which rolls
back like broken code. The master builds one at start only to check the files, and drops it.

--tls-profile takes one of Mozilla's server-side TLS configurations (guidelines 5.7,
https://ssl-config.mozilla.org/): the versions, the TLS 1.2 ciphers, the key-exchange groups, and the
client's cipher order. What a scanner checks beyond them is the certificate's (an ECDSA P-256 or an RSA
2048-bit key, its lifetime, its chain). --ciphers and --tls-groups, given too, replace the profile's.
Python sets a list of groups from 3.15 on (ssl.SSLContext.set_groups); before, one group only
(set_ecdh_curve): there the profiles offer the one every client of theirs has (modern: X25519,
intermediate: prime256v1), and --tls-groups takes one name.
"""

from __future__ import annotations

import importlib.util
import ssl
import sys
from dataclasses import dataclass

from prun.runtime import install_hint
from prun.runtime.options import WorkerOptions

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
ALPN = ["http/1.1"]
ALPN_H2 = ["h2", "http/1.1"]  # --http auto or 2, with the h2 library installed: HTTP/2 preferred
# The TLS handshake of a new connection may take this long when --timeout-request-header is 0.
HANDSHAKE_TIMEOUT = 60.0



@dataclass(frozen=True)
class Profile:
    """One of Mozilla's server-side TLS configurations."""

    minimum: ssl.TLSVersion
    ciphers: str  # TLS 1.2 (OpenSSL's names); "" for none (TLS 1.3 only). TLS 1.3's suites: OpenSSL's, as Mozilla's
    groups: str  # the key-exchange groups, in order
    group: str  # the one group offered where Python sets only one


_GROUPS = "X25519:prime256v1:secp384r1"
PROFILES = {
    "modern": Profile(ssl.TLSVersion.TLSv1_3, "", _GROUPS, "X25519"),
    "intermediate": Profile(
        ssl.TLSVersion.TLSv1_2,
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305",
        _GROUPS,
        "prime256v1",  # (X25519 is missing from the profile's oldest clients: IE 11 on Windows 7, Java 8)
    ),
}


class TlsError(Exception):
    """The TLS files cannot be used; the message says which and why, in one line."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, ssl.SSLError):
        return exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _readable(flag: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise TlsError(f"{flag} {path}: {_reason(exc)}") from None


def server_context(options: WorkerOptions) -> ssl.SSLContext | None:
    """The SSLContext the options ask for, or None when --certfile is not given. Raises TlsError."""
    if not options.certfile:
        if options.keyfile or options.ca_certs:
            raise TlsError("--keyfile and --ca-certs need --certfile")
        return None
    if options.cert_reqs not in CERT_REQS:
        raise TlsError(f"--cert-reqs {options.cert_reqs!r}: expected one of none, optional, required")
    _readable("--certfile", options.certfile)
    if options.keyfile:
        _readable("--keyfile", options.keyfile)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(options.certfile, options.keyfile or None, options.keyfile_password or None)
    except (ssl.SSLError, OSError) as exc:
        files = options.certfile + (f" and --keyfile {options.keyfile}" if options.keyfile else "")
        raise TlsError(f"cannot load --certfile {files}: {_reason(exc)} (the key must match the certificate; "
                       f"an encrypted key needs --keyfile-password)") from None
    if options.ca_certs:
        _readable("--ca-certs", options.ca_certs)
        try:
            context.load_verify_locations(cafile=options.ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"cannot load --ca-certs {options.ca_certs}: {_reason(exc)}") from None
    elif options.cert_reqs != "none":
        raise TlsError(f"--cert-reqs {options.cert_reqs} needs --ca-certs (the CAs client certificates must "
                       "come from)")
    context.verify_mode = CERT_REQS[options.cert_reqs]
    _protocols(context, options)
    context.set_alpn_protocols(ALPN_H2 if http2_on(options) else ALPN)
    return context


def http2_on(options: WorkerOptions) -> bool:
    """Whether the options ask for HTTP/2 and the h2 library is there to serve it (the prun-cluster[http2] extra)."""
    return options.http != "1" and importlib.util.find_spec("h2") is not None


def zttp_missing() -> str:
    """Why --http2-engine zttp cannot be served here (zttp does not import), in one line."""
    if sys.version_info < (3, 11):
        return "--http2-engine zttp needs Python 3.11 or later (zttp has no build for this Python): use h2"
    return f"--http2-engine zttp needs the zttp library, which is not installed: {install_hint('zttp')}"


def _protocols(context: ssl.SSLContext, options: WorkerOptions) -> None:
    """The versions, ciphers and groups: the --tls-profile's, then --ciphers and --tls-groups over them."""
    profile = PROFILES.get(options.tls_profile)
    if options.tls_profile and profile is None:
        raise TlsError(f"--tls-profile {options.tls_profile!r}: expected modern or intermediate")
    if profile is not None:
        context.minimum_version = profile.minimum
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE  # Mozilla's profiles leave the order to the client
        if profile.ciphers:
            context.set_ciphers(profile.ciphers)
    if options.ciphers:
        try:
            context.set_ciphers(options.ciphers)
        except ssl.SSLError:
            raise TlsError(f"--ciphers {options.ciphers!r}: no cipher matches") from None
    if options.tls_groups:
        set_groups(context, options.tls_groups)
    elif profile is not None:
        set_groups(context, profile.groups if hasattr(context, "set_groups") else profile.group,
                   f"--tls-profile {options.tls_profile}")


def set_groups(context: ssl.SSLContext, groups: str, given: str = "") -> None:
    """Offer these key-exchange groups (colon-separated OpenSSL names), or say why not. Raises TlsError."""
    what = given or f"--tls-groups {groups!r}"
    names = [name.strip() for name in groups.split(":") if name.strip()]
    if not names:
        raise TlsError(f"--tls-groups {groups!r}: no group named")
    setter = getattr(context, "set_groups", None)  # Python 3.15+
    try:
        if setter is not None:
            setter(":".join(names))
        elif len(names) == 1:
            context.set_ecdh_curve(names[0])
        else:
            raise TlsError(f"--tls-groups {groups!r}: this Python sets one group, not a list (ssl.SSLContext."
                           "set_groups comes with Python 3.15): name one, e.g. X25519 or prime256v1")
    except (ValueError, ssl.SSLError):
        if sys.version_info < (3, 11) and names[0].upper() in ("X25519", "X448"):  # set_ecdh_curve: EC curves only
            raise TlsError(f"{what}: Python 3.10 offers one elliptic curve (e.g. prime256v1 or secp384r1), not "
                           f"{names[0]}, which needs Python 3.11 or later") from None
        raise TlsError(f"{what}: not a group OpenSSL knows (e.g. X25519, prime256v1, "
                       "secp384r1)") from None


def handshake_timeout(options: WorkerOptions) -> float:
    """How long a new connection may take to complete its TLS handshake before it is closed."""
    return options.timeout_request_header or HANDSHAKE_TIMEOUT
