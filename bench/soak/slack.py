"""What Slack sends the bot during the soak: signed clicks, modal submissions, slash commands."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import requests

from bench.load import slack_headers
from bench.stack import CHANNEL, TEAM
from devkit.slack_double import SlackDouble
from registry.messages import REASON_BLOCK, REASON_INPUT


@dataclass(frozen=True)
class Sent:
    """The bot's HTTP answer to one request, and the response URL its later answers go to."""

    status: int
    reply: str  # the response URL's name; the double records its posts under this path


class SlackSide:
    """Sends the bot what Slack would, each request signed, each click with its own response URL."""

    def __init__(self, bot_url: str, double: SlackDouble):
        self.events_url = f"{bot_url}/slack/events"
        self.double = double

    def click(self, user: str, action_id: str, value: str, message_ts: str = "") -> Sent:
        """Press a button as `user`."""
        reply = f"{action_id}-{user}-{uuid.uuid4().hex[:10]}"
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "soak"},
            "user": {"id": user, "username": user.lower(), "team_id": TEAM},
            "api_app_id": "ASOAK",
            "token": "legacy-verification-token",
            "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.abc",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL},
            "channel": {"id": CHANNEL, "name": "models"},
            "message": {"type": "message", "ts": message_ts, "text": ""},
            "response_url": self.double.response_url(reply),
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "decision",
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return Sent(self._post({"payload": json.dumps(payload)}), reply)

    def submit(self, user: str, view: dict, reason: str) -> int:
        """Submit a modal the bot opened, with `reason` typed in."""
        values = {REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": reason}}}
        payload = {
            "type": "view_submission",
            "team": {"id": TEAM, "domain": "soak"},
            "user": {"id": user, "username": user.lower(), "team_id": TEAM},
            "api_app_id": "ASOAK",
            "token": "legacy-verification-token",
            "trigger_id": f"{int(time.time())}.1.abc",
            "view": {**view, "team_id": TEAM, "state": {"values": values}},
        }
        return self._post({"payload": json.dumps(payload)})

    def command(self, user: str, text: str) -> Sent:
        """Type `/registry <text>` as `user`."""
        reply = f"cmd-{user}-{uuid.uuid4().hex[:10]}"
        form = {
            "token": "legacy",
            "team_id": TEAM,
            "team_domain": "soak",
            "channel_id": CHANNEL,
            "channel_name": "models",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/registry",
            "text": text,
            "api_app_id": "ASOAK",
            "response_url": self.double.response_url(reply),
            "trigger_id": f"{int(time.time())}.2.abc",
        }
        return Sent(self._post(form), reply)

    def replies(self, reply: str) -> list[dict]:
        """Return what was posted to a response URL and taken (status 200), oldest first."""
        path = "/response/" + quote(reply, safe="")
        calls = self.double.calls("response_url")
        return [c.params for c in calls if c.path == path and c.status == 200]

    def _post(self, form: dict[str, str]) -> int:
        body = urlencode(form)
        try:
            resp = requests.post(
                self.events_url, data=body.encode(), headers=slack_headers(body), timeout=10
            )
        except requests.RequestException:
            return 0
        return resp.status_code
