"""The chaos soak: the real stack under whole-worker kills, restarts and Slack faults."""
