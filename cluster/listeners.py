"""Binds every listening socket once, in the master, for every generation of workers to share."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
from dataclasses import dataclass
from typing import Any, cast

from prun.cluster.errors import PrunError, UsageError

SD_LISTEN_FDS_START = 3


@dataclass
class Listener:
    """A bound, listening socket and how to show it to a user."""

    sock: socket.socket
    spec: str  # as given: 127.0.0.1:0, unix:/run/app.sock, fd://3

    @property
    def kind(self) -> str:
        return "unix" if self.sock.family == socket.AF_UNIX else "tcp"

    @property
    def address(self) -> str:
        name = self.sock.getsockname()
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{name}"
        if self.sock.family == socket.AF_INET6:
            return f"[{name[0]}]:{name[1]}"
        return f"{name[0]}:{name[1]}"

    @property
    def url(self) -> str:
        return self.address if self.kind == "unix" else f"http://{self.address}"


BIND_HELP = "expected HOST:PORT, [::]:PORT, unix:PATH or fd://N"


@dataclass(frozen=True)
class UnixAccess:
    """Who may connect to the unix: sockets of an app (--unix-mode, --unix-group): a proxy's user, say.

    Applied to each unix socket file bound here, and to one received as fd://N (a socket the daemon bound
    for this master): a unix socket's file takes the mode, not the socket.
    """

    mode: int | None = None  # permission bits; None: as the umask left them
    gid: int | None = None  # None: the binding process's group

    @classmethod
    def from_options(cls, mode: str, group: str) -> UnixAccess:
        """From the options' checked text ('0660', 'www-data' or '33'; '' for unset)."""
        gid = None
        if group.isdigit():
            gid = int(group)
        elif group:
            import grp

            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise UsageError(f"invalid --unix-group {group!r}: no group of that name on this machine") from None
        return cls(int(mode, 8) if mode else None, gid)

    def apply(self, path: str, spec: str) -> None:
        """Give the socket file at `path` this mode and group, never through a link put in its place."""
        if self.mode is None and self.gid is None:
            return
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise PrunError(f"cannot set who may connect to {spec}: {exc.strerror}") from None
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise PrunError(f"cannot set who may connect to {spec}: {path} is not a socket")
            inode = f"/proc/self/fd/{fd}"  # the file opened above, whatever its path points to now
            if self.gid is not None:
                try:
                    os.chown(inode, -1, self.gid)
                except OSError as exc:
                    hint = " (only root or a member of the group may)" if exc.errno == errno.EPERM else ""
                    raise PrunError(f"cannot give {spec} to group {self.gid}: {exc.strerror}{hint}") from None
            if self.mode is not None:
                try:
                    os.chmod(inode, self.mode)
                except OSError as exc:
                    raise PrunError(f"cannot give {spec} mode {self.mode:04o}: {exc.strerror}") from None
        finally:
            os.close(fd)


def parse(spec: str) -> tuple[str, object]:
    """('unix', path) | ('fd', n) | ('inet', (host, port)) | ('inet6', (host, port))."""
    if spec.startswith("unix:"):
        path = spec[5:]
        if not path:
            raise UsageError(f"invalid bind address {spec!r}: {BIND_HELP}")
        return "unix", path
    if spec.startswith("fd://"):
        if not spec[5:].isdigit():
            raise UsageError(f"invalid bind address {spec!r}: {BIND_HELP}")
        return "fd", int(spec[5:])
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]*)\]:(\d{1,5})", spec)
    if match:
        return "inet6", (match.group(1) or "::", int(match.group(2)))
    match = re.fullmatch(r"([\w.-]*):(\d{1,5})", spec)
    if match and int(match.group(2)) <= 65535:
        return "inet", (match.group(1) or "0.0.0.0", int(match.group(2)))
    raise UsageError(f"invalid bind address {spec!r}: {BIND_HELP}")


def _bind_inet(family: socket.AddressFamily, host: str, port: int, backlog: int, spec: str) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"invalid bind address {spec!r}: cannot resolve {host!r} ({exc.strerror})") from None
    fam, type_, proto, _canon, addr = infos[0]
    sock = socket.socket(fam, type_, proto)
    options = [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)]
    if fam == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1))
    return _listen(sock, addr, backlog, spec, options)


def _listen(sock: socket.socket, addr: Any, backlog: int, spec: str,
            options: list[tuple[int, int, int]] = []) -> socket.socket:  # noqa: B006 (never mutated)
    try:
        for level, name, value in options:
            sock.setsockopt(level, name, value)
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(spec, exc) from None
    return sock


def _bind_unix(path: str, backlog: int, spec: str, access: UnixAccess) -> socket.socket:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)  # a stale socket left by a process that is gone
            else:
                raise PrunError(f"cannot listen on {spec}: address already in use")
            finally:
                probe.close()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise _bind_error(spec, exc) from None
    try:
        access.apply(path, spec)  # before listen: no client connects while the mode is not yet the one asked
        sock.listen(backlog)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return sock


def _bind_error(spec: str, exc: OSError) -> PrunError:
    if exc.errno == errno.EADDRINUSE:
        return PrunError(f"cannot listen on {spec}: address already in use")
    if exc.errno == errno.EACCES:
        return PrunError(f"cannot listen on {spec}: permission denied (ports below 1024 need privileges)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return PrunError(f"cannot listen on {spec}: no such address on this machine")
    return PrunError(f"cannot listen on {spec}: {exc.strerror or exc}")


def _adopt(fd: int, spec: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise UsageError(f"cannot use {spec}: fd {fd} is not an open socket ({exc.strerror})") from None
    if sock.type != socket.SOCK_STREAM:
        raise UsageError(f"cannot use {spec}: fd {fd} is not a stream socket")
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen()
    except OSError as exc:
        raise UsageError(f"cannot use {spec}: fd {fd} cannot listen ({exc.strerror})") from None
    os.set_inheritable(fd, False)
    sock.setblocking(False)  # the master may accept on it (leastconn): never block the loop
    return sock


def systemd_listeners(environ: dict[str, str] | os._Environ[str]) -> list[Listener]:
    """Sockets passed by systemd socket activation (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES)."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or not environ.get("LISTEN_FDS", "").isdigit():
        return []
    count = int(environ["LISTEN_FDS"])
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    listeners = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        name = names[i] if i < len(names) and names[i] else f"fd://{fd}"
        listeners.append(Listener(_adopt(fd, f"fd://{fd}"), name))
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)  # workers must not think the sockets are theirs
    return listeners


def bind_all(specs: list[str], backlog: int, access: UnixAccess = UnixAccess()) -> list[Listener]:
    """Bind every address; on any failure, close what was bound and raise."""
    parsed = [(spec, parse(spec)) for spec in specs]
    listeners: list[Listener] = []
    try:
        for spec, (kind, target) in parsed:
            if kind == "unix":
                sock = _bind_unix(str(target), backlog, spec, access)
            elif kind == "fd":
                sock = _adopt(int(cast(int, target)), spec)
                name = sock.getsockname() if sock.family == socket.AF_UNIX else ""
                if isinstance(name, str) and name:  # a file, not an abstract or unnamed socket
                    access.apply(name, spec)
            else:
                host, port = cast("tuple[str, int]", target)
                family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
                sock = _bind_inet(family, host, port, backlog, spec)
            sock.setblocking(False)
            listeners.append(Listener(sock, spec))
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    return listeners
