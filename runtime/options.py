"""The settings a worker needs, sent by the master in the boot message."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

EXIT_BOOT_FAILURE = 3
INTERFACES = ("auto", "asgi", "wsgi", "stream", "protocol")  # how a worker may serve an app (--interface)


@dataclass
class WorkerOptions:
    """Everything a worker is told at boot; the master builds it from its Config.

    Most fields are the worker rows of prun's option table (cluster/options.py), with its defaults;
    tests/test_options.py checks that they agree. The others (slot, generation, heartbeat_interval,
    drain_idle_window, server_header, access_log_fd) are the master's to set, not options.
    """

    app: str = ""
    chdir: str = "."
    factory: bool = False
    interface: str = "auto"  # auto | asgi | wsgi | stream | protocol
    name: str = ""
    slot: int = 0
    generation: int = 1
    # Seconds between heartbeats; the master's --timeout is several of these.
    heartbeat_interval: float = 1.0
    graceful_timeout: float = 25.0
    balance: str = "leastconn"  # leastconn | shared
    max_requests: int = 0  # 0: never recycle; already jittered by the master
    # HTTP server (ASGI / WSGI)
    lifespan: str = "auto"  # auto | on | off
    root_path: str = ""
    proxy_headers: bool = True  # as uvicorn: client and scheme from X-Forwarded-* of forwarded_allow_ips peers
    forwarded_allow_ips: str = "127.0.0.1"
    threads: int = 8
    keepalive_timeout: float = 5.0
    # Seconds a request head may take to arrive in full (slowloris); 0: no bound.
    timeout_request_header: float = 10.0
    # Seconds a client may take none of a response waiting for it before it is dropped; 0: no bound.
    timeout_write: float = 60.0
    drain_idle_window: float = 0.5  # how long an idle connection may still send a request once draining
    limit_request_line: int = 8190
    limit_request_header_size: int = 16384
    limit_request_body: int = 100 * 1024 * 1024
    limit_concurrency: int = 0  # 0: unlimited
    access_log: str = ""  # "" off | "common" | "json"
    access_log_format: str = ""  # gunicorn's access_log_format atoms ('': the Common Log Format)
    access_log_fd: int = -1  # --access-log-file: the master's pipe for this worker's access lines (-1: stdout)
    log_format: str = "text"  # text | json: the worker's own multi-line reports become one JSON record
    log_json_time: str = "rfc3339"  # rfc3339 | epoch: the time of those records
    log_level: str = "info"  # debug | info | warning | error: the least level of the hooks' log (runtime/hooks.py)
    # TLS (runtime/tls.py): each worker loads the files itself at boot; no certfile: plain TCP
    certfile: str = ""
    keyfile: str = ""
    keyfile_password: str = ""
    ca_certs: str = ""
    cert_reqs: str = "none"  # none | optional | required: client certificates
    ciphers: str = ""
    tls_groups: str = ""  # the key-exchange groups (curves) offered, e.g. X25519:prime256v1; "": OpenSSL's
    tls_profile: str = ""  # "" (Python's and OpenSSL's defaults) | modern | intermediate (Mozilla's)
    limit_tls_handshakes: int = 256  # TLS handshakes in progress per worker; 0: no limit
    server_header: bool = True
    # WebSocket (ASGI apps): auto (on if the websockets library imports) | none
    ws: str = "auto"
    ws_max_size: int = 16 * 1024 * 1024
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_max_queue: int = 32
    # HTTP/2 (auto: on if the h2 library imports | 1: HTTP/1.1 only | 2: on, required)
    http: str = "auto"
    http2_max_streams: int = 100
    http2_engine: str = "auto"  # the HTTP/2 protocol library: auto (zttp if it imports, else h2) | h2 | zttp
    # listen() is called again on each listener a worker serves: the same backlog as the master's bind
    backlog: int = 2048
    env: dict[str, str] = field(default_factory=dict)
    hooks_file: str = ""  # a gunicorn config file whose post_worker_init / worker_exit this worker runs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
