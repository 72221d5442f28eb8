"""`prun startOrRestart prun.toml [--env NAME] [--only NAME,...]`: start the file's apps, restart those running.

The same as `prun start prun.toml` and `prun restart prun.toml` (appfile.py); PM2's name for it. Runs in
the client: `start` and `restart` requests, one per app.
"""

from __future__ import annotations

from prun.cluster.commands.appfile import file_command

command = file_command("startOrRestart", reload=False, summary="Start a prun.toml's apps; restart those running "
                                                                "(with the file's env).")
