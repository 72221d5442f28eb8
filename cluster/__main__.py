"""`python -m prun.cluster ...` is the `prun` command."""

from prun.cluster.cli import main

main()
