"""Unix listeners a proxy's user can reach: --unix-mode and --unix-group, in the foreground and under the daemon.

A process of another uid that is in the group connects and is answered; one outside the group is refused
by the kernel (EACCES), as it is without the options. Changing to another uid and group takes root.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import tempfile
from collections.abc import Iterator

import pytest

from tests.daemon_support import Home

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another user takes root")

OTHER_UID = 43210  # no account needed to run as a uid


def a_group() -> grp.struct_group:
    """A group of this machine other than root's, to give the socket to."""
    return next(g for g in grp.getgrall() if g.gr_gid not in (0, os.getgid()))


def as_other_user(path: str, send: bytes, groups: list[int]) -> str:
    """What a process of OTHER_UID in `groups` (a forked child) reads back after sending `send` to `path`."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec (the interpreter may be unreadable to that user), then _exit
        try:
            os.close(read)
            os.setgroups(groups)
            os.setgid(groups[0] if groups else 65534)
            os.setuid(OTHER_UID)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                try:
                    sock.connect(path)
                except PermissionError:
                    answer = b"refused"
                else:
                    sock.sendall(send)
                    answer = sock.makefile("rb").readline().strip()
            os.write(write, answer)
        except BaseException as exc:
            os.write(write, f"failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        answer = fh.read().decode()
    os.waitpid(pid, 0)
    return answer


@pytest.fixture
def socket_dir() -> Iterator[str]:
    """A directory any user may pass through (not list) to reach a socket in it."""
    path = tempfile.mkdtemp(prefix="prun-ux-", dir="/tmp")
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


def test_unix_mode_and_group_let_a_member_of_the_group_connect(prun, socket_dir: str) -> None:
    group = a_group()
    path = os.path.join(socket_dir, "app.sock")
    master = prun("tcp:handle", "-b", f"unix:{path}", "--unix-mode", "660", "--unix-group", group.gr_name)
    master.wait_for(r"ready: 1 worker")
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, group.gr_gid)
    assert as_other_user(path, b"ping\n", [group.gr_gid]) == "ping"
    assert as_other_user(path, b"ping\n", []) == "refused"  # in no group of the socket: the mode keeps it out
    plain = os.path.join(socket_dir, "plain.sock")
    other = prun("tcp:handle", "-b", f"unix:{plain}")
    other.wait_for(r"ready: 1 worker")
    assert as_other_user(plain, b"ping\n", [group.gr_gid]) == "refused"  # without the options: owner only


def test_under_the_daemon_the_socket_it_binds_gets_the_mode_and_group(home: Home, socket_dir: str) -> None:
    group = a_group()
    path = os.path.join(socket_dir, "api.sock")
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", f"unix:{path}", "--unix-mode", "0660",
              "--unix-group", str(group.gr_gid), "--name", "api")
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, group.gr_gid)
    request = b"GET /say?proxied HTTP/1.0\r\n\r\n"
    assert as_other_user(path, request, [group.gr_gid]) == "HTTP/1.1 200 OK"
    home.prun("restart", "api")  # a new master, the same socket: still reachable
    assert as_other_user(path, request, [group.gr_gid]) == "HTTP/1.1 200 OK"
    assert "--unix-mode 0660" in home.prun("describe", "api").stdout


def test_a_socket_path_swapped_for_a_link_is_not_followed(socket_dir: str) -> None:
    from prun.cluster.errors import PrunError
    from prun.cluster.listeners import UnixAccess

    victim = os.path.join(socket_dir, "victim")
    with open(victim, "w"):
        pass
    os.chmod(victim, 0o600)
    link = os.path.join(socket_dir, "app.sock")
    os.symlink(victim, link)
    with pytest.raises(PrunError, match="is not a socket"):
        UnixAccess(0o666, None).apply(link, f"unix:{link}")
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600
