"""The control channel: every message survives encode/decode and a real socketpair, fds riding along."""

from __future__ import annotations

import os

import pytest

from prun.runtime import channel

MESSAGES: list[channel.Message] = [
    channel.Boot(options={"app": "tcp:handle", "backlog": 7}),
    channel.Drain(timeout=2.5, stopping=True),
    channel.Conn(),
    channel.Accept(on=True),
    channel.Accept(on=False),
    channel.LogFile(),
    channel.Ready(pid=42, rss=1 << 20),
    channel.BootFailure(message="cannot import 'app'", traceback="Traceback ..."),
    channel.Heartbeat(conns=3, requests=10, accepted=4, rss=1 << 20),
    channel.Recycle(requests=1000),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: f"{m.KIND}")
def test_every_message_decodes_to_itself(msg: channel.Message) -> None:
    assert channel.decode(channel.encode(msg)) == msg


def test_accept_says_which_way() -> None:
    assert channel.encode(channel.Accept(on=False)) == b'{"on":false,"t":"accept"}'
    with pytest.raises(channel.ProtocolError, match="'accept'"):
        channel.decode(b'{"t":"accept"}')  # on is required


def test_unknown_kinds_and_garbage_are_protocol_errors() -> None:
    for data in (b'{"t":"nope"}', b"[1]", b"not json"):
        with pytest.raises(channel.ProtocolError):
            channel.decode(data)


def test_a_message_and_its_fd_cross_a_real_channel() -> None:
    master, worker = channel.pair()
    read_end, write_end = os.pipe()
    try:
        channel.send(master, channel.Accept(on=True))
        channel.send(master, channel.Conn(), fds=[write_end])
        assert channel.recv(worker) == (channel.Accept(on=True), [])
        msg, fds = channel.recv(worker)
        assert msg == channel.Conn() and len(fds) == 1
        os.write(fds[0], b"through")
        os.close(fds[0])
        assert os.read(read_end, 100) == b"through"
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        master.close()
        worker.close()


def test_the_last_messages_of_a_peer_that_closed_without_reading_are_still_read() -> None:
    """Closing with unread data makes the kernel report ECONNRESET once; what the peer sent before is kept."""
    import asyncio

    master, worker = channel.pair()
    received: list[object] = []
    ended: list[bool] = []

    async def main() -> None:
        chan = channel.AsyncChannel(master, asyncio.get_running_loop(), lambda msg, fds: received.append(msg),
                                    lambda: ended.append(True))
        channel.send(master, channel.Accept(on=True))  # the worker never reads it
        channel.send(worker, channel.Ready(pid=7))
        channel.send(worker, channel.Heartbeat(conns=1, requests=2))
        worker.close()
        chan.pump()

    asyncio.run(main())
    assert received == [channel.Ready(pid=7), channel.Heartbeat(conns=1, requests=2)] and ended == [True]
