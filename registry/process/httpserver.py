"""Serve a WSGI app on a threaded werkzeug server until Ctrl-C (the services' `python -m`)."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable
from typing import Any


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port, raising OSError when the port is taken."""
    # Bound here rather than by make_server: on a busy port werkzeug prints two lines of
    # its own and calls sys.exit(1), so no caller could report it in one line.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def serve(build: Callable[[], Any], host: str, port: int, *, name: str, path: str = "") -> int:
    """Bind host:port, then build the app and serve it; a busy port is one line and exit 2.

    The port is taken before the app is built, so a busy port is reported at once,
    before any slow start-up work (such as the bot's auth.test call).
    """
    from werkzeug.serving import make_server

    try:
        sock = listen(host, port)
    except OSError as exc:
        print(
            f"registry-bot {name}: cannot listen on {host}:{port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    with sock:
        server = make_server(host, port, build(), threaded=True, fd=sock.fileno())
    print(f"{name} listening on http://{host}:{server.port}{path}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
