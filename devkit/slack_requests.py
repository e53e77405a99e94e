"""What Slack sends an app, built as Slack builds it: the signature headers, a button click,
a modal submission and a slash command. The tests, the bench and the soak drive the bot
with these, so each shape is written once."""

from __future__ import annotations

import time
import uuid
from typing import Any

from slack_sdk.signature import SignatureVerifier

FORM = "application/x-www-form-urlencoded"


def signed_headers(
    body: str, secret: str, *, at: float | None = None, content_type: str = FORM
) -> dict[str, str]:
    """Return the headers Slack sends with `body`: its timestamp and v0 signature."""
    ts = str(int(time.time() if at is None else at))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body) or ""
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }


def _who(user: str, team: str, domain: str, app: str) -> dict[str, Any]:
    """The fields every interaction payload opens with."""
    return {
        "team": {"id": team, "domain": domain},
        "user": {"id": user, "username": user.lower(), "team_id": team},
        "api_app_id": app,
        "token": "legacy-verification-token",
    }


def button(action_id: str, value: str, block_id: str = "decision") -> dict[str, str]:
    """Return one pressed button as it stands in a block_actions payload."""
    return {
        "type": "button",
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "action_ts": f"{time.time():.6f}",
    }


def click_payload(
    *,
    user: str,
    action_id: str,
    value: str,
    response_url: str,
    channel: str,
    team: str,
    message_ts: str = "",
    message: dict | None = None,
    domain: str = "test",
    app: str = "ATEST",
) -> dict[str, Any]:
    """Return the block_actions payload for a click on a channel message (sent along whole
    as `message`, or a bare one with `message_ts`)."""
    return {
        "type": "block_actions",
        **_who(user, team, domain, app),
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.abc",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "channel": {"id": channel, "name": "models"},
        "message": message or {"type": "message", "ts": message_ts, "text": ""},
        "response_url": response_url,
        "actions": [button(action_id, value)],
    }


def view_submission(
    view: dict,
    *,
    user: str,
    values: dict,
    team: str,
    domain: str = "test",
    app: str = "ATEST",
) -> dict[str, Any]:
    """Return the view_submission payload for a modal the app opened, with `values` typed."""
    return {
        "type": "view_submission",
        **_who(user, team, domain, app),
        "trigger_id": f"{int(time.time())}.1.abc",
        "view": {
            **view,
            "id": view.get("id") or f"V{uuid.uuid4().hex[:10].upper()}",
            "team_id": team,
            "state": {"values": values},
        },
    }


def command_form(
    text: str,
    *,
    user: str,
    response_url: str,
    channel: str,
    team: str,
    command: str = "/registry",
    domain: str = "test",
    app: str = "ATEST",
) -> dict[str, str]:
    """Return the form fields Slack posts for a slash command."""
    return {
        "token": "legacy",
        "team_id": team,
        "team_domain": domain,
        "channel_id": channel,
        "channel_name": "models",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": app,
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.2.abc",
    }
