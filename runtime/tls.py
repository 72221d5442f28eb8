"""TLS: the server's SSLContext, built from the --certfile/--keyfile options.

Each worker builds its own at boot, from the files as they are then: a reload (HUP) after the certificate
was renewed in place serves the new one, and a broken new one fails the new worker's boot, which rolls
back like broken code. The master builds one at start only to check the files, and drops it.
"""

from __future__ import annotations

import ssl

from prun.runtime.options import WorkerOptions

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
ALPN = ["http/1.1"]
# The TLS handshake of a new connection may take this long when --timeout-request-header is 0.
HANDSHAKE_TIMEOUT = 60.0


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
    if options.ciphers:
        try:
            context.set_ciphers(options.ciphers)
        except ssl.SSLError:
            raise TlsError(f"--ciphers {options.ciphers!r}: no cipher matches") from None
    context.set_alpn_protocols(ALPN)
    return context


def handshake_timeout(options: WorkerOptions) -> float:
    """How long a new connection may take to complete its TLS handshake before it is closed."""
    return options.timeout_request_header or HANDSHAKE_TIMEOUT
