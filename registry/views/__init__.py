"""The Slack views: every Block Kit message, modal and tab, built within Slack's limits. Pure."""
