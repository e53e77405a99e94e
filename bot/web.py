"""HTTP mode: one Flask endpoint for Slack events, interactivity and commands."""

from __future__ import annotations

import time

import redis
from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from slack_bolt.adapter.flask import SlackRequestHandler

from bot.app import build_app
from registry.metrics import BotMetrics
from registry.settings import Settings

BOT_REQUIRED = (
    "MLFLOW_TRACKING_URI",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_CHANNEL",
)


def create_wsgi_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app that serves `POST /slack/events` and `GET /healthz`."""
    settings = settings or Settings.from_env(require=BOT_REQUIRED)
    handler = SlackRequestHandler(build_app(settings))
    store = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=1)
    app = Flask("bot")

    registry = CollectorRegistry()
    measured = BotMetrics(registry)

    @app.post("/slack/events")
    def slack_events():
        # Bolt reads the raw body to check Slack's signature: touch nothing before it.
        started = time.perf_counter()
        response = handler.handle(request)
        measured.answer_seconds.labels(str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")

    @app.get("/healthz")
    def healthz():
        try:
            store.ping()
        except redis.RedisError as exc:
            return jsonify(redis=f"down: {exc}"), 503
        return jsonify(redis="ok"), 200

    return app
