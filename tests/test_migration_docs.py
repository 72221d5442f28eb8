"""The mapping tables of docs/from-gunicorn.md and docs/from-uvicorn.md agree with what prun accepts.

Every row marked *same* or *renamed* names something prun takes (a flag of `prun run`, a setting it reads
from a gunicorn config file, an environment variable); every *not applicable* flag is one prun does not
take; and the gunicorn settings table covers exactly the settings cluster/gunicorn.py knows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prun.cluster import gunicorn
from prun.cluster.cli import run_command
from prun.cluster.config import from_environ
from prun.runtime.hooks import MASTER_HOOKS, WORKER_HOOKS

DOCS = Path(__file__).resolve().parent.parent / "docs"
STATUSES = {"same", "renamed", "not applicable"}
FLAGS = {flag: param.name for param in run_command.params for flag in (*param.opts, *param.secondary_opts)}
FLAGS["--version"] = "version"  # the group's, as in `prun --version`


def _tables(name: str) -> dict[str, list[tuple[str, str, str]]]:
    """Each table of a doc whose third column is `status`, by its first header: (first, prun, status) rows."""
    tables: dict[str, list[tuple[str, str, str]]] = {}
    current: list[tuple[str, str, str]] | None = None
    for line in (DOCS / name).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 3 and cells[2] == "status":
            current = tables.setdefault(cells[0], [])
        elif current is not None and cells and not set(cells[0]) <= {"-"}:
            assert cells[2] in STATUSES, line
            current.append((cells[0], cells[1], cells[2]))
        elif not cells:
            current = None
    return tables


def _word(cell: str) -> str:
    """The first word of a cell's first `code` (`--watch=DIR` gives --watch, `-b unix:PATH` gives -b)."""
    match = re.search(r"`([^`]*)`", cell)
    assert match, cell
    return re.split(r"[ =]", match.group(1))[0]


def _option(flag: str) -> str:
    """The option a flag of `prun run` sets, or a failure naming the flag."""
    assert flag in FLAGS, f"prun run does not take {flag}"
    return FLAGS[flag]


GUNICORN = _tables("from-gunicorn.md")
UVICORN = _tables("from-uvicorn.md")


def test_the_docs_have_their_tables():
    assert set(GUNICORN) == {"gunicorn.conf.py setting", "gunicorn flag"}
    assert set(UVICORN) == {"uvicorn flag", "uvicorn variable"}
    assert all(len(rows) > 10 for rows in (*GUNICORN.values(), UVICORN["uvicorn flag"]))


@pytest.mark.parametrize(("setting", "prun", "status"), GUNICORN["gunicorn.conf.py setting"])
def test_a_gunicorn_setting_row(setting: str, prun: str, status: str) -> None:
    name = _word(setting)
    if status == "not applicable":
        assert name in gunicorn.IGNORED or name in gunicorn.REFUSED, f"{name} is read by prun"
        return
    if name in MASTER_HOOKS + WORKER_HOOKS:
        assert _word(prun) == name  # a hook prun runs, under its own name
        return
    assert name in gunicorn.MAPPED, f"prun does not read {name} from a gunicorn config file"
    target = gunicorn.MAPPED[name][0]
    words = _word(prun)
    if words == "APP":
        assert target == "app"
        return
    flags = words.split("/")
    assert all(_option(flag) == target for flag in flags), f"{name}: the table says {prun}, prun sets {target}"
    assert (status == "same") == (name == target), f"{name} is prun's {target}: same or renamed?"


def test_the_gunicorn_settings_table_covers_every_setting_prun_knows():
    listed = [_word(row[0]) for row in GUNICORN["gunicorn.conf.py setting"]]
    assert len(listed) == len(set(listed))
    assert set(listed) == gunicorn.KNOWN


def test_a_gunicorn_config_with_every_same_or_renamed_setting_is_read(tmp_path):
    """Each setting the table says prun reads is read from a real file, no line saying it is ignored."""
    from prun.cluster.config import FileExtras, build

    values = {"wsgi_app": '"web:app"', "bind": '"127.0.0.1:9"', "workers": "3", "threads": "2", "max_requests": "5",
              "max_requests_jitter": "1", "timeout": "7", "graceful_timeout": "8", "keepalive": "9", "backlog": "10",
              "limit_request_line": "1000", "reload": "True", "chdir": f'"{tmp_path}"', "raw_env": '["A=1"]',
              "pidfile": '"p"', "forwarded_allow_ips": '"*"', "accesslog": '"-"', "access_log_format": '"%(h)s"',
              "errorlog": '"e.log"', "loglevel": '"warning"', "proc_name": '"api"', "keyfile": '"k"',
              "certfile": '"c"', "cert_reqs": "0", "ca_certs": '"ca"', "ciphers": '"ECDHE"',
              "asgi_lifespan": '"off"', "root_path": '"/r"'}
    rows = [_word(r[0]) for r in GUNICORN["gunicorn.conf.py setting"] if r[2] != "not applicable"]
    settings = [name for name in rows if name not in MASTER_HOOKS + WORKER_HOOKS]
    assert set(settings) == set(values)
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    extras = FileExtras()
    config = build({"config": str(conf)}, {}, extras)
    assert extras.notes == []
    assert (config.app, config.instances, config.keepalive_timeout, config.log_level) == ("web:app", 3, 9.0, "warning")


@pytest.mark.parametrize(("flag", "prun", "status"), GUNICORN["gunicorn flag"] + UVICORN["uvicorn flag"])
def test_a_command_line_flag_row(flag: str, prun: str, status: str) -> None:
    theirs = _word(flag)
    if theirs == "APP":
        assert "app" in {p.name for p in run_command.params}
        return
    if status == "not applicable":
        assert theirs not in FLAGS, f"prun takes {theirs}: the row is stale"
        return
    _option(_word(prun))  # prun takes its flag
    if status == "same":
        assert _option(theirs) == _option(_word(prun)), f"{theirs} is not prun's {_word(prun)}"


@pytest.mark.parametrize(("variable", "prun", "status"), UVICORN["uvicorn variable"])
def test_an_environment_variable_row(variable: str, prun: str, status: str) -> None:
    ours = _word(prun)
    if ours == "PRUN_<OPTION>":  # every option is one: what test_options checks; one example here
        assert from_environ({"PRUN_INSTANCES": "3"}) == {"instances": ("3", "PRUN_INSTANCES")}
        return
    assert from_environ({ours: "10.0.0.1" if "IPS" in ours else "m:a" if ours.endswith("APP") else "2"}), ours
    if status == "same":
        assert _word(variable) == ours
