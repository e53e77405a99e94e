"""Slack's Socket Mode side for the double: the ws:// endpoint, envelopes pushed, acks recorded."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

log = logging.getLogger(__name__)

# Slack sends these envelope types; interactivity and commands may carry a response payload.
ENVELOPE_TYPES = ("events_api", "interactive", "slash_commands")
PATH = "/link/"
# Slack closes a link with a ticket it does not know, or one already used.
BAD_TICKET = 4001


@dataclass
class Envelope:
    """One envelope pushed to the app, and its acknowledgement once it came."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    sent_at: float
    retry_attempt: int | None = None
    acked_at: float | None = None
    response: dict[str, Any] | None = None  # the ack's "payload", if it had one

    @property
    def ack_seconds(self) -> float | None:
        """Return how long the app took to acknowledge, or None while it has not."""
        return None if self.acked_at is None else self.acked_at - self.sent_at


@dataclass
class _Link:
    connection: ServerConnection
    app_token: str
    opened_at: float = field(default_factory=time.time)
    greeted: threading.Event = field(default_factory=threading.Event)  # its hello is sent


class NotConnected(RuntimeError):
    """No app holds an open Socket Mode connection to push an envelope to."""


class SocketModeServer:
    """Serve Socket Mode links on 127.0.0.1: a `hello`, envelopes, and the app's acks."""

    def __init__(self, *, app_id: str) -> None:
        self.app_id = app_id
        self._cond = threading.Condition()
        self._tickets: dict[str, str] = {}  # ticket -> the app token that asked for it
        self._links: list[_Link] = []
        self._envelopes: dict[str, Envelope] = {}
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a free port in a background thread."""
        # No keepalive pings of our own: slack_sdk pings, and the server answers those.
        self._server = serve(self._serve_link, "127.0.0.1", 0, ping_interval=None)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slack-double-socket", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close every link and stop listening."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        with self._cond:
            links = list(self._links)
        for link in links:
            link.connection.close()
        server.shutdown()
        thread.join(5)
        self._server = self._thread = None

    @property
    def port(self) -> int:
        """Return the port links connect to."""
        if self._server is None:
            raise RuntimeError("the Socket Mode server is not running")
        return int(self._server.socket.getsockname()[1])

    # -- apps.connections.open ---------------------------------------------------------------

    def open_url(self, app_token: str) -> str:
        """Issue a one-time ws:// URL for `app_token`, as apps.connections.open does."""
        ticket = uuid.uuid4().hex
        with self._cond:
            self._tickets[ticket] = app_token
        return f"ws://127.0.0.1:{self.port}{PATH}?ticket={ticket}&app_id={self.app_id}"

    # -- envelopes ---------------------------------------------------------------------------

    def push(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int | None = None,
        retry_reason: str = "",
        envelope_id: str = "",
        app_token: str = "",
    ) -> Envelope:
        """Send an envelope over the newest open link (of `app_token`, when given)."""
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"Slack sends no {type!r} envelopes")
        envelope = Envelope(envelope_id or str(uuid.uuid4()), type, copy.deepcopy(payload), 0.0)
        message: dict[str, Any] = {
            "envelope_id": envelope.envelope_id,
            "type": type,
            "payload": payload,
            "accepts_response_payload": type != "events_api",
        }
        if type == "events_api":
            # Slack counts redeliveries of an event it thinks was missed from 1.
            message.update(retry_attempt=retry_attempt or 0, retry_reason=retry_reason)
            envelope.retry_attempt = retry_attempt or 0
        link = self._link_for(app_token)
        with self._cond:
            envelope.sent_at = time.time()
            self._envelopes[envelope.envelope_id] = envelope
        link.greeted.wait(5)  # as on Slack, an app hears hello before any envelope
        link.connection.send(json.dumps(message))
        return envelope

    def wait_for_ack(self, envelope_id: str, timeout: float = 3.0) -> Envelope | None:
        """Wait until the envelope is acknowledged; return it, or None after `timeout`."""
        with self._cond:
            envelope = self._envelopes[envelope_id]
            self._cond.wait_for(lambda: envelope.acked_at is not None, timeout)
            return copy.deepcopy(envelope) if envelope.acked_at is not None else None

    def envelopes(self) -> list[Envelope]:
        """Return every envelope pushed, oldest first, with its ack if it came."""
        with self._cond:
            return copy.deepcopy(sorted(self._envelopes.values(), key=lambda e: e.sent_at))

    def links(self, app_token: str = "") -> int:
        """Return how many links are open (for `app_token`, when given)."""
        with self._cond:
            return len([k for k in self._links if not app_token or k.app_token == app_token])

    def wait_connected(self, app_token: str = "", timeout: float = 30.0) -> bool:
        """Wait until an app holds an open link; say whether one does."""
        with self._cond:
            return self._cond.wait_for(lambda: self.links(app_token) > 0, timeout)

    def reset(self) -> None:
        """Forget the envelopes pushed (open links stay)."""
        with self._cond:
            self._envelopes.clear()

    # -- the links ---------------------------------------------------------------------------

    def _link_for(self, app_token: str) -> _Link:
        with self._cond:
            links = [k for k in self._links if not app_token or k.app_token == app_token]
        if not links:
            raise NotConnected("no app is connected over Socket Mode")
        return links[-1]

    def _serve_link(self, connection: ServerConnection) -> None:
        """Greet a link, then record every acknowledgement it sends until it closes."""
        request = connection.request
        query = parse_qs(urlsplit(request.path if request else "").query)
        ticket = (query.get("ticket") or [""])[0]
        with self._cond:
            app_token = self._tickets.pop(ticket, None)  # a ticket works once
        if app_token is None:
            connection.close(BAD_TICKET, "invalid ticket")
            return
        link = _Link(connection, app_token)
        hello = self._hello()
        # Registered before the hello goes out: an app may push the moment it reads it.
        with self._cond:
            self._links.append(link)
            self._cond.notify_all()
        connection.send(json.dumps(hello))
        link.greeted.set()
        try:
            for message in connection:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                self._links.remove(link)
                self._cond.notify_all()

    def _hello(self) -> dict[str, Any]:
        with self._cond:
            count = len(self._links) + 1
        return {
            "type": "hello",
            "num_connections": count,
            "debug_info": {"host": "slack-double", "approximate_connection_time": 3600},
            "connection_info": {"app_id": self.app_id},
        }

    def _on_message(self, message: str | bytes) -> None:
        try:
            ack = json.loads(message)
        except ValueError:
            log.warning("Socket Mode: not JSON from the app: %r", message[:200])
            return
        envelope_id = ack.get("envelope_id") if isinstance(ack, dict) else None
        with self._cond:
            envelope = self._envelopes.get(str(envelope_id))
            if envelope is None:
                log.warning("Socket Mode: ack for an unknown envelope %r", envelope_id)
                return
            if envelope.acked_at is None:  # the first ack counts; Slack ignores the rest
                envelope.acked_at = time.time()
                payload = ack.get("payload")
                envelope.response = payload if isinstance(payload, dict) else None
            self._cond.notify_all()
