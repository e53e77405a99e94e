"""HTTP mode: one Flask endpoint for Slack events, interactivity and commands."""

from __future__ import annotations

import time

import redis
from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from slack_bolt.adapter.flask import SlackRequestHandler

from bot.app import start_app
from registry.process.metrics import BotMetrics
from registry.process.settings import load_settings
from registry.rules.events import MAX_BODY_BYTES
from registry.rules.settings import Settings

BOT_REQUIRED = (
    "MLFLOW_TRACKING_URI",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_CHANNEL",
)


def create_wsgi_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app that serves `POST /slack/events`, `GET /healthz` (ready: Redis
    answers), `GET /livez` (live: it answers) and `GET /metrics`.

    Always HTTP mode: every request's Slack signature is checked, whatever else is set. The
    Slack setup is checked first (registry.process.preflight): a token Slack refuses raises
    SettingsError.
    """
    settings = settings or load_settings(require=BOT_REQUIRED)
    handler = SlackRequestHandler(start_app(settings, socket_mode=False))
    store = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=1)
    app = Flask("bot")
    # A body read in chunks (no Content-Length) stops at the limit too: werkzeug raises 413.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    registry = CollectorRegistry()
    _slack_route(app, handler, BotMetrics(registry))
    _ops_routes(app, store, registry)
    return app


def _slack_route(app: Flask, handler: SlackRequestHandler, measured: BotMetrics) -> None:
    """Serve Slack's requests at `POST /slack/events`, timing each answer."""

    @app.post("/slack/events")
    def slack_events():
        # Bolt reads the raw body to check Slack's signature: touch nothing before it, but
        # refuse a body too big to be Slack's before reading a byte of it.
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return jsonify(error=f"body larger than {MAX_BODY_BYTES} bytes"), 413
        started = time.perf_counter()
        response = handler.handle(request)
        measured.answer_seconds.labels(str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response


def _ops_routes(app: Flask, store: redis.Redis, registry: CollectorRegistry) -> None:
    """Serve the operator's routes: `GET /metrics` and `GET /healthz` (Redis answers)."""

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")

    @app.get("/livez")
    def livez():
        return jsonify(live=True), 200  # answering at all: Redis has no say in liveness

    @app.get("/healthz")
    def healthz():
        try:
            store.ping()
        except redis.RedisError as exc:
            return jsonify(redis=f"down: {exc}"), 503
        return jsonify(redis="ok"), 200
