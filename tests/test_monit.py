"""prun monit, driven in a real terminal (tmux): it shows the workers and their request counts update."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import pytest

from tests.daemon_support import Home, get
from tests.support import prun_command, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")


class Terminal:
    """A tmux session of a given size running one command."""

    def __init__(self, command: list[str], env: dict[str, str], width: int, height: int) -> None:
        self.name = f"prun-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        f"env {exports} {' '.join(command)}; sleep 30"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True,
                              check=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def worker_rows(screen: str) -> dict[int, int]:
    """pid -> requests, from the workers table."""
    rows = re.findall(r"^(\d+)\s+(\d+)\s+\d+\s+ready\s+\d+%\s+\S+\s+\d+\s+(\d+)\s+[\d.]+\s+\d+\s*$", screen, re.M)
    return {int(pid): int(requests) for _, pid, requests in rows}


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 50)])
def test_monit_shows_both_workers_and_their_request_counts_update(home: Home, width: int, height: int) -> None:
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "-i", "2", "--name", "api")
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "other")
    port = home.port("api")
    pids = set(home.app("api") and worker_pids(home))
    terminal = Terminal(prun_command() + ["monit"], {"PRUN_HOME": home.path}, width, height)
    try:
        screen = wait_until(lambda: (lambda s: len(worker_rows(s)) == 2 and s)(terminal.screen()),
                            what="both workers on screen")
        assert set(worker_rows(screen)) == pids
        assert "workers of api" in screen and "prun monit · 2 apps" in screen
        lines = screen.splitlines()
        assert len(lines) <= height and all(len(line) <= width for line in lines)
        before = sum(worker_rows(screen).values())
        for _ in range(20):
            get(port)
        wait_until(lambda: sum(worker_rows(terminal.screen()).values()) >= before + 20,
                   what="the request counts to update")
        logs = terminal.screen().split("latest lines of api", 1)[1]  # the app's own output, not prun's lines
        assert re.search(r"greeter (imported in pid|says hello)", logs) and "prun: " not in logs, logs
        terminal.keys("j")  # select the next app
        wait_until(lambda: "workers of other" in terminal.screen(), what="the other app selected")
        wait_until(lambda: len(worker_rows(terminal.screen())) == 1, what="its one worker")
        terminal.keys("q")
        wait_until(lambda: "prun monit" not in terminal.screen(), what="monit to quit")
    finally:
        terminal.close()


def worker_pids(home: Home) -> list[int]:
    import psutil

    master = psutil.Process(home.app("api")["pid"])
    return [child.pid for child in master.children()]
