"""The listener holder: a tiny process per app that keeps the app's listening sockets open.

The daemon binds an app's sockets, starts a holder with them, and passes them to each master it starts
(`-b fd://N`). The holder outlives masters (restart) and daemons (SIGKILL, `prun update`): a new daemon
asks it for the sockets again, so the kernel's accept queue never closes while the app is meant to run.

    python -m prun.cluster.daemon.holder SERVER_FD NAME FD...

SERVER_FD is a listening Unix socket the daemon bound ($PRUN_HOME/apps/<id>.sock, 0600), so that nobody
waits for the holder to start. On it, one line per connection: `get` is answered with `ok` and the
sockets (SCM_RIGHTS, in the order given). The daemon ends a holder with SIGKILL (and removes its files):
it keeps no state. It imports nothing but the standard library's socket layer, and does nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import sys


def main(argv: list[str]) -> None:
    server_fd, name, *rest = argv
    fds = [int(a) for a in rest]
    try:
        import setproctitle

        setproctitle.setproctitle(f"prun holder {name}")
    except ImportError:  # pragma: no cover
        pass
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    server = socket.socket(fileno=int(server_fd))
    server.setblocking(True)
    while True:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            try:
                if conn.recv(64).strip() == b"get":
                    socket.send_fds(conn, [b"ok\n"], fds)
            except OSError:
                continue


def fetch(path: str, count: int, timeout: float = 5.0) -> list[int]:
    """The sockets a holder keeps (new fds of this process); OSError if it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(b"get\n")
        msg, fds, _flags, _addr = socket.recv_fds(conn, 16, max(count, 1))
    if msg != b"ok\n" or len(fds) != count:
        for fd in fds:
            os.close(fd)
        raise OSError(f"holder at {path} answered {msg!r} with {len(fds)} sockets, not {count}")
    return fds


if __name__ == "__main__":
    main(sys.argv[1:])
