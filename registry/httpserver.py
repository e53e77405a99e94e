"""Serve a WSGI app on a threaded werkzeug server until Ctrl-C (the services' `python -m`)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any


def serve(app: Any, host: str, port: int, *, name: str, path: str = "") -> int:
    """Listen on host:port and serve `app`; a busy port is one line on stderr and exit 2."""
    from werkzeug.serving import make_server

    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        print(
            f"registry-bot {name}: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr
        )
        return 2
    print(f"{name} listening on http://{host}:{server.port}{path}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
