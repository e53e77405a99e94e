"""The process plumbing: settings read at start, the composition root, logs, metrics, HTTP."""
