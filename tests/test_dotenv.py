"""--env-file: a dotenv file read into the workers' environment (cluster/dotenv.py), as uvicorn's."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from prun.cluster.config import build
from prun.cluster.dotenv import read_env_file
from prun.cluster.errors import UsageError

GREETER = '''
import os


async def app(scope, receive, send):
    if scope["type"] == "http":
        body = " ".join(os.environ.get(k, "-") for k in ("GREETING", "SOURCE", "KEPT")).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
'''


def _get(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_the_lines_python_dotenv_reads(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# a comment\n\nexport A=1\nB = two words # a comment\nC='single ${A} # kept'\n"
                   'D="line\\nbreak ${A} ${NOPE:-fallback} \\"q\\""\nE=${B}/${FROM_ENV}\nBARE\nF=\nG=a=b\n')
    assert read_env_file(str(env), {"FROM_ENV": "outside"}) == {
        "A": "1", "B": "two words", "C": "single ${A} # kept", "D": 'line\nbreak 1 fallback "q"',
        "E": "two words/outside", "F": "", "G": "a=b"}


@pytest.mark.parametrize(("content", "message"), [
    ("A=1\nnot a line\n", r"line 2: expected KEY=VALUE, got 'not a line'"),
    ("A='open\n", "line 1: unterminated single quote"),
    ('A="open\n', "line 1: unterminated double quote"),
])
def test_a_line_it_cannot_read_is_named(tmp_path: Path, content: str, message: str) -> None:
    env = tmp_path / ".env"
    env.write_text(content)
    with pytest.raises(UsageError, match=message):
        read_env_file(str(env), {})
    with pytest.raises(UsageError, match="cannot read --env-file .*nope: no such file"):
        read_env_file(str(tmp_path / "nope"), {})


def test_prun_environment_and_env_beat_the_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("GREETING=file\nSOURCE=file\nKEPT=file\n")
    config = build({"app": "m:a", "env_file": str(env), "env": ("SOURCE=flag",)}, {"KEPT": "outside"})
    assert config.env == {"GREETING": "file", "SOURCE": "flag"}  # KEPT: the workers inherit prun's own


def test_workers_get_the_file_and_a_reload_reads_it_again(prun, tmp_path: Path) -> None:
    (tmp_path / "greeter.py").write_text(GREETER)
    env = tmp_path / "app.env"
    env.write_text("GREETING=hello\nSOURCE=file\nKEPT=file\n")
    master = prun("greeter:app", "--env-file", "app.env", "--env", "SOURCE=flag", "--port", "0", cwd=tmp_path,
                  env={"KEPT": "outside"})
    port = master.wait_ready()
    assert _get(port) == "hello flag outside"
    env.write_text("GREETING=again\n")
    master.reload()
    assert _get(port) == "again flag outside"
