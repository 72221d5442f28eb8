"""A fork-mode script that prints its instance and start time, then exits 1 (a crash loop)."""

import os
import time

print(f"crasher instance {os.environ.get('PRUN_INSTANCE')} started at {time.monotonic():.3f}", flush=True)
time.sleep(float(os.environ.get("CRASH_AFTER", "0")))
raise SystemExit(1)
