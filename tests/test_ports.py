"""The dev kit's ports for servers a test stops and starts again (devkit.stack.steady_port)."""

from __future__ import annotations

import socket

from devkit.stack import _ephemeral_range, steady_port


def test_a_steady_port_is_free_and_never_a_clients_source_port():
    first, last = _ephemeral_range()
    assert first < last
    for _ in range(20):
        port = steady_port()
        assert not first <= port <= last  # the kernel never gives it to an outgoing connection
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # and it is free
