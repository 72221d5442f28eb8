"""prun's master side: CLI, config, listeners, the master loop, reloads, balancing."""
