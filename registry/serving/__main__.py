"""Run the prediction API: `python -m registry.serving --model churn --port 8100`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING

from registry.process.httpserver import listen
from registry.process.logs import configure_logging
from registry.process.settings import merged_env

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

    from registry.serving.model import ServedModel

PREFIX = "registry-bot serving"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m registry.serving", description=__doc__)
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load the model, serve it until Ctrl-C or SIGTERM; return the exit status."""
    args = parse_args(argv)
    configure_logging()
    # The environment over a `.env` file in the working directory, as the other services.
    env = merged_env(None, ".env")
    if not env.get("MLFLOW_TRACKING_URI", "").strip():
        return refuse("MLFLOW_TRACKING_URI is required but not set")
    # Imported only now: a missing setting is reported without waiting for MLflow's import.
    from werkzeug.serving import make_server

    from registry.serving.api import create_app
    from registry.serving.model import ServedModel

    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return refuse(f"cannot listen on {args.host}:{args.port}: {reason}")
    with sock:
        try:
            served = ServedModel(args.model, env=env)
        except ValueError as exc:
            return refuse(str(exc))
        server = make_server(
            args.host, args.port, create_app(served), threaded=True, fd=sock.fileno()
        )
    return serve(served, server)


def refuse(message: str) -> int:
    """Print one line saying why the API cannot start; return the exit status for that."""
    print(f"{PREFIX}: {message}", file=sys.stderr)
    return 2


def serve(served: ServedModel, server: BaseWSGIServer) -> int:
    """Follow promotions and answer requests until interrupted; then stop both cleanly."""
    signal.signal(signal.SIGTERM, _interrupt)
    served.start()
    print(f"serving {served.name} on http://{server.host}:{server.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        served.stop()
        server.server_close()
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    # SIGTERM ends serve_forever the same way Ctrl-C does, so cleanup runs once, in one place.
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
