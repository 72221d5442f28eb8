"""`python -m prun.cluster.daemon` runs the daemon in the foreground (the client starts it detached)."""

from prun.cluster.daemon import daemonlog
from prun.cluster.daemon.god import main

daemonlog.install()  # a full disk under daemon.log must not fail what the daemon was saying something about
main()
