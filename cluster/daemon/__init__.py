"""prun's daemon ("God", as PM2 calls it): one background process per $PRUN_HOME supervising one master per app.

    god.py       the app table, the RPC commands' state, adoption of masters left by an earlier daemon
    app.py       one app: what it was started with, its state, its record in $PRUN_HOME/apps/
    spec.py      what `prun start` gave an app, each field a row of schema.py (its type, default, check)
    schema.py    the declared schema every spec is read through: a start request, the dump, an app record
    dump.py      `prun save`'s dump.json (and its .bak), read back by `prun resurrect`
    runner.py    one app's processes: its listener holder, its master (or fork-mode supervisor), its lines
    holder.py    the tiny process that keeps an app's listening sockets open across masters and daemons
    forkmode.py  the supervisor of a fork-mode app (commands and scripts, no listener)
    rpc.py       the JSON protocol on $PRUN_HOME/rpc.sock (PROTOCOL.md beside this file)
    bus.py       the event stream
    home.py      $PRUN_HOME: its modes, the pid and lock files, the app records, the dump
    stats.py     cpu and memory of each app's processes (psutil, imported on first use)
    ecosystem.py prun.toml files with several [[apps]]
"""
