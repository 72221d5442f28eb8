"""An app that cannot be imported."""

raise RuntimeError("the database is unreachable")
