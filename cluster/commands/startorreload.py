"""`prun startOrReload prun.toml [--env NAME] [--only NAME,...]`: start the file's apps, reload those running.

PM2's startOrReload (and startOrGracefulReload, the same here): a running app is reloaded losslessly,
unless the file changes its env, which only a restart applies (appfile.py). Runs in the client: `start`,
`reload` (or `restart`) requests, one per app.
"""

from __future__ import annotations

from prun.cluster.commands.appfile import file_command

command = file_command("startOrReload", reload=True, summary="Start a prun.toml's apps; reload those running "
                                                              "(restart those whose env the file changes).")
