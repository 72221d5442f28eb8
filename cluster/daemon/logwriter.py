"""An app's log writer: the one process that writes its log files, from the two pipes its master writes into.

    python -m prun.cluster.daemon.logwriter OUT_FD ERR_FD OUT_PATH ERR_PATH [--max-size N --retain N
        --compress --daily --time FORMAT --split --combined PATH --replacing PID --how TEXT]

    master ──stdout pipe: frames of whole lines (its own, its workers', the access log's)──▶ writer ──▶ files
           ──stderr pipe: frames of whole lines──────────────────────────────────────────▶

The master (or fork-mode supervisor) is the only writer of the pipes; it writes frames of whole lines
tagged with their source (cluster/logframe.py). The writer files them: stdout's in OUT_PATH, stderr's in
ERR_PATH (--split: a worker's in its own pair, logfiles.worker_file), the access log's where the master
says; --combined (PM2's -l) also writes every out and err line into a third file; --time prefixes each line
with the time it arrived. It rotates between lines (logfiles.py). When
every writer has closed the pipes (the master is gone), it writes what is left and exits 0. A flock on
OUT_PATH's `.lock` (ERR_PATH's when OUT_PATH is /dev/null or another non-file; none when both are) keeps a
new writer (a restarted master's) from writing before the last one finished.

Exactly once, across a killed writer. The daemon keeps the pipes' read ends and starts a new writer on
them when one dies (runner.py). So that the new one neither loses nor repeats a line, a writer never takes
bytes out of a pipe before they are in the files: it looks at what the pipe holds (tee(2) into a scratch
pipe, logpipe.py), writes the whole frames it finds, notes in its journal (the `.lock` file, journal.py) up
to which frame and line the files hold and how long each file is, and only then takes those bytes out. A writer that starts
on pipes its journal names cuts each file back to its noted length (a write after the note may have been
half done) and skips the frames, and lines of a frame, the note says are written. Where tee(2) is missing
it reads as other programs do; a frame lost with a killed writer is then counted, and said in the err log.

A pipe that held little (a quiet app) is looked at again 5 ms later, not at once: a line waits that long at
most, and a look (tee, write, journal note, take) serves several lines instead of one.

SIGUSR1 reopens the files (after an external logrotate moved them). A file refused by open_log (another
user's symlink or file) stops the writer at start (one line on its stderr, exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import stat
import sys
import time
from typing import Any

from prun.cluster.daemon.journal import Journal, cut_back, lock
from prun.cluster.daemon.logfiles import Files, LogFile, Rotation, worker_file, worker_files
from prun.cluster.daemon.logpipe import STALL_RETRY, Peek, Pipe
from prun.cluster.logframe import ACCESS, ACCESS_PATH, ERR, OUT, Item, parse
from prun.cluster.logopen import LogFileRefused

GATHER = 0.005  # a pipe that held less than QUIET bytes is looked at again after this (a line waits 5 ms at most)
QUIET = 16 << 10
RAW_MAX = 64 << 10  # bytes of a line without a newline, written by something else than a framing master


class Writer:
    """Files the frames of an app's two pipes."""

    def __init__(self, out: Pipe, err: Pipe, out_path: str, err_path: str, rotation: Rotation, stamp: str,
                 split: bool, journal: Journal | None, combined_path: str = "") -> None:
        self.pipes = [out, err]
        self.combined_path = combined_path
        self.out_path, self.err_path = out_path, err_path
        self.stamp = stamp.encode() if stamp else b""
        self.time_format = stamp
        self.split = split
        self.journal = journal
        self.access = ""
        self.takeover = False
        self.recovered = 0  # lines a killed writer had written but not noted: written again
        self.notes: list[str] = []
        self.files = Files(rotation, self.opened)
        self.combined: LogFile | None = None  # opened by serve, once recover() cut it back

    # ---- the journal -----------------------------------------------------------------------------

    def opened(self, file: LogFile) -> None:
        """A file the writer may write into: its length is noted before any write (and a line nobody will
        finish ended)."""
        if not self.takeover:
            file.end_line()
        self.commit()

    def commit(self) -> None:
        if self.journal is None:
            return
        out, err = self.pipes  # (by hand: once a batch, the hot part of a quiet writer's work)
        files = ",".join(f"[{inode},{length}]" for file in list(self.files.values()) for inode, length in file.sizes())
        self.journal.save(b'{"pipes":[%d,%d],"writer":%d,"pos":[[%d,%d],[%d,%d]],"access":%s,"files":[%s],'
                          b'"notes":%s}' % (out.inode, err.inode, os.getpid(), out.seq, out.lines, err.seq, err.lines,
                                           json.dumps(self.access).encode(), files.encode(),
                                           json.dumps(self.notes).encode() if self.notes else b"[]"))

    def recover(self) -> None:
        """Take over from a writer killed on these pipes: cut each file back to what its journal noted."""
        state = self.journal.load() if self.journal is not None else None
        if not state or state.get("pipes") != [pipe.inode for pipe in self.pipes]:
            return
        self.takeover = True
        for pipe, (seq, lines) in zip(self.pipes, state["pos"]):
            pipe.seq, pipe.lines = seq, lines
        self.access = state.get("access", "")
        self.notes = [*state.get("notes", []), *self.notes]  # what a writer killed before it could say
        noted = {inode: size for inode, size in state.get("files", [])}
        paths = [self.out_path, self.err_path, *worker_files(self.out_path), *worker_files(self.err_path),
                 *([self.combined_path] if self.combined_path else [])]
        for path in dict.fromkeys(paths + ([self.access] if self.access else [])):
            for each in (path, path + ".idx"):
                self.recovered += cut_back(each, noted, count=each == path)

    # ---- filing ----------------------------------------------------------------------------------

    def target(self, kind: int, source: int) -> LogFile:
        if kind == ACCESS and self.access:
            return self._file(self.access)
        path = self.err_path if kind == ERR else self.out_path
        if self.split and source:
            try:
                return self.files.get(worker_file(path, source - 1))
            except LogFileRefused as exc:  # a worker's own file: its lines go to the app's file instead
                print(f"prun: warning: {exc.strerror}; its lines go to {path}", file=sys.stderr, flush=True)
                self.files[worker_file(path, source - 1)] = self._file(path)
        return self._file(path)

    def _file(self, path: str) -> LogFile:
        return self.files.get(path)

    def drain(self, pipe: Pipe) -> None:
        """Write the whole frames the pipe holds, note it, then take them out of the pipe."""
        data = pipe.look()
        if data is None:
            pipe.eof = True
            return
        if not data:
            return
        items, used = parse(data, pipe.kind, RAW_MAX)
        if not items and pipe.hung_up():  # the master exited in the middle of a frame: what came is written
            items, used = parse(data, pipe.kind, RAW_MAX, final=True)
        if not items:  # the rest of a frame is on its way (or did not fit in the scratch pipe: it will now)
            pipe.fit()
            pipe.stalled_until = time.monotonic() + STALL_RETRY
            return
        used = self.write(pipe, items, used)
        if not used:  # another pipe's line is unfinished in the file these go to: it comes first
            pipe.stalled_until = time.monotonic() + STALL_RETRY
            return
        self.commit()
        pipe.take(used)
        self.write_notes()
        if used < QUIET:  # a quiet pipe: let lines gather a moment, a look (and a note) for several of them
            pipe.stalled_until = time.monotonic() + GATHER

    def write(self, pipe: Pipe, items: list[Item], used: int) -> int:
        """File the items (a run of them for one file in one write); the bytes of the pipe done with."""
        now = time.time()
        i = 0
        while i < len(items):
            kind, source, seq, payload, end = items[i]
            if kind == ACCESS_PATH:
                self.access = payload.decode("utf-8", "surrogateescape")
                pipe.seq = max(pipe.seq, seq + 1)
                i += 1
                continue
            if seq >= 0 and seq < pipe.seq:  # written before a writer was killed; now taken out
                i += 1
                continue
            if seq > pipe.seq:  # without tee, a killed writer took these with it
                pipe.lost += seq - pipe.seq
                pipe.seq, pipe.lines = seq, 0
            file = self.target(kind, source)
            mirror = self.combined if kind != ACCESS else None
            if any(f is not None and f.open_line and f.owner not in (None, pipe) for f in (file, mirror)):
                return items[i - 1][4] if i else 0  # another pipe's line is unfinished there
            run = [items[i]]
            j = i + 1
            while j < len(items) and items[j][0] == kind and items[j][1] == source and items[j][2] >= 0:
                run.append(items[j])
                j += 1
            self.write_run(pipe, file, run, now, mirror)
            i = j
        return used

    def write_run(self, pipe: Pipe, file: LogFile, run: list[Item], now: float, mirror: LogFile | None) -> None:
        counts: list[tuple[int, int, int]] = []  # (seq, lines skipped, lines written) of each frame of the run
        chunks = []
        open_line = file.open_line
        for _, _, seq, payload, _ in run:
            skipped = 0
            if seq >= 0 and seq == pipe.seq and pipe.lines:  # a killed writer had written these lines of it
                skipped = pipe.lines
                payload = skip_lines(payload, skipped)
            if self.stamp:
                payload = self.stamped(payload, open_line)
                open_line = not payload.endswith(b"\n")
            chunks.append(payload)
            counts.append((seq, skipped, payload.count(b"\n")))

        data = b"".join(chunks)
        mirrored = 0  # bytes of data in the combined file (--combined) too

        # The combined file (--combined) gets what the file got, before the journal says the file has it. It
        # rotates only here, where every file holds the lines the journal's position says (its rotation
        # notes the journal), never inside the write, where the file and it hold different lines.
        if mirror is not None:
            mirror.rotate_before(len(data))

        def copy(lines: int) -> None:
            nonlocal mirrored
            if mirror is None:
                return
            end = 0
            for _ in range(lines):
                end = data.find(b"\n", end) + 1
            if end > mirrored:
                self.emit(mirror, data[mirrored:end], now, rotate=False)
                mirrored = end

        def progress(lines: int) -> None:  # before a rotation: what is in the file now
            copy(lines)
            for seq, skipped, count in counts:
                if seq < 0:
                    lines -= count
                    continue
                if lines < count:
                    pipe.seq, pipe.lines = seq, skipped + lines
                    break
                lines -= count
                pipe.seq, pipe.lines = seq + 1, 0
            self.commit()

        self.emit(file, data, now, progress)
        file.owner = pipe if file.open_line else None
        if mirror is not None and len(data) > mirrored:
            self.emit(mirror, data[mirrored:], now, rotate=False)
            mirror.owner = pipe if mirror.open_line else None
        last = max((seq for seq, _, _ in counts), default=-1)
        if last >= 0:
            pipe.seq, pipe.lines = last + 1, 0

    def stamped(self, payload: bytes, open_line: bool) -> bytes:
        """--time: each line after the time it arrived (a JSON record has its own; a line begun earlier has one)."""
        if not payload:
            return payload
        prefix = time.strftime(self.time_format).encode() + b" "
        lines = payload.split(b"\n")
        last = lines.pop()  # b'' when the payload ends with its newline
        stamped = [line if (k == 0 and open_line) or line.startswith(b"{") else prefix + line
                   for k, line in enumerate(lines)]
        if last:
            stamped.append(last if (not lines and open_line) or last.startswith(b"{") else prefix + last)
            return b"\n".join(stamped)
        return b"\n".join(stamped) + b"\n"

    def emit(self, file: LogFile, data: bytes, now: float, progress: Any = None, rotate: bool = True) -> None:
        dropped = file.dropped
        if not dropped:
            file.write(data, now, progress, rotate)
        elif file.write(f"prun: warning: {dropped} log lines were dropped ({file.reason})\n".encode() + data, now,
                        progress, rotate):
            file.dropped -= dropped  # space is back: the file says first what was lost
        else:
            file.dropped -= 1  # that note was not one of the app's lines

    def note(self, line: str) -> None:
        """A line of prun's own in the err log (once no line is unfinished there)."""
        self.notes.append(line)
        self.write_notes()

    def write_notes(self) -> None:
        file = self._file(self.err_path)
        if self.notes and not file.open_line:
            self.emit(file, "".join(f"{line}\n" for line in self.notes).encode(), time.time())
            self.notes.clear()
            self.commit()

    def reopen(self) -> None:
        for each in list(self.files.values()):
            each.open()

    def close(self) -> None:
        """Every writer of the pipes is gone: a line left unfinished is ended (nobody will finish it)."""
        for each in self.files.values():
            each.end_line()
            each.close()
        if self.journal is not None:
            self.journal.save({})  # done: no writer will take over these pipes


def skip_lines(payload: bytes, lines: int) -> bytes:
    start = 0
    for _ in range(lines):
        start = payload.find(b"\n", start) + 1
        if not start:
            return b""
    return payload[start:]


def serve(out_fd: int, err_fd: int, out_path: str, err_path: str, rotation: Rotation, stamp: str,
          split: bool = False, replacing: int = 0, how: str = "", combined_path: str = "") -> None:
    """File the two pipes until both reach EOF."""
    if combined_path in (out_path, err_path):
        combined_path = ""  # -l naming the out or err file: its lines once
    beside = next((path for path in (out_path, err_path, combined_path) if path and is_file_or_missing(path)), "")
    lock_fd, locked = lock(beside) if beside else (-1, False)  # (no .lock in /dev for -o/-e /dev/null)
    try:
        peek: Peek | None = Peek()
    except (OSError, AttributeError):
        peek = None
    writer = Writer(Pipe(out_fd, OUT, peek), Pipe(err_fd, ERR, peek), out_path, err_path, rotation, stamp,
                    split, Journal(lock_fd) if locked else None, combined_path)
    writer.recover()
    if combined_path:
        writer.combined = writer._file(combined_path)
    writer._file(out_path)
    writer._file(err_path)
    if replacing:
        writer.note(took_over(replacing, how, writer))
    run(writer)
    writer.close()


def is_file_or_missing(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


def took_over(pid: int, how: str, writer: Writer) -> str:
    said = f"prun: the log writer (pid {pid}) died {how}; pid {os.getpid()} took over its pipes: "
    if writer.takeover:
        again = f" ({writer.recovered} lines it had not noted as written were written again)" if writer.recovered else ""
        return said + f"no line was lost{again}"
    if writer.journal is None or writer.pipes[0].peek is None:
        return said + "the lines it had read but not written are lost (a count follows if any)"
    return said + "it had written nothing yet"


def run(writer: Writer) -> None:
    """The loop: drain whichever pipe has frames, until both are at EOF."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    reopen = [False]

    def on_usr1(signum: int, frame: object) -> None:
        reopen[0] = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead, counted as a full disk
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ)
    watched: set[int] = set()
    pipes = {pipe.fd: pipe for pipe in writer.pipes}
    while pipes:
        now = time.monotonic()
        for pipe in pipes.values():  # a pipe holding part of a frame is looked at again a little later
            if pipe.stalled_until <= now and pipe.fd not in watched:
                selector.register(pipe.fd, selectors.EVENT_READ)
                watched.add(pipe.fd)
        stalled = [p.stalled_until for p in pipes.values() if p.fd not in watched]
        for key, _ in selector.select(max(min(stalled) - now, 0) if stalled else None):
            if key.fd == wake_r:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
                continue
            pipe = pipes[key.fd]
            writer.drain(pipe)
            if pipe.stalled_until > time.monotonic() or pipe.eof:
                selector.unregister(pipe.fd)
                watched.discard(pipe.fd)
            if pipe.eof:
                lost(writer, pipe)
                del pipes[pipe.fd]
                pipe.close()
        if reopen[0]:
            reopen[0] = False
            writer.reopen()
        for pipe in pipes.values():
            if pipe.lost:
                lost(writer, pipe)


def lost(writer: Writer, pipe: Pipe) -> None:
    if pipe.lost:
        writer.note(f"prun: warning: {pipe.lost} frames of log lines were lost with the log writer that died")
        pipe.lost = 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="prun-log-writer", description="Write an app's output into rotated files.")
    parser.add_argument("out_fd", type=int)
    parser.add_argument("err_fd", type=int)
    parser.add_argument("out_path")
    parser.add_argument("err_path")
    parser.add_argument("--name", default="")
    parser.add_argument("--max-size", type=int, default=Rotation.max_size)
    parser.add_argument("--retain", type=int, default=Rotation.retain)
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--daily", action="store_true")
    parser.add_argument("--time", default="", help="strftime format of a prefix to each line")
    parser.add_argument("--split", action="store_true", help="a worker's lines go to its own files")
    parser.add_argument("--combined", default="", help="a third file with every out and err line (PM2's -l)")
    parser.add_argument("--replacing", type=int, default=0, help="the pid of the writer this one replaces")
    parser.add_argument("--how", default="", help="how that writer ended, for the err log's note")
    args = parser.parse_args()
    try:
        import setproctitle

        setproctitle.setproctitle(f"prun log-writer {args.name}")
    except ImportError:  # pragma: no cover
        pass
    try:
        serve(args.out_fd, args.err_fd, args.out_path, args.err_path,
              Rotation(args.max_size, args.retain, args.compress, args.daily), args.time, args.split,
              args.replacing, args.how, args.combined)
    except LogFileRefused as exc:
        print(f"prun: error: {exc.strerror}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
