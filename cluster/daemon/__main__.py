"""`python -m prun.cluster.daemon` runs the daemon in the foreground (the client starts it detached)."""

from prun.cluster.daemon.god import main

main()
