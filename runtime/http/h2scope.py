"""The ASGI scope of an HTTP/2 request, from its header list (h2conn.py calls it for every stream).

Pseudo-headers become the scope's method, path and query; `:authority` is given as a `host` header when the
request has none, and several `cookie` headers are joined into one (RFC 9113 8.2.3), as HTTP/1.1 apps
expect. The per-stream limits are checked here: --limit-request-line (414, on :path),
--limit-request-header-size (431), --limit-request-body (413, on content-length).
"""

from __future__ import annotations

from typing import Any

from prun.runtime.http.proxy import forwarded
from prun.runtime.http.settings import Settings, decode_path

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}


def request_scope(conn: Any, headers: list[tuple[bytes, bytes]], method: bytes = b"",
                  path: bytes = b"") -> tuple[int, dict[str, Any] | None, bool, bool]:
    """(status, scope, expect, head) of a request's header list on `conn` (an H2Protocol): the ASGI scope,
    whether it expects 100-continue and is a HEAD; or a status that refuses it (400, 405, 413, 414, 431).
    The method and path come from the list's pseudo-headers (h2), or as arguments (zttp, which gives
    :authority as a host header)."""
    settings: Settings = conn.settings
    authority = b""
    scheme = conn.scheme
    plain: list[tuple[bytes, bytes]] = []
    size = len(method) + len(path) + 20 if method else 0  # (as the two pseudo-headers count)
    cookies: list[bytes] = []
    fwd_for = fwd_proto = None
    expect = False
    has_host = False
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            has_host = True
        elif name == b"content-length":
            if not value.isdigit():
                return 400, None, False, False
            if int(value) > settings.limit_body:
                return 413, None, False, method == b"HEAD"
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
        elif name == b"x-forwarded-for":
            fwd_for = value
        elif name == b"x-forwarded-proto":
            fwd_proto = value
        plain.append((name, value))
    if size > settings.limit_header:
        return 431, None, False, method == b"HEAD"
    if len(path) > settings.limit_line:
        return 414, None, False, method == b"HEAD"
    if cookies:
        plain.append((b"cookie", b"; ".join(cookies)))  # RFC 9113 8.2.3: one header for HTTP/1.1 apps
    if authority and not has_host:
        plain.insert(0, (b"host", authority))
    if method == b"CONNECT":
        return 405, None, False, False  # (no extended CONNECT: WebSocket over HTTP/2 is not served)
    raw_path, _, query = path.partition(b"?")
    if b"#" in query:
        query = query.partition(b"#")[0]
    text = decode_path(raw_path)
    client = conn.client
    if (fwd_for is not None or fwd_proto is not None) and settings.proxy_headers and (
        client is None or client[0] in settings.trusted
    ):
        client, scheme = forwarded(settings.trusted, client, scheme, fwd_for, fwd_proto)
    root = settings.root_path
    if root:
        text = root + text
        raw_path = settings.root_path_bytes + raw_path
    state = conn.shared.state
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "2",
        "server": conn.sockname,
        "client": client,
        "scheme": scheme,
        "method": _METHODS.get(method) or method.decode("ascii", "replace"),
        "root_path": root,
        "path": text,
        "raw_path": raw_path,
        "query_string": query,
        "headers": plain,
        "state": state.copy() if state else {},
        "extensions": {"http.response.trailers": {}},
    }
    return 0, scope, expect, method == b"HEAD"
