"""A TCP echo app whose start-up does what the environment asks, for container-mode tests.

    EXIT_AT_IMPORT=N      sys.exit(N) while importing
    SIGNAL_AT_IMPORT=N    kill itself with signal N while importing
    SLOW_IMPORT=SECONDS   sleep while importing
    ORPHAN=1              leave a grandchild that exits after a moment (its parent exits at once)
"""

import os
import subprocess
import sys
import time

from tcp import handle  # noqa: F401  (served as lifecycle:handle)

print(f"app imported in pid {os.getpid()}", flush=True)
print("a line on stderr", file=sys.stderr, flush=True)

if os.environ.get("EXIT_AT_IMPORT"):
    sys.exit(int(os.environ["EXIT_AT_IMPORT"]))
if os.environ.get("SIGNAL_AT_IMPORT"):
    os.kill(os.getpid(), int(os.environ["SIGNAL_AT_IMPORT"]))
if os.environ.get("SLOW_IMPORT"):
    time.sleep(float(os.environ["SLOW_IMPORT"]))
if os.environ.get("ORPHAN"):
    # sh exits at once; its background sleep is re-parented to PID 1 and exits 0.3 s later
    subprocess.run(["sh", "-c", "sleep 0.3 &"], check=True)
