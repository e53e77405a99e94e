"""The browser sandbox: a local Slack channel page for `make demo`."""
