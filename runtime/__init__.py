"""prun's worker side: everything that runs inside a worker process.

This package never imports `prun.cluster`: a worker starts light and fast.
"""
