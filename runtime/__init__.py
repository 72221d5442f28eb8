"""prun's worker side: everything that runs inside a worker process.

This package never imports `prun.cluster`: a worker starts light and fast.
"""

DISTRIBUTION = "prun-cluster"  # prun's name on PyPI (`prun` there is another project); the command and package are prun


def install_hint(extra: str) -> str:
    """The command that installs one of prun's extras, for messages: pip install 'prun-cluster[ws]'."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
