"""The local stack for tests, bench and `make demo`; never shipped."""
