"""What Slack sends the bot during the soak: signed clicks, modal submissions, slash commands."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import requests

from bench.load import slack_headers
from bench.stack import CHANNEL, TEAM
from bot.listeners.clicks import click_id
from devkit import slack_requests
from devkit.slack_double import SlackDouble
from registry.views.modals import REASON_BLOCK, REASON_INPUT

SOAK = {"domain": "soak", "app": "ASOAK"}


@dataclass(frozen=True)
class Sent:
    """The bot's HTTP answer to one request, and the response URL its later answers go to."""

    status: int
    reply: str  # the response URL's name; the double records its posts under this path
    event_id: str = ""  # the id the bot queues a click under (its task logs name it)


class SlackSide:
    """Sends the bot what Slack would, each request signed, each click with its own response URL."""

    def __init__(self, bot_url: str, double: SlackDouble):
        self.events_url = f"{bot_url}/slack/events"
        self.double = double

    def click(self, user: str, action_id: str, value: str, message_ts: str = "") -> Sent:
        """Press a button as `user`."""
        reply = f"{action_id}-{user}-{uuid.uuid4().hex[:10]}"
        payload = slack_requests.click_payload(
            user=user,
            action_id=action_id,
            value=value,
            response_url=self.double.response_url(reply),
            channel=CHANNEL,
            team=TEAM,
            message_ts=message_ts,
            **SOAK,
        )
        sent = self._post({"payload": json.dumps(payload)})
        return Sent(sent, reply, click_id(payload))

    def submit(self, user: str, view: dict, reason: str) -> int:
        """Submit a modal the bot opened, with `reason` typed in."""
        values = {REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": reason}}}
        payload = slack_requests.view_submission(view, user=user, values=values, team=TEAM, **SOAK)
        return self._post({"payload": json.dumps(payload)})

    def command(self, user: str, text: str) -> Sent:
        """Type `/registry <text>` as `user`."""
        reply = f"cmd-{user}-{uuid.uuid4().hex[:10]}"
        form = slack_requests.command_form(
            text,
            user=user,
            response_url=self.double.response_url(reply),
            channel=CHANNEL,
            team=TEAM,
            **SOAK,
        )
        return Sent(self._post(form), reply)

    def replies(self, reply: str) -> list[dict]:
        """Return what was posted to a response URL and taken (status 200), oldest first."""
        path = "/response/" + quote(reply, safe="")
        calls = self.double.calls("response_url")
        return [c.params for c in calls if c.path == path and c.status == 200]

    def attempts(self, reply: str) -> list[int]:
        """Return the status of every post to a response URL, taken or not, oldest first."""
        path = "/response/" + quote(reply, safe="")
        return [c.status for c in self.double.calls("response_url") if c.path == path]

    def _post(self, form: dict[str, str]) -> int:
        body = urlencode(form)
        try:
            resp = requests.post(
                self.events_url, data=body.encode(), headers=slack_headers(body), timeout=10
            )
        except requests.RequestException:
            return 0
        return resp.status_code
