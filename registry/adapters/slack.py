"""The Slack Web API adapter: a WebClient with retries, and the few calls the product makes."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.webhook import WebhookClient

from registry.ports.evidence import UploadRefused
from registry.ports.services import Blocks, Recipient
from registry.rules.settings import Settings

log = logging.getLogger(__name__)

RETRIES = 3  # each kind; RateLimitErrorRetryHandler sleeps for Slack's Retry-After
UPLOAD_TIMEOUT = 30  # seconds for the bytes of one picture to reach Slack's upload URL
FIND_WINDOW = 200  # the messages looked through for a notice the bot may already have posted

# Every Slack Web API method the product calls, with the bot scopes it needs. Kept beside
# the calls: tests/test_manifest.py checks it against the code, and the manifests'
# bot scopes against it (with the scopes of the slash command and the events below).
WEB_API_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),  # Bolt asks who its token is, at start
    "apps.connections.open": (),  # Socket Mode, with the app-level token (connections:write)
    "chat.postMessage": ("chat:write",),  # notices, thread replies, rollback announcements
    "chat.update": ("chat:write",),  # redrawn notices
    "chat.postEphemeral": ("chat:write",),  # replies to mentions and to Home tab clicks
    # find_posted reads the notice channel, which may be public or private.
    "conversations.history": ("channels:history", "groups:history"),
    # ...and a thread there, for a reply a rerun may already have posted.
    "conversations.replies": ("channels:history", "groups:history"),
    "users.info": ("users:read", "users:read.email"),  # an approver's e-mail
    "users.lookupByEmail": ("users:read.email",),  # a requester given by e-mail
    "usergroups.users.list": ("usergroups:read",),  # APPROVER_GROUP's members
    # Checks at start: each configured channel exists with the bot in it, public or private.
    "conversations.info": ("channels:read", "groups:read"),
    "views.open": (),  # the reject modal
    "views.publish": (),  # the App Home tab
    # The evidence in a notice's thread: pictures and the trend chart (SPEC 15).
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
}
# The bot events subscribed to, with the scopes they need, and the slash command's scope.
EVENT_SCOPES: dict[str, tuple[str, ...]] = {
    "app_mention": ("app_mentions:read",),
    "app_home_opened": (),
}
COMMAND_SCOPES = ("commands",)


class ResponseUrlFailed(RuntimeError):
    """A response URL still answered 429 or 5xx after the retries: try the whole task again."""

    def __init__(self, status: int, body: str):
        super().__init__(f"response URL answered {status}: {body[:200]}")
        self.status = status


class ChannelPace:
    """The channels where Slack answered a top-level post with 429 moments ago, seen by every
    worker process: a Redis key a channel, living QUIET seconds past the last Retry-After.

    Notices and their evidence share a channel's pace (about one message a second). In a
    burst the evidence waits while the key lives, so the notices still queued go first.
    Only an ordering hint: Redis failing to say is "not busy", and the post goes ahead.
    """

    QUIET = 5

    def __init__(self, client: redis.Redis, prefix: str = ""):
        self.client = client
        self.prefix = prefix

    @classmethod
    def at(cls, url: str, prefix: str = "") -> ChannelPace:
        """Return the pace kept in the Redis at `url` (connected at first use). Only a hint,
        so a Redis that does not answer at once is not waited for, nor asked again: a
        notice's post must not stall on it."""
        client = redis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, prefix)

    def note(self, channel: str, retry_after: float) -> None:
        """Record that Slack asked posts to `channel` to wait `retry_after` seconds."""
        try:
            self.client.set(self._key(channel), "1", ex=math.ceil(retry_after) + self.QUIET)
        except redis.RedisError as exc:
            log.warning("could not note Slack's pace in %s: %s", channel, exc)

    def busy(self, channel: str) -> bool:
        """Say whether Slack answered a top-level post to `channel` with 429 moments ago."""
        try:
            return bool(self.client.exists(self._key(channel)))
        except redis.RedisError as exc:
            log.warning("could not read Slack's pace in %s: %s", channel, exc)
            return False

    def _key(self, channel: str) -> str:
        return f"{self.prefix}registry-bot:slack-pace:{channel}"


class PacedRateLimitHandler(RateLimitErrorRetryHandler):
    """Slack's 429 handler (it sleeps for Retry-After) that first notes the pace of the
    channel a refused top-level post was for."""

    def __init__(self, pace: ChannelPace, **options: Any):
        super().__init__(**options)
        self.pace = pace

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None and response.status_code == 429:
            channel = _top_level_channel(request)
            if channel:
                self.pace.note(channel, _retry_after(response))
        return super().can_retry(state=state, request=request, response=response, error=error)


def _top_level_channel(request: HttpRequest) -> str:
    """Return the channel of a post to a channel itself (a notice, an alert), or '' for any
    other call: a thread's replies (the evidence among them) never make their channel busy,
    or the evidence of a burst would hold itself back once the notices are out."""
    params = _params_of(request)
    if not request.url.endswith("/chat.postMessage") or params.get("thread_ts"):
        return ""
    return str(params.get("channel") or "")


def _params_of(request: HttpRequest) -> dict[str, Any]:
    """Return a Web API call's parameters (JSON or form body)."""
    params: dict[str, Any] = dict(request.body_params or {})
    raw = request.data.decode("utf-8", "replace") if request.data else ""
    if raw.startswith("{"):
        with contextlib.suppress(ValueError):
            params.update(json.loads(raw))
    elif raw:
        params.update({k: v[0] for k, v in parse_qs(raw).items()})
    return params


def _retry_after(response: HttpResponse) -> float:
    """Return the seconds Slack's Retry-After asks for (1 when it says nothing usable)."""
    values = response.headers.get("retry-after") or response.headers.get("Retry-After") or []
    try:
        return max(0.0, float(values[0]))
    except (IndexError, ValueError):
        return 1.0


def retry_handlers(pace: ChannelPace | None = None) -> list:
    """Return bounded retry handlers: 429 (honouring Retry-After, and noting the channel's
    pace when `pace` is given), 5xx and connection errors."""
    limited = (
        PacedRateLimitHandler(pace, max_retry_count=RETRIES)
        if pace is not None
        else RateLimitErrorRetryHandler(max_retry_count=RETRIES)
    )
    return [
        limited,
        ServerErrorRetryHandler(max_retry_count=RETRIES),
        ConnectionErrorRetryHandler(max_retry_count=RETRIES),
    ]


def web_client(
    settings: Settings,
    *,
    timeout: int = 10,
    retries: bool = True,
    pace: ChannelPace | None = None,
) -> WebClient:
    """Build the WebClient every service uses (without `retries`: one try a call)."""
    base = settings.slack_api_url.rstrip("/") + "/"  # WebClient joins method names onto it
    return WebClient(
        token=settings.slack_bot_token,
        base_url=base,
        timeout=timeout,
        retry_handlers=retry_handlers(pace) if retries else [],
    )


class SlackNotifier:
    """Posts and updates the product's Slack messages through the Web API (a Notifier)."""

    def __init__(self, client: WebClient, channel: str, pace: ChannelPace | None = None):
        self.client = client
        self.channel = channel
        self.pace = pace

    def post(self, text: str, blocks: Sequence[dict], *, channel: str = "", **meta: Any) -> str:
        """Post to the notice channel (or `channel`); return the message ts."""
        resp = self.client.chat_postMessage(
            channel=channel or self.channel,
            text=text,
            blocks=list(blocks) or None,
            metadata=meta.get("metadata"),
        )
        return str(resp["ts"])

    def find_posted(
        self, event_type: str, nonce: str, *, channel: str = "", thread_ts: str = ""
    ) -> str:
        """Return the ts of a recent message (in a thread, with `thread_ts`) with this nonce."""
        where = channel or self.channel
        if thread_ts:
            resp = self.client.conversations_replies(
                channel=where, ts=thread_ts, limit=FIND_WINDOW, include_all_metadata=True
            )
        else:
            resp = self.client.conversations_history(
                channel=where, limit=FIND_WINDOW, include_all_metadata=True
            )
        messages: list[dict] = resp.get("messages", [])
        for message in messages:
            meta = message.get("metadata") or {}
            if (
                meta.get("event_type") == event_type
                and (meta.get("event_payload") or {}).get("nonce") == nonce
            ):
                return str(message["ts"])
        return ""

    def update(self, channel: str, ts: str, text: str, blocks: Sequence[dict]) -> None:
        """Replace a posted message."""
        self.client.chat_update(channel=channel, ts=ts, text=text, blocks=list(blocks))

    def reply(self, channel: str, thread_ts: str, text: str, **meta: Any) -> None:
        """Add a thread reply under a message."""
        self.client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=text, metadata=meta.get("metadata")
        )

    def publish_home(self, user: str, view: dict) -> None:
        """Show `view` as `user`'s App Home tab."""
        self.client.views_publish(user_id=user, view=view)

    def tell(
        self, to: Recipient, text: str, *, blocks: Blocks = None, replace: bool = False
    ) -> None:
        """Say something only `to.user` sees: via the response URL when there is one.

        `replace` swaps the ephemeral message the response URL belongs to (a plan
        whose buttons were clicked) instead of adding another.
        """
        blocks = list(blocks) if blocks else None
        if to.response_url:
            resp = WebhookClient(to.response_url, retry_handlers=retry_handlers()).send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=replace
            )
            # WebhookClient returns failures instead of raising them: a lost answer must not
            # pass silently while Slack is only busy.
            if resp.status_code == 429 or resp.status_code >= 500:
                raise ResponseUrlFailed(resp.status_code, str(resp.body))
            if resp.status_code != 200:  # expired or used up: no retry will help
                log.warning("response URL refused an answer: %s %s", resp.status_code, resp.body)
        else:
            self.client.chat_postEphemeral(
                channel=to.channel, user=to.user, text=text, blocks=blocks
            )

    def start_upload(self, filename: str, data: bytes) -> str:
        """Get an upload URL for `filename`, send `data` there; return the file's ID."""
        got = _refusable(
            lambda: self.client.files_getUploadURLExternal(filename=filename, length=len(data))
        )
        resp = requests.post(str(got["upload_url"]), data=data, timeout=UPLOAD_TIMEOUT)
        if resp.status_code != 200:
            raise UploadRefused(f"the upload URL answered {resp.status_code}")
        return str(got["file_id"])

    def share_upload(self, file_id: str, title: str, *, channel: str, thread_ts: str) -> None:
        """Complete the upload into the thread: Slack shows it there."""
        _refusable(
            lambda: self.client.files_completeUploadExternal(
                files=[{"id": file_id, "title": title}], channel_id=channel, thread_ts=thread_ts
            )
        )

    def shared_in_thread(self, file_id: str, *, channel: str, thread_ts: str) -> bool:
        """Say whether a message in the thread carries the file."""
        resp = self.client.conversations_replies(channel=channel, ts=thread_ts, limit=FIND_WINDOW)
        messages: list[dict] = resp.get("messages", [])
        return any(f.get("id") == file_id for m in messages for f in m.get("files") or [])

    def busy(self, channel: str) -> bool:
        """Say whether Slack answered a top-level post to `channel` with 429 moments ago."""
        return self.pace is not None and self.pace.busy(channel)


def _refusable(call: Any) -> Any:
    """Make the call; Slack's refusal (ok=false, HTTP 200) becomes UploadRefused, which is said
    in the thread; a 429 or 5xx after the retries stays what it is, for the task to retry."""
    try:
        return call()
    except SlackApiError as exc:
        if exc.response.status_code != 200:
            raise
        raise UploadRefused(str(exc.response.get("error", "refused"))) from exc
