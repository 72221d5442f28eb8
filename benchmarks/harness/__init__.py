"""The one benchmark harness every scenario uses (python -m benchmarks, python -m benchmarks.cluster, and
the scenarios other work adds): processes, servers, wrk, rounds, statistics, the machine, result files.
See benchmarks/README.md."""
