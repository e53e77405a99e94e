"""The adapters: MLflow, Slack, Redis (locks, dedup, the queue), behind the ports."""
