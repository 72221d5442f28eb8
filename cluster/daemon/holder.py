"""The listener holder: a tiny process per app that keeps the app's listening sockets open.

The daemon binds an app's sockets, starts a holder with them, and passes them to each master it starts
(`-b fd://N`). The holder outlives masters (restart) and daemons (SIGKILL, `prun update`): a new daemon
asks it for the sockets again, so the kernel's accept queue never closes while the app is meant to run.

    python -m prun.cluster.daemon.holder SOCKET NAME FD... [--unlink PATH]...

On SOCKET (0600), one line per connection: `get` is answered with `ok` and the sockets (SCM_RIGHTS, in
the order given); `exit` closes them, unlinks the --unlink paths (unix listeners) and ends the holder.
It imports nothing but the standard library's socket layer, and does nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import sys


def main(argv: list[str]) -> None:
    path, name, *rest = argv
    fds = [int(a) for a in rest if a.isdigit()]
    unlink = [rest[i + 1] for i, a in enumerate(rest) if a == "--unlink"]
    try:
        import setproctitle

        setproctitle.setproctitle(f"prun holder {name}")
    except ImportError:  # pragma: no cover
        pass
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.umask(0o077)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(8)
    print("holding", flush=True)
    try:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                try:
                    command = conn.recv(64).strip()
                    if command == b"get":
                        socket.send_fds(conn, [b"ok\n"], fds)
                    elif command == b"exit":
                        conn.sendall(b"bye\n")
                        break
                except OSError:
                    continue
    finally:
        for fd in fds:
            os.close(fd)
        for sock_path in unlink:
            try:
                os.unlink(sock_path)
            except OSError:
                pass
        try:
            os.unlink(path)
        except OSError:
            pass


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


def release(path: str, timeout: float = 5.0) -> None:
    """Tell a holder to close its sockets and exit."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(b"exit\n")
            conn.recv(16)
    except OSError:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
