"""A fork-mode script that runs until told to stop, then cleans up: prints `cleanup done` in its finally block.

Stopped with SIGINT (PM2's kill signal, prun's default) it sees KeyboardInterrupt; with SIGTERM it dies at once.
"""

import time

print("cleanup started", flush=True)
try:
    while True:
        time.sleep(0.1)
finally:
    print("cleanup done", flush=True)
