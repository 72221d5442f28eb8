"""Whole lines out of one source's bytes (cluster/lines.py): however the bytes are cut, the same lines come out,
in order; a line past the bound is given out in pieces as it arrives, never held whole."""

from __future__ import annotations

import random

from prun.cluster.lines import Lines, boundary, text

MARK = b"prun: worker 1 continued: "


def run(chunks: list[bytes], limit: int) -> bytes:
    lines = Lines(limit)
    out = b"".join(text(lines.feed(chunk), MARK)[0] for chunk in chunks)
    return out + text(lines.finish(), MARK)[0]


def rejoin(data: bytes) -> list[bytes]:
    joined: list[bytes] = []
    for line in data.split(b"\n")[:-1]:
        if line.startswith(MARK):
            joined[-1] += line[len(MARK):]
        else:
            joined.append(line)
    return joined


def test_lines_come_out_whole_however_the_bytes_are_cut() -> None:
    rng = random.Random(3)
    lines = [bytes(rng.randrange(32, 127) for _ in range(rng.randint(0, 300))) for _ in range(400)]
    data = b"".join(line + b"\n" for line in lines)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 60))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        assert run(chunks, 1000) == data  # nothing past the bound: exactly the bytes written
        out = run(chunks, 64)
        assert max(len(line) for line in out.split(b"\n")) <= 64 + len(MARK)
        assert rejoin(out) == lines


def test_a_long_line_is_given_out_in_pieces_as_it_arrives_and_a_last_line_without_newline_at_eof() -> None:
    lines = Lines(10)
    assert lines.feed(b"abc") == []
    assert lines.feed(b"defghijklmnop") == [(b"abcdefghij", 0, True)]  # held no longer than 10 bytes
    assert lines.partial == b"klmnop"
    assert lines.feed(b"q\nshort\nrest") == [(b"klmnopq", 1, False), (b"short\n", -1, False)]
    assert lines.finish() == [(b"rest", 0, False)]
    assert text([(b"rest", 0, False)], MARK) == (b"rest\n", 1)
    assert lines.finish() == []


def test_pieces_are_not_cut_inside_a_utf8_character() -> None:
    data = "é".encode() * 10  # two bytes each
    assert boundary(data, 5) == 4
    out = run([data + b"\n"], 5)
    pieces = [piece.removeprefix(MARK) for piece in out.split(b"\n")[:-1]]
    assert [piece.decode() for piece in pieces] == ["éé"] * 5  # each piece decodes on its own
