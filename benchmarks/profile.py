"""Where a prun worker's time goes under load: py-spy on the worker while wrk loads it.

    python -m benchmarks.profile                              # hello_cl, keep-alive, pinned as in `pinned`
    python -m benchmarks.profile --shape fastapi --close --seconds 8

One prun worker (`-i 1`, the default balance) pinned with its master to CPU 0, `wrk -t1 -c64` pinned to
CPU 1, as the `pinned` scenario of `python -m benchmarks` runs it. py-spy samples the worker (Python
frames only, without stopping it) for `--seconds`; the run writes `results/profile-SHAPE-MODE.svg` (a
flame graph) and `.md` (the frames with the most samples of their own, and of them and what they call).
Frames named `Worker.run (runtime/container.py)` with nothing above them are the event loop itself:
uvloop's C code and the system calls it makes (epoll, recv, accept). Needs py-spy (`pip install py-spy`)
and the right to ptrace the worker (root, or kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time

from benchmarks import run as http
from benchmarks.harness import procs, servers, wrk
from benchmarks.harness.results import Context, begin, machine_line, table, write_json, write_md

TOP = 20


def top_frames(raw: str) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """py-spy's raw (collapsed) stacks: the total samples, and the frames by own and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return total, own.most_common(TOP), inclusive.most_common(TOP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="hello_cl", choices=sorted(http.SHAPES))
    parser.add_argument("--close", action="store_true", help="a new connection per request (Connection: close)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds sampled (wrk runs 2 s longer)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--allow-busy", action="store_true")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(sys.executable).rsplit("/", 1)[0])
    if spy is None:
        print("benchmarks.profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    ctx = Context(allow_busy=args.allow_busy)
    if not begin(ctx):
        return 2
    mode = "close" if args.close else "keepalive"
    name = f"profile-{args.shape}-{mode}"
    app = http.SHAPES[args.shape]
    server = servers.make("prun", 1, app=app, cpus=http.MODES["pinned"]["cpus"])
    try:
        server.start()
        server.wait_serving(60)
        wrk.run(server.port, seconds=1, connections=http.CONNECTIONS, close=args.close, cpus="1")  # warm-up
        (worker,) = server.worker_pids()
        load = procs.REGISTRY.popen(wrk.command(server.port, seconds=args.seconds + 2, connections=http.CONNECTIONS,
                                                close=args.close, cpus="1"),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)  # wrk's connections are open and busy before sampling starts
        svg, raw = ctx.out_dir / f"{name}.svg", ctx.tmp / "stacks.txt"
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        for fmt, out in (("flamegraph", svg), ("raw", raw)):
            subprocess.run([spy, "record", "--pid", str(worker), "--duration", str(round(args.seconds / 2)),
                            "--rate", str(args.rate), "--nonblocking", "--format", fmt, "--output", str(out)],
                           check=True, capture_output=True)
        out, _ = load.communicate(timeout=args.seconds + 40)
        load_result = wrk.parse(out)
        total, own, inclusive = top_frames(raw.read_text())
    finally:
        server.stop()
        ctx.remove_tmp()
    data = write_json(ctx, name, {"shape": args.shape, "connection": mode, "command": server.command(),
                                  "samples": total, "own": own, "inclusive": inclusive, "wrk": load_result})

    def rows(frames: list[tuple[str, int]]) -> list[list[object]]:
        return [[f"{100 * n / max(total, 1):.1f}%", f"`{frame}`"] for frame, n in frames]

    text = "\n\n".join([
        f"# Where a prun worker's time goes: {args.shape}, {mode}",
        machine_line(data),
        f"py-spy (Python frames, {args.rate} samples/s, {total} samples) on the worker of "
        f"`{' '.join(server.command()[1:])}` pinned to CPU 0, while `wrk -t1 -c{http.CONNECTIONS}` on CPU 1 "
        f"loaded it ({load_result['requests_per_s']:,.0f} req/s over the whole wrk run). "
        f"Flame graph: [{svg.name}]({svg.name}).",
        "Frames with the most samples of their own (the line running when sampled):",
        table(["samples", "frame"], rows(own)),
        "Frames with the most samples of their own and of what they call:",
        table(["samples", "frame"], rows(inclusive)),
    ])
    write_md(ctx, name, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
