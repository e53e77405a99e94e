"""Local Slack stand-ins for the tests and the browser sandbox."""
