"""Cluster benchmarks of prun against uvicorn, gunicorn, granian and PM2: `python -m benchmarks.cluster`."""
