"""A local stand-in for the Slack Web API and response URLs that records every call."""

from __future__ import annotations

import copy
import json
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from devkit.block_kit import message_refusal, view_problems
from devkit.slack_files import FileError, FileStore, UploadedFile
from devkit.slack_socket import SocketModeServer

log = logging.getLogger(__name__)

RESPONSE_URL = "response_url"
UPLOAD = "upload"  # the bytes POSTed to an upload URL, recorded as a call of this name
# Only the app-level token (xapp-) may open a Socket Mode connection, and it may do no more.
APP_TOKEN_METHODS = ("apps.connections.open",)
# Slack takes these as JSON strings in form posts and as objects in JSON bodies.
JSON_PARAMS = ("blocks", "attachments", "view", "metadata", "files")
CONTENT_FIELDS = ("text", "blocks", "attachments")
# What Slack answers a message, view or response it will not take as sent: a product bug,
# never a passing condition (tests/conftest.py fails the test during which one is answered).
CONTENT_ERRORS = ("invalid_blocks", "msg_too_long", "invalid_arguments")
# The methods that post into a channel, which Slack refuses where the bot is no member.
MEMBER_METHODS = ("chat.postMessage", "chat.postEphemeral")
# The bot scope each Web API method needs, from Slack's method reference; for a
# conversations.* method, the one for the channel's kind (C public, G private, D direct).
# The double's own table, apart from the product's (registry.adapters.slack.WEB_API_SCOPES)
# on purpose: it judges the product independently.
METHOD_SCOPES: dict[str, str] = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "users.info": "users:read",
    "users.lookupByEmail": "users:read.email",
    "usergroups.users.list": "usergroups:read",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
}
CONVERSATION_SCOPES: dict[str, str] = {
    "conversations.history": "{kind}:history",
    "conversations.replies": "{kind}:history",
    "conversations.info": "{kind}:read",
}
CHANNEL_KINDS = {"C": "channels", "G": "groups", "D": "im"}
# What a bot installed from the project's manifest is granted, unless a test says otherwise.
ALL_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "channels:read",
    "chat:write",
    "commands",
    "files:write",
    "groups:history",
    "groups:read",
    "usergroups:read",
    "users:read",
    "users:read.email",
)
VIEW_DEFAULTS: dict[str, Any] = {
    "private_metadata": "",
    "callback_id": "",
    "external_id": "",
    "state": {"values": {}},
    "clear_on_close": False,
    "notify_on_close": False,
}

Params = dict[str, Any]
Answer = Callable[[str, Params, Request], "_Reply"]
RefusalListener = Callable[["SlackDouble", "Call"], None]
_refusal_listeners: list[RefusalListener] = []


def watch_refusals(listener: RefusalListener) -> Callable[[], None]:
    """Call `listener` with every call any double refuses for its content; return an undo."""
    _refusal_listeners.append(listener)
    return lambda: _refusal_listeners.remove(listener)


@dataclass
class Call:
    """One request the double answered: Web API method (or "response_url") and reply."""

    method: str
    params: Params
    headers: dict[str, str]
    at: float
    status: int = 200
    path: str = ""
    response: Any = None

    @property
    def error(self) -> str:
        """Return the error Slack answered (response URLs answer it as plain text), or ''."""
        if isinstance(self.response, dict):
            return "" if self.response.get("ok", True) else str(self.response.get("error", ""))
        return str(self.response) if self.status != 200 else ""

    @property
    def refused_content(self) -> bool:
        """Say whether Slack refused what was sent: blocks, a view, or a text too long."""
        return self.error in CONTENT_ERRORS


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after: int | None
    error: str


@dataclass
class _Reply:
    body: dict[str, Any] | str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def to_response(self) -> Response:
        """Render as JSON (Web API) or plain text (response URLs)."""
        if isinstance(self.body, str):
            return Response(self.body, self.status, self.headers, mimetype="text/plain")
        return Response(
            json.dumps(self.body),
            self.status,
            self.headers,
            content_type="application/json; charset=utf-8",
        )


class SlackError(Exception):
    """An API error, which Slack reports as HTTP 200 with ok=false (and why, for blocks)."""

    def __init__(self, error: str, problems: Iterable[str] = (), **fields: str) -> None:
        super().__init__(error)
        self.error = error
        self.problems = list(problems)
        self.fields = fields  # what Slack adds to some errors (missing_scope: needed, provided)

    def body(self) -> dict[str, Any]:
        """Return Slack's answer: the error and, for refused blocks, each reason."""
        if not self.problems:
            return {"ok": False, "error": self.error, **self.fields}
        messages = [f"[ERROR] {problem}" for problem in self.problems]
        return {
            "ok": False,
            "error": self.error,
            "errors": self.problems,
            "response_metadata": {"messages": messages},
        }


class _QuietHandler(WSGIRequestHandler):
    """Send request lines to debug logging, not werkzeug's own stderr handler."""

    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug(message, *args)


class SlackDouble:
    """Answer Slack Web API calls on 127.0.0.1 like Slack does, recording each one."""

    def __init__(
        self,
        *,
        token: str = "xoxb-test",
        app_token: str = "xapp-test",
        team_id: str = "T0TEST",
        bot_user_id: str = "UBOT",
        users: dict[str, dict[str, str]] | None = None,
        usergroups: dict[str, Iterable[str]] | None = None,
        port: int = 0,
        not_in: Iterable[str] = (),
        scopes: Iterable[str] = ALL_SCOPES,
    ) -> None:
        self.token, self.team_id, self.bot_user_id = token, team_id, bot_user_id
        # The bot token's scopes: a method needing another is refused with missing_scope.
        self.scopes: set[str] = set(scopes)
        self.app_token = app_token
        self.bot_id, self.app_id = "B" + bot_user_id.removeprefix("U"), "A0TEST"
        self.socket = SocketModeServer(app_id=self.app_id)
        self.users = {uid: dict(info) for uid, info in (users or {}).items()}
        self.usergroups = {gid: list(members) for gid, members in (usergroups or {}).items()}
        # What conversations.info says: every channel exists with the bot in it, but these.
        self.unknown_channels: set[str] = set()  # no such channel
        self.port: int | None = port or None
        # The bot is a member of every channel it is asked about, except these.
        self._not_in: set[str] = set(not_in)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._cond = threading.Condition()  # guards all recorded and Slack-side state
        self._calls: list[Call] = []
        self._subscribers: list[queue.Queue[Call]] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._delays: dict[str, float] = {}
        self._delays_after: dict[str, float] = {}
        self._pace: dict[str, float] = {}  # channel -> seconds between accepted posts
        self._last_post: dict[str, float] = {}
        self._methods = self._api_methods()
        self.uploads = FileStore()  # tests may shorten .ttl (upload URLs) and .limit (bytes)
        self._reset_state()

    def _api_methods(self) -> dict[str, Callable[[Params], dict[str, Any]]]:
        return {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open,
            "views.push": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "users.info": self._users_info,
            "users.lookupByEmail": self._lookup_by_email,
            "usergroups.users.list": self._usergroup_users,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "conversations.info": self._conversation_info,
            "files.getUploadURLExternal": self._upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SlackDouble:
        """Serve on 127.0.0.1 in a background thread (a restart keeps the same port)."""
        if self._server is not None:
            raise RuntimeError("SlackDouble is already running")
        self._stopping.clear()
        self._server = make_server(
            "127.0.0.1", self.port or 0, self.wsgi_app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self.socket.start()
        self._thread = threading.Thread(
            target=self._serve_forever,
            args=(self._server,),
            name=f"slack-double-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    @staticmethod
    def _serve_forever(server: BaseWSGIServer) -> None:
        # A short poll keeps stop() quick: shutdown() waits for the next poll.
        server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        """Stop serving, free the port and join the server thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # cut set_delay stalls short so in-flight requests finish
        self.socket.stop()
        server.shutdown()
        thread.join()
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> SlackDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Return the double's root URL."""
        if self.port is None:
            raise RuntimeError("start() the SlackDouble first")
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        """Return the Web API base URL; the trailing slash matters to slack_sdk."""
        return self.url + "api/"

    def response_url(self, name: str) -> str:
        """Return a response URL whose posts are recorded as method "response_url"."""
        return f"{self.url}response/{quote(name, safe='')}"

    # -- faults ------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 500,
        retry_after: int | None = None,
        count: int = 1,
        error: str | None = None,
    ) -> None:
        """Answer the next `count` calls of `method` with `status` and change nothing."""
        default = "ratelimited" if status == 429 else "internal_error"
        fault = _Fault(status, retry_after, error or default)
        with self._cond:
            self._faults.setdefault(method, deque()).extend([fault] * count)

    def set_delay(self, method: str, seconds: float, *, after: bool = False) -> None:
        """Stall every call of `method` for `seconds` before answering (0 to undo).

        With `after`, the call takes effect first and only the answer is late: Slack
        did the work, but the caller may give up (or die) before hearing back.
        """
        if after:
            with self._cond:
                if seconds > 0:
                    self._delays_after[method] = seconds
                else:
                    self._delays_after.pop(method, None)
            return
        with self._cond:
            if seconds > 0:
                self._delays[method] = seconds
            else:
                self._delays.pop(method, None)

    def set_pace(self, channel: str, per_second: float | None) -> None:
        """Answer chat.postMessage to `channel` with 429 and Retry-After above `per_second`.

        Slack allows about one message per second per channel; None lifts the limit.
        """
        with self._cond:
            if per_second:
                self._pace[channel] = 1.0 / per_second
            else:
                self._pace.pop(channel, None)
                self._last_post.pop(channel, None)

    def leave(self, channel: str) -> None:
        """Take the bot out of `channel`: posts there are answered not_in_channel."""
        with self._cond:
            self._not_in.add(channel)

    def join(self, channel: str) -> None:
        """Make the bot a member of `channel` again."""
        with self._cond:
            self._not_in.discard(channel)

    # -- recording ---------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Return the recorded calls, oldest first, optionally only those of `method`."""
        with self._cond:
            return [c for c in self._calls if method is None or c.method == method]

    def clear(self) -> None:
        """Forget the recorded calls (messages, views and faults stay)."""
        with self._cond:
            self._calls.clear()

    def reset(self) -> None:
        """Forget calls, messages, ephemerals, views, faults, delays and channels left."""
        with self._cond:
            self._not_in.clear()
            self._calls.clear()
            self._faults.clear()
            self._delays.clear()
            self._delays_after.clear()
            self._pace.clear()
            self._last_post.clear()
            self._reset_state()

    def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] = lambda call: True,
        timeout: float = 10.0,
        count: int = 1,
    ) -> list[Call]:
        """Block until `count` calls of `method` match `predicate`; return all matches."""

        def matching() -> list[Call]:
            return [c for c in self._calls if c.method == method and predicate(c)]

        with self._cond:
            if self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                return matching()
            seen = sorted({c.method for c in self._calls}) or ["none"]
            raise AssertionError(
                f"SlackDouble: wanted {count} matching {method} call(s) within {timeout}s, "
                f"got {len(matching())}; methods seen: {', '.join(seen)}"
            )

    def subscribe(self) -> queue.Queue[Call]:
        """Return a queue that receives every call recorded from now on."""
        events: queue.Queue[Call] = queue.Queue()
        with self._cond:
            self._subscribers.append(events)
        return events

    def unsubscribe(self, events: queue.Queue[Call]) -> None:
        """Stop feeding a queue returned by subscribe()."""
        with self._cond:
            if events in self._subscribers:
                self._subscribers.remove(events)

    # -- Slack-side state --------------------------------------------------------------------

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Return the channel's top-level messages, oldest first, each with its `replies`."""
        with self._cond:
            return [
                {
                    **self._listed(channel, m, True),
                    "replies": copy.deepcopy(self._thread_of(channel, m["ts"])),
                }
                for m in self._messages.get(channel, [])
                if _is_top(m)
            ]

    def ephemerals(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Return the ephemeral messages posted, optionally only in `channel`."""
        with self._cond:
            return copy.deepcopy(
                [e for e in self._ephemerals if channel is None or e["channel"] == channel]
            )

    def views(self) -> list[dict[str, Any]]:
        """Return the views opened or pushed, as last updated, oldest first."""
        with self._cond:
            return copy.deepcopy(list(self._views.values()))

    def home(self, user: str) -> dict[str, Any] | None:
        """Return the Home tab last published for `user`, or None."""
        with self._cond:
            return copy.deepcopy(self._homes.get(user))

    def files(self) -> list[dict[str, Any]]:
        """Return the files shared (each with its bytes as `data`), oldest first."""
        with self._cond:
            return [_file_record(f) for f in self.uploads.shared()]

    def _reset_state(self) -> None:
        self.uploads.reset()
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ephemerals: list[dict[str, Any]] = []
        self._views: dict[str, dict[str, Any]] = {}
        self._homes: dict[str, dict[str, Any]] = {}
        self._serial = 0
        self._last_ts = 0

    # -- HTTP --------------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Serve the Web API under /api/, response URLs under /response/, upload URLs under
        /upload/ and the shared files' bytes under /files/."""
        request = Request(environ)
        if request.path.startswith("/files/") and request.method == "GET":
            return self._file_bytes(request.path)(environ, start_response)
        return self._route(request).to_response()(environ, start_response)

    def _file_bytes(self, path: str) -> Response:
        with self._cond:
            parts = path.strip("/").split("/")
            file = self.uploads.files.get(parts[1]) if len(parts) >= 2 else None
            if file is None or not file.shared or file.data is None:
                return Response("file_not_found", 404, mimetype="text/plain")
            return Response(file.data, 200, mimetype=file.mimetype or "application/octet-stream")

    def _route(self, request: Request) -> _Reply:
        path = request.path
        if path.startswith("/api/"):
            return self._serve(path.removeprefix("/api/"), request, self._api)
        if path.startswith("/response/"):
            if request.method != "POST":
                return _Reply("method_not_allowed", 405)
            return self._serve(RESPONSE_URL, request, self._response_post)
        if path.startswith("/upload/"):
            if request.method != "POST":
                return _Reply("method_not_allowed", 405)
            return self._serve(UPLOAD, request, self._upload_post)
        return _Reply("not_found", 404)

    def _serve(self, method: str, request: Request, answer: Answer) -> _Reply:
        at, params = time.time(), _params(request)
        self._stall(method)
        with self._cond:
            faults = self._faults.get(method)
            paced = self._paced(method, params, at)
            if faults:
                reply = self._fault_reply(method, faults.popleft())
            elif paced:
                reply = self._fault_reply(method, paced)
            else:
                reply = answer(method, params, request)
            self._record(
                Call(
                    method,
                    params,
                    dict(request.headers),
                    at,
                    reply.status,
                    request.path,
                    copy.deepcopy(reply.body),
                )
            )
        self._stall(method, after=True)
        return reply

    def _paced(self, method: str, params: Params, at: float) -> _Fault | None:
        """Return a 429 for a post that comes too soon after the channel's last one."""
        # The caller holds self._cond.
        channel = str(params.get("channel") or "")
        interval = self._pace.get(channel) if method == "chat.postMessage" else None
        if interval is None:
            return None
        wait = self._last_post.get(channel, 0.0) + interval - at
        if wait > 0:
            return _Fault(429, max(1, math.ceil(wait)), "ratelimited")
        self._last_post[channel] = at
        return None

    def _stall(self, method: str, *, after: bool = False) -> None:
        with self._cond:
            delay = (self._delays_after if after else self._delays).get(method, 0)
        if delay:
            self._stopping.wait(delay)  # stop() wakes this so the server shuts down promptly

    def _record(self, call: Call) -> None:
        # The caller holds self._cond.
        self._calls.append(call)
        self._cond.notify_all()
        for events in self._subscribers:
            events.put(call)
        if call.refused_content:
            log.warning("SlackDouble refused %s: %s", call.method, call.response)
            for listener in list(_refusal_listeners):
                listener(self, call)

    def _fault_reply(self, method: str, fault: _Fault) -> _Reply:
        # A 429 carries Retry-After, which slack_sdk's RateLimitErrorRetryHandler sleeps on.
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if method == RESPONSE_URL:
            return _Reply(fault.error, fault.status, headers)
        return _Reply({"ok": False, "error": fault.error}, fault.status, headers)

    def _api(self, method: str, params: Params, request: Request) -> _Reply:
        handler = self._methods.get(method)
        if handler is None:
            # Slack checks the method before the token, and answers 200, not 404.
            return _Reply({"ok": False, "error": "unknown_method", "req_method": method})
        # Slack says on every answer to a bot token which scopes it has.
        granted = {"X-OAuth-Scopes": ",".join(sorted(self.scopes))}
        try:
            self._authorize(method, params, request)
            if method not in APP_TOKEN_METHODS:
                self._scoped(method, params)
            if method in MEMBER_METHODS:
                self._member(params)
            return _Reply({"ok": True, **handler(params)}, headers=granted)
        except SlackError as exc:
            # Slack answers API errors with HTTP 200 and ok=false.
            return _Reply(exc.body(), headers=granted)
        except Exception:
            log.exception("SlackDouble failed answering %s", method)
            return _Reply({"ok": False, "error": "internal_error"}, 500)

    def _authorize(self, method: str, params: Params, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        token = token or str(params.get("token") or "")
        if not token:
            raise SlackError("not_authed")
        wanted = self.app_token if method in APP_TOKEN_METHODS else self.token
        if token in (self.token, self.app_token) and token != wanted:
            raise SlackError("not_allowed_token_type")
        if token != wanted:
            raise SlackError("invalid_auth")

    def _scoped(self, method: str, params: Params) -> None:
        """Refuse a method the token has no scope for, as Slack does (needed, provided)."""
        needed = METHOD_SCOPES.get(method, "")
        if method in CONVERSATION_SCOPES:
            kind = CHANNEL_KINDS.get(str(params.get("channel") or "C")[:1], "channels")
            needed = CONVERSATION_SCOPES[method].format(kind=kind)
        if needed and needed not in self.scopes:
            provided = ",".join(sorted(self.scopes))
            raise SlackError("missing_scope", needed=needed, provided=provided)

    def _member(self, params: Params) -> None:
        """Refuse a post to a channel the bot is not in (a missing channel is not found)."""
        channel = _require(params, "channel", "channel_not_found")
        if channel in self._not_in:
            raise SlackError("not_in_channel")

    def _upload_post(self, method: str, params: Params, request: Request) -> _Reply:
        """Take an upload URL's bytes: raw, or multipart with the file in any field."""
        form_file = next(iter(request.files.values()), None)
        data = form_file.read() if form_file is not None else request.get_data()
        try:
            self.uploads.receive(request.path, data, None)
        except FileError as exc:
            return _Reply(exc.error, exc.status)
        return _Reply(f"OK - {len(data)}")

    def _response_post(self, method: str, params: Params, request: Request) -> _Reply:
        # Response URLs take JSON only and answer plain text: "ok" or a short reason, with a
        # 400 for what they refuse (as incoming webhooks do: `400 invalid_blocks`).
        if not isinstance(request.get_json(silent=True), dict):
            return _Reply("invalid_payload", 400)
        refusal = message_refusal(params)
        if refusal:
            return _Reply(refusal[0], 400)
        return _Reply("ok")

    # -- Web API methods (called holding self._cond) ---------------------------------------

    def _auth_test(self, params: Params) -> dict[str, Any]:
        return {
            "url": self.url,
            "team": "Registry Bot Sandbox",
            "user": "registry-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _connections_open(self, params: Params) -> dict[str, Any]:
        return {"url": self.socket.open_url(self.app_token)}

    def _post_message(self, params: Params) -> dict[str, Any]:
        channel = _require(params, "channel", "channel_not_found")
        message = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": "",
            **_content(params),
            **_metadata(params),
            "ts": self._next_ts(),
        }
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        self._messages.setdefault(channel, []).append(message)
        return {"channel": channel, "ts": message["ts"], "message": copy.deepcopy(message)}

    def _update(self, params: Params) -> dict[str, Any]:
        channel = _require(params, "channel", "channel_not_found")
        message = self._find(channel, str(params.get("ts") or ""), "message_not_found")
        changes = {**_content(params), **_metadata(params)}  # validate before changing
        message.update(changes, edited={"user": self.bot_user_id, "ts": self._next_ts()})
        return {
            "channel": channel,
            "ts": message["ts"],
            "text": message["text"],
            "message": copy.deepcopy(message),
        }

    def _post_ephemeral(self, params: Params) -> dict[str, Any]:
        channel = _require(params, "channel", "channel_not_found")
        user = _require(params, "user", "user_not_found")
        ephemeral = {
            "channel": channel,
            "user": user,
            "text": "",
            **_content(params),
            "ts": self._next_ts(),
        }
        if params.get("thread_ts"):
            ephemeral["thread_ts"] = str(params["thread_ts"])
        self._ephemerals.append(ephemeral)
        return {"message_ts": ephemeral["ts"]}

    def _views_open(self, params: Params) -> dict[str, Any]:
        _require(params, "trigger_id", "invalid_trigger_id")
        view = self._view_from(params.get("view"))
        view_id = f"V{len(self._views) + 1:08X}"
        view.update(id=view_id, root_view_id=view_id, previous_view_id=None)
        self._views[view_id] = view
        return {"view": copy.deepcopy(view)}

    def _views_update(self, params: Params) -> dict[str, Any]:
        current = self._find_view(params.get("view_id"), params.get("external_id"))
        if params.get("hash") and params["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        view = self._view_from(params.get("view"))
        view.update({k: current[k] for k in ("id", "root_view_id", "previous_view_id")})
        view["external_id"] = view["external_id"] or current["external_id"]
        self._views[view["id"]] = view
        return {"view": copy.deepcopy(view)}

    def _views_publish(self, params: Params) -> dict[str, Any]:
        user = _require(params, "user_id", "user_not_found")
        if user not in self.users:
            raise SlackError("user_not_found")
        view = self._view_from(params.get("view"))
        if view["type"] != "home":
            raise SlackError("invalid_arguments")
        current = self._homes.get(user)
        if params.get("hash") and current and params["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        view_id = current["id"] if current else f"VH{len(self._homes) + 1:07X}"
        view.update(id=view_id, root_view_id=view_id, previous_view_id=None)
        self._homes[user] = view
        return {"view": copy.deepcopy(view)}

    def _users_info(self, params: Params) -> dict[str, Any]:
        user = self._user(str(params.get("user") or ""))
        if "users:read.email" not in self.scopes:  # Slack leaves the e-mail out without it
            user.get("profile", {}).pop("email", None)
        return {"user": user}

    def _lookup_by_email(self, params: Params) -> dict[str, Any]:
        email = str(params.get("email") or "").strip().lower()
        for user_id, info in self.users.items():
            if email and info.get("email", "").lower() == email:
                return {"user": self._user(user_id)}
        raise SlackError("users_not_found")

    def _usergroup_users(self, params: Params) -> dict[str, Any]:
        members = self.usergroups.get(str(params.get("usergroup") or ""))
        if members is None:
            raise SlackError("no_such_subteam")
        return {"users": list(members)}

    def _history(self, params: Params) -> dict[str, Any]:
        self._member(params)
        channel = _require(params, "channel", "channel_not_found")
        limit = int(params.get("limit") or 100)
        newest = [m for m in reversed(self._messages.get(channel, [])) if _is_top(m)]
        full = _flag(params.get("include_all_metadata"))
        return {
            "messages": [self._listed(channel, m, full) for m in newest[:limit]],
            "has_more": len(newest) > limit,
            "pin_count": 0,
            "response_metadata": {"next_cursor": ""},
        }

    def _replies(self, params: Params) -> dict[str, Any]:
        self._member(params)
        channel = _require(params, "channel", "channel_not_found")
        found = self._find(channel, str(params.get("ts") or ""), "thread_not_found")
        parent = self._find(channel, found.get("thread_ts", found["ts"]), "thread_not_found")
        thread = [parent, *self._thread_of(channel, parent["ts"])]
        full = _flag(params.get("include_all_metadata"))
        return {
            "messages": [self._listed(channel, m, full) for m in thread],
            "has_more": False,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversation_info(self, params: Params) -> dict[str, Any]:
        channel = _require(params, "channel", "channel_not_found")
        private, outside = channel.startswith("G"), channel in self._not_in
        # Slack hides a private channel from a bot outside it, as if it did not exist.
        if channel in self.unknown_channels or (private and outside):
            raise SlackError("channel_not_found")
        return {
            "channel": {
                "id": channel,
                "name": channel.lower(),
                "is_channel": not private,
                "is_group": private,
                "is_private": private,
                "is_archived": False,
                "is_member": not outside,
            }
        }

    def _upload_url(self, params: Params) -> dict[str, Any]:
        try:
            return self.uploads.get_url(params, self.url)
        except FileError as exc:
            raise SlackError(exc.error) from None

    def _complete_upload(self, params: Params) -> dict[str, Any]:
        channel = str(params.get("channel_id") or "")
        thread_ts = str(params.get("thread_ts") or "")
        if thread_ts and not channel:
            raise SlackError("invalid_arguments")  # a thread is in one channel, named
        if channel in self._not_in:
            raise SlackError("not_in_channel")
        if thread_ts:
            parent = self._find(channel, thread_ts, "invalid_thread_ts")
            if not _is_top(parent):
                raise SlackError("invalid_thread_ts")  # Slack: never a reply's ts
        try:
            files = self.uploads.complete(params)
        except FileError as exc:
            raise SlackError(exc.error) from None
        for file in files:
            self._share(file, channel, thread_ts)
        return {"files": [{"id": f.id, "title": f.title} for f in files]}

    def _share(self, file: UploadedFile, channel: str, thread_ts: str) -> None:
        file.shared, file.channel, file.thread_ts = True, channel, thread_ts
        if not channel:
            return  # completed without a channel: a private file, in no conversation
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "text": "",
            "upload": True,
            "files": [self.uploads.listed(file, self.url)],
            "ts": self._next_ts(),
        }
        if thread_ts:
            message["thread_ts"] = thread_ts
        file.ts = str(message["ts"])
        self._messages.setdefault(channel, []).append(message)

    # -- helpers -----------------------------------------------------------------------------

    def _next_ts(self) -> str:
        # Slack ts are "seconds.microseconds" strings; keep them unique and increasing.
        self._last_ts = max(int(time.time() * 1_000_000), self._last_ts + 1)
        return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    def _find(self, channel: str, ts: str, error: str) -> dict[str, Any]:
        for message in self._messages.get(channel, []):
            if message["ts"] == ts:
                return message
        raise SlackError(error)

    def _thread_of(self, channel: str, parent_ts: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self._messages.get(channel, [])
            if m.get("thread_ts") == parent_ts and m["ts"] != parent_ts
        ]

    def _listed(self, channel: str, message: dict[str, Any], full: bool) -> dict[str, Any]:
        """Copy a message as history lists it: thread summary, metadata only on request."""
        listed = copy.deepcopy(message)
        if not full:
            listed.pop("metadata", None)
        replies = self._thread_of(channel, message["ts"]) if _is_top(message) else []
        if replies:
            listed.update(
                thread_ts=message["ts"],
                reply_count=len(replies),
                reply_users=sorted({r["user"] for r in replies}),
                latest_reply=replies[-1]["ts"],
            )
        return listed

    def _view_from(self, view: Any) -> dict[str, Any]:
        problems = view_problems(view)
        if problems:
            raise SlackError("invalid_arguments", problems)  # views.* do not say invalid_blocks
        self._serial += 1
        return {
            **copy.deepcopy(VIEW_DEFAULTS),
            **copy.deepcopy(view),
            "team_id": self.team_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "hash": f"{int(time.time())}.{self._serial:08x}",
        }

    def _find_view(self, view_id: Any, external_id: Any) -> dict[str, Any]:
        for view in self._views.values():
            if (view_id and view["id"] == view_id) or (
                external_id and view["external_id"] == external_id
            ):
                return view
        raise SlackError("not_found")

    def _user(self, user_id: str) -> dict[str, Any]:
        if user_id == self.bot_user_id:
            name, email, is_bot = "registry-bot", "", True
        elif user_id in self.users:
            info = self.users[user_id]
            name, email, is_bot = info.get("name", user_id), info.get("email", ""), False
        else:
            raise SlackError("user_not_found")
        profile = {"real_name": name, "display_name": name, **({"email": email} if email else {})}
        return {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": name,
            "deleted": False,
            "is_bot": is_bot,
            "profile": profile,
        }


def _file_record(file: UploadedFile) -> dict[str, Any]:
    return {
        "id": file.id,
        "name": file.name,
        "title": file.title,
        "mimetype": file.mimetype,
        "channel": file.channel,
        "thread_ts": file.thread_ts,
        "ts": file.ts,
        "data": file.data,
    }


def _params(request: Request) -> Params:
    """Merge query, form and JSON-body params, decoding JSON-valued fields."""
    params: Params = dict(request.args.items())
    params.update(request.form.items())
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict):
        params.update(body)
    return {key: _decode(key, value) for key, value in params.items()}


def _decode(key: str, value: Any) -> Any:
    if key in JSON_PARAMS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # left as sent, so the method answers invalid_blocks and the like
    return value


def _require(params: Params, key: str, error: str) -> str:
    value = params.get(key)
    if not value:
        raise SlackError(error)
    return str(value)


def _content(params: Params) -> dict[str, Any]:
    """Return the text/blocks/attachments sent, raising as Slack does when unusable."""
    content = {k: copy.deepcopy(params[k]) for k in CONTENT_FIELDS if params.get(k) is not None}
    for key in ("blocks", "attachments"):
        if key in content and not isinstance(content[key], list):
            raise SlackError(f"invalid_{key}")
    if not any(content.values()):
        raise SlackError("no_text")
    if "text" in content:
        content["text"] = str(content["text"])
    refusal = message_refusal(content)
    if refusal:
        raise SlackError(*refusal)
    return content


def _metadata(params: Params) -> dict[str, Any]:
    metadata = params.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not metadata.get("event_type"):
        raise SlackError("invalid_metadata_format")
    metadata = copy.deepcopy(metadata)
    metadata.setdefault("event_payload", {})
    return {"metadata": metadata}


def _is_top(message: dict[str, Any]) -> bool:
    return message.get("thread_ts", message["ts"]) == message["ts"]


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true")
