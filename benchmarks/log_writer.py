"""What prun's log path costs: lines per second and CPU per line, against the app writing to a file directly.

    python -m benchmarks.log_writer [--lines 100000] [--rounds 5] [--max-size 1M] [--before REV]

Two processes print numbered 100-byte lines as fast as they can (line-buffered, as prun's workers: one
print, one write), in these set-ups, taking turns round by round:

    file         both append to one file themselves (O_APPEND): no prun at all
    relay        each writes into a pipe of its own, read by a relay process running the master's
                 OutputRelay and Sink (cluster/output.py, logsink.py: whole lines per source, frames), which
                 writes into the log writer's pipes (cluster/daemon/logwriter.py): the path under the daemon
    relay-json   the same with --log-format json (a JSON record per line)
    before       (with --before REV) both write into one pipe, read by the log writer of git revision REV
                 (cluster/daemon/logfiles.py there): prun's design before each worker had pipes of its own,
                 which tore lines written in pieces

A run ends when the log writer (or, for `file`, both printers) has exited: every line is on disk. Each run
is checked: every line there once and whole. Reported per set-up: lines per second (wall time, median of
the rounds and their spread) and the CPU time each process spent per line (from wait4's rusage, which a busy
machine disturbs less than wall time), and per round the ratio to `file`. Then the same set-ups paced
(`--paced`, 1,000 lines/s per printer by default): a quiet app, whose every line wakes the relay and the
writer alone, costs more CPU per line. Writes benchmarks/results/log-writer.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import machine
from benchmarks.harness.rounds import interleave
from prun.cluster.options import parse_size

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("file", "relay", "relay-json")
PRINTER = """
import sys, time
sys.stdout.reconfigure(line_buffering=True, write_through=False)  # as prun's workers: one print, one write
pid, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
pad = "x" * 80
due = time.monotonic()
for n in range(count):
    print(f"w {pid} {n:08d} {pad}")
    if rate:  # paced: a line every 1/rate s (a quiet app: each line wakes the reader alone)
        due += 1 / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
"""


def cpu(usage: object) -> float:
    return float(getattr(usage, "ru_utime", 0.0) + getattr(usage, "ru_stime", 0.0))


def wait(proc: subprocess.Popen[bytes]) -> float:
    """Wait for a child; its CPU seconds."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return cpu(usage)


def printers(count: int, stdout: list[int], rate: float = 0.0) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", PRINTER, str(i), str(count), str(rate)], stdout=fd)
            for i, fd in enumerate(stdout)]


def run(mode: str, count: int, directory: Path, max_size: str, before: str, rate: float = 0.0) -> dict[str, float]:
    """One run of a set-up: seconds, and the CPU seconds of the printers, the relay and the log writer."""
    out = directory / "app-out.log"
    began = time.perf_counter()
    if mode == "file":
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        procs = printers(count, [fd, fd], rate)
        os.close(fd)
        apps = sum(wait(p) for p in procs)
        return {"seconds": time.perf_counter() - began, "apps": apps, "relay": 0.0, "writer": 0.0}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    module = [before] if mode == "before" else ["-m", "prun.cluster.daemon.logwriter"]
    retain = 2 * count * 400 // parse_size(max_size) + 10  # every rotated file kept (JSON lines too), to check each line
    writer = subprocess.Popen([sys.executable, *module, str(out_r), str(err_r), str(out),
                               str(directory / "app-err.log"), "--max-size", str(parse_size(max_size)),
                               "--retain", str(retain)], pass_fds=(out_r, err_r))
    os.close(out_r)
    os.close(err_r)
    relay_cpu = directory / "relay-cpu.json"
    if mode == "before":
        procs = printers(count, [out_w, out_w], rate)
    else:
        procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.log_writer", "--as-relay", mode,
                                   "--lines", str(count), "--rate", str(rate), "--cpu-file", str(relay_cpu)],
                                  stdout=out_w, stderr=err_w)]
    os.close(out_w)
    os.close(err_w)
    spent = sum(wait(p) for p in procs)
    writer_cpu = wait(writer)
    seconds = time.perf_counter() - began
    if mode == "before":
        return {"seconds": seconds, "apps": spent, "relay": 0.0, "writer": writer_cpu}
    relay = json.loads(relay_cpu.read_text())
    return {"seconds": seconds, "apps": relay["apps"], "relay": relay["relay"], "writer": writer_cpu}


def check(mode: str, count: int, directory: Path) -> str:
    """'' if every line is in the files once and whole, else what is wrong."""
    seen: dict[tuple[str, str], int] = {}
    broken = 0
    for path in directory.iterdir():
        if not path.name.startswith("app-out.log") or path.name.endswith((".idx", ".lock")):
            continue
        for line in path.read_text().splitlines():
            text = json.loads(line)["message"] if mode == "relay-json" else line
            words = text.split()
            if len(words) != 4 or len(words[3]) != 80:
                broken += 1
                continue
            seen[(words[1], words[2])] = seen.get((words[1], words[2]), 0) + 1
    lost = 2 * count - len(seen)
    repeated = sum(v - 1 for v in seen.values())
    return "" if not (lost or repeated or broken) else f"lost {lost}, repeated {repeated}, broken {broken}"


def as_relay(mode: str, count: int, rate: float, cpu_file: str) -> None:
    """The relay process of the `relay` set-ups: the master's output relay over two printers of its own."""
    from prun.cluster.logformat import Records
    from prun.cluster.logsink import Sink
    from prun.cluster.output import OutputRelay, pipe_size

    async def main() -> float:
        loop = asyncio.get_running_loop()
        json_format = mode == "relay-json"
        sink = Sink(loop, framed=True, pipe_size=pipe_size(64 << 10, json_format))
        relay = OutputRelay(loop, sink, 64 << 10, Records("bench") if json_format else None)
        ends = [os.pipe() for _ in range(2)]
        procs = printers(count, [w for _, w in ends], rate)
        for slot, ((read_end, write_end), proc) in enumerate(zip(ends, procs)):
            os.close(write_end)
            relay.attach({read_end: "stdout"}, slot, proc.pid)
        while relay.feeds:
            await asyncio.sleep(0.005)
        apps = 0.0
        for proc in procs:
            apps += cpu(os.wait4(proc.pid, 0)[2])
        relay.close()
        return apps

    apps = asyncio.run(main())
    own = os.times()
    Path(cpu_file).write_text(json.dumps({"apps": apps, "relay": own.user + own.system}))


def median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def report(args: argparse.Namespace, runs: list[dict[str, object]], load: tuple[list[float], list[float]]) -> str:
    total = 2 * args.lines
    by_mode = {mode: [r for r in runs if r["mode"] == mode] for mode in args.modes}
    lines = [
        "# The log path: lines per second and CPU per line (benchmarks/log_writer.py)",
        "",
        f"{platform.machine()}, {os.cpu_count()} CPUs ({machine.cpu_model()}), Python {platform.python_version()}; "
        f"load average {load[0][0]:.2f} at the start, {load[1][0]:.2f} at the end (a shared machine: compare "
        f"ratios and CPU per line, not absolute rates). `python -m benchmarks.log_writer --lines {args.lines} "
        f"--rounds {args.rounds} --max-size {args.max_size}{' --before ' + args.before if args.before else ''}`: two processes print {args.lines:,} 100-byte lines "
        f"each per run ({total * 100 / 1e6:.0f} MB), the set-ups taking turns, round by round.",
        "",
        "| set-up | lines/s, median (min-max) | / file, median (min-max) | CPU µs per line: printers | relay | "
        "log writer | all |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {int(r["round"]): total / float(r["seconds"]) for r in by_mode.get("file", [])}  # type: ignore[call-overload]
    for mode, done in by_mode.items():
        rates = [total / float(r["seconds"]) for r in done]  # type: ignore[arg-type]
        ratios = [total / float(r["seconds"]) / base[int(r["round"])] for r in done  # type: ignore[call-overload]
                  if int(r["round"]) in base]  # type: ignore[call-overload]
        per = {key: statistics.median(float(r[key]) for r in done) * 1e6 / total  # type: ignore[arg-type]
               for key in ("apps", "relay", "writer")}
        ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else ""
        lines.append(f"| `{mode}` | {median_spread(rates)} | {ratio} | {per['apps']:.1f} | {per['relay']:.1f} | "
                     f"{per['writer']:.1f} | {sum(per.values()):.1f} |")
    wrong = [f"{r['mode']} round {r['round']}: {r['check']}" for r in runs if r["check"]]
    lines += ["", "Every run was checked: " + ("every line once and whole." if not wrong else "; ".join(wrong))]
    return "\n".join(lines) + "\n"


def paced_report(args: argparse.Namespace, paced: list[dict[str, object]]) -> str:
    """A quiet app: each line wakes the relay and the writer alone, and that costs more per line."""
    if not paced:
        return ""
    total = 2 * args.paced_lines
    lines = ["", f"Paced: each printer at {args.paced:,.0f} lines/s ({args.paced_lines:,} lines), so that each line "
             "wakes the reader alone; CPU per line (median of the rounds; a run of no line, its processes' start-up and "
             "exit, taken off):", "",
             "| set-up | relay | log writer | both |", "|---|---:|---:|---:|"]
    for mode in dict.fromkeys(str(r["mode"]) for r in paced):
        done = [r for r in paced if r["mode"] == mode]
        relay = statistics.median(float(r["relay"]) for r in done) * 1e6 / total  # type: ignore[arg-type]
        writer = statistics.median(float(r["writer"]) for r in done) * 1e6 / total  # type: ignore[arg-type]
        lines.append(f"| `{mode}` | {relay:.1f} µs | {writer:.1f} µs | {relay + writer:.1f} µs |")
    wrong = [f"{r['mode']} round {r['round']}: {r['check']}" for r in paced if r["check"]]
    lines += ["", "Every paced run was checked: " + ("every line once and whole." if not wrong else "; ".join(wrong))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000, help="per printer, per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-size", default="1M", help="the log writer's --max-size (rotated files are all kept)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--before", default="", metavar="REV", help="also measure the log writer of git revision REV")
    parser.add_argument("--paced", type=float, default=1000.0, metavar="RATE",
                        help="also: each printer at RATE lines/s for --paced-lines lines, CPU per line (0: not)")
    parser.add_argument("--paced-lines", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--as-relay", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cpu-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_relay:
        as_relay(args.as_relay, args.lines, args.rate, args.cpu_file)
        return
    args.modes = args.modes.split(",") + (["before"] if args.before else [])
    before = ""
    if args.before:  # that revision's writer, as a script (it imports prun's modules of this checkout)
        before = str(Path(tempfile.mkdtemp(prefix="prun-logbench-")) / "before_logfiles.py")
        Path(before).write_bytes(subprocess.run(["git", "show", f"{args.before}:cluster/daemon/logfiles.py"],
                                                cwd=RESULTS.parent.parent, check=True, capture_output=True).stdout)
    start_load = machine.loadavg()
    runs: list[dict[str, object]] = []
    for index, mode in interleave(args.modes, args.rounds):
        directory = Path(tempfile.mkdtemp(prefix="prun-logbench-"))
        try:
            figures = run(mode, args.lines, directory, args.max_size, before)
            problem = check(mode, args.lines, directory)
        finally:
            shutil.rmtree(directory)
        runs.append({"mode": mode, "round": index, **figures, "check": problem})
        print(f"  round {index}/{args.rounds} {mode:12} {2 * args.lines / figures['seconds']:12,.0f} lines/s"
              f"{'  ' + problem if problem else ''}", flush=True)
    paced: list[dict[str, object]] = []
    for index, mode in interleave([m for m in args.modes if m != "file"] if args.paced else [], args.rounds):
        directory = Path(tempfile.mkdtemp(prefix="prun-logbench-"))
        try:
            idle = run(mode, 0, directory, args.max_size, before)  # starting and stopping, no line: taken off
            shutil.rmtree(directory)
            directory.mkdir()
            figures = run(mode, args.paced_lines, directory, args.max_size, before, args.paced)
            problem = check(mode, args.paced_lines, directory)
        finally:
            shutil.rmtree(directory)
        figures.update(relay=figures["relay"] - idle["relay"], writer=figures["writer"] - idle["writer"])
        paced.append({"mode": mode, "round": index, **figures, "check": problem})
        print(f"  paced round {index}/{args.rounds} {mode:12} {figures['relay'] + figures['writer']:.3f} s CPU",
              flush=True)
    if before:
        shutil.rmtree(os.path.dirname(before))
    text = report(args, runs, (start_load, machine.loadavg())) + paced_report(args, paced)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "log-writer.md").write_text(text)
    (RESULTS / "log-writer.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                                         "load": [start_load, machine.loadavg()], "runs": runs,
                                                         "paced": paced},
                                                        indent=1))
    print(text)


if __name__ == "__main__":
    main()
