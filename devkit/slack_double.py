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

from devkit.slack_socket import SocketModeServer

log = logging.getLogger(__name__)

RESPONSE_URL = "response_url"
# Only the app-level token (xapp-) may open a Socket Mode connection, and it may do no more.
APP_TOKEN_METHODS = ("apps.connections.open",)
# Slack takes these as JSON strings in form posts and as objects in JSON bodies.
JSON_PARAMS = ("blocks", "attachments", "view", "metadata")
CONTENT_FIELDS = ("text", "blocks", "attachments")
VIEW_BLOCK_LIMIT = 100  # blocks in a modal or Home tab
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
    """An API error, which Slack reports as HTTP 200 with ok=false."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


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
    ) -> None:
        self.token, self.team_id, self.bot_user_id = token, team_id, bot_user_id
        self.app_token = app_token
        self.bot_id, self.app_id = "B" + bot_user_id.removeprefix("U"), "A0TEST"
        self.socket = SocketModeServer(app_id=self.app_id)
        self.users = {uid: dict(info) for uid, info in (users or {}).items()}
        self.usergroups = {gid: list(members) for gid, members in (usergroups or {}).items()}
        self.port: int | None = port or None
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
        """Forget calls, messages, ephemerals, views, faults and delays."""
        with self._cond:
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

    def _reset_state(self) -> None:
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ephemerals: list[dict[str, Any]] = []
        self._views: dict[str, dict[str, Any]] = {}
        self._homes: dict[str, dict[str, Any]] = {}
        self._serial = 0
        self._last_ts = 0

    # -- HTTP --------------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Serve the Web API under /api/ and response URLs under /response/."""
        request = Request(environ)
        return self._route(request).to_response()(environ, start_response)

    def _route(self, request: Request) -> _Reply:
        path = request.path
        if path.startswith("/api/"):
            return self._serve(path.removeprefix("/api/"), request, self._api)
        if path.startswith("/response/"):
            if request.method != "POST":
                return _Reply("method_not_allowed", 405)
            return self._serve(RESPONSE_URL, request, self._response_post)
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
        try:
            self._authorize(method, params, request)
            return _Reply({"ok": True, **handler(params)})
        except SlackError as exc:
            # Slack answers API errors with HTTP 200 and ok=false.
            return _Reply({"ok": False, "error": exc.error})
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

    def _response_post(self, method: str, params: Params, request: Request) -> _Reply:
        # Response URLs take JSON only and answer plain text: "ok" or a short reason.
        if not isinstance(request.get_json(silent=True), dict):
            return _Reply("invalid_payload", 400)
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
        return {"user": self._user(str(params.get("user") or ""))}

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
        if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
            raise SlackError("invalid_arguments")
        if len(view.get("blocks") or []) > VIEW_BLOCK_LIMIT:
            raise SlackError("invalid_arguments")  # "no more than 100 items", Slack says
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
