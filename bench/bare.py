"""A bare Flask endpoint, served like the webhooks, to price the HTTP front door itself."""

from __future__ import annotations

from flask import Flask, Response, jsonify


def create_app() -> Flask:
    """Build an app whose POST route (under both services' paths) answers 202 `{}`."""
    app = Flask("bare")

    @app.post("/hooks/training")
    @app.post("/slack/events")
    def accept() -> tuple[Response, int]:
        return jsonify({}), 202

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({}), 200

    return app
