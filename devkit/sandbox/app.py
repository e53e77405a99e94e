"""The browser sandbox: a local Slack channel page that is also the bot's Slack Web API."""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import requests
from flask import Flask, jsonify, request
from werkzeug.test import Client

from devkit.slack_double import RESPONSE_URL, Call, SlackDouble
from devkit.slack_socket import NotConnected

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Served by the double, on the sandbox's own port: the Web API, response URLs, upload URLs
# and the files shared (the pictures a notice's thread shows).
SLACK_PATHS = ("/api/", "/response/", "/upload/", "/files/")
CHANNEL_NAME = "models"
HEADER = "registry-bot sandbox — #{name}"  # by name, as Slack shows a channel; never its ID
APP_ID = "A0SANDBOX"
LEGACY_TOKEN = "sandbox-verification-token"  # Slack still sends its deprecated token field
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
# Slack gives up on a request the app has not acknowledged within 3 seconds.
ACK_TIMEOUT = 3.0
SERVED_TTL = 1.0  # seconds a /version answer is reused across page polls

REQUIRED_FIELD = "Please complete this required field."
NOT_A_COMMAND = "Only slash commands reach the bot from here, for example: /registry help"
STALE_MESSAGE = "That message changed before the click arrived; look again and retry."
BOT_FAILED = "{what} failed: the bot answered HTTP {status}, so Slack would show an error."
BOT_TIMEOUT = "{what} failed: the bot did not answer within 3 seconds (operation_timeout)."
BOT_DOWN = "{what} failed: the bot is not reachable ({error})."
NOT_CONNECTED = "the bot holds no Socket Mode connection"
NO_TRAINING = "This sandbox has no training callback."
NO_ALERTS = "This sandbox has no alert callback."
NO_PROMOTE = "This sandbox has no MLflow to promote in by hand."
NOTHING_SERVED = "nothing in Production yet"

Json = dict[str, Any]


@dataclass
class Origin:
    """Where a response URL was handed out: who acted, and on which message."""

    user: str
    channel: str
    ephemeral: str = ""  # id of the ephemeral message whose button was clicked
    message_ts: str = ""  # ts of the channel message whose button was clicked
    thread_ts: str = ""


@dataclass
class Ephemeral:
    """A message only `user` sees: from chat.postEphemeral, a response URL or Slack itself."""

    id: str
    user: str
    channel: str
    ts: str
    text: str = ""
    blocks: list[Json] = field(default_factory=list)
    thread_ts: str = ""
    from_slack: bool = False  # Slack's own notices ("the app did not respond") carry no app
    echo: bool = False  # the command `user` typed, shown so its answer pairs with it

    def as_json(self) -> Json:
        """Render for the page."""
        return {
            "ts": self.ts,
            "id": self.id,
            "text": self.text,
            "blocks": self.blocks,
            "ephemeral": True,
            "from_slack": self.from_slack,
            "echo": self.echo,
            "user": self.user,
            "thread_ts": self.thread_ts,
        }


@dataclass
class Modal:
    """A view the bot opened for one user, and the errors its last submission got."""

    view_id: str
    user: str
    errors: dict[str, str] = field(default_factory=dict)
    open: bool = True


class Channel:
    """What Slack's clients add to the Web API double: who sees which ephemeral and modal."""

    def __init__(self, double: SlackDouble, channel: str) -> None:
        self.double, self.channel = double, channel
        self._lock = threading.RLock()
        self._seen = 0  # calls of the double already applied
        self._ids = itertools.count(1)
        self._ephemerals: list[Ephemeral] = []
        self._origins: dict[str, Origin] = {}
        self._triggers: dict[str, str] = {}
        self._modals: list[Modal] = []

    # -- what the bot did ----------------------------------------------------------------

    def sync(self) -> None:
        """Apply the double's calls recorded since the last sync, in order."""
        with self._lock:
            calls = self.double.calls()
            for call in calls[self._seen :]:
                self._apply(call)
            self._seen = len(calls)

    def _apply(self, call: Call) -> None:
        answer = call.response if isinstance(call.response, dict) else {}
        if call.status != 200:
            return
        if call.method == "chat.postEphemeral" and answer.get("ok"):
            self._add_ephemeral(
                str(call.params.get("user", "")), call.params, ts=str(answer.get("message_ts", ""))
            )
        elif call.method == RESPONSE_URL:
            self._respond(unquote(call.path.removeprefix("/response/")), call)
        elif call.method in ("views.open", "views.push") and answer.get("ok"):
            user = self._triggers.get(str(call.params.get("trigger_id", "")), "")
            self._modals.append(Modal(answer["view"]["id"], user))

    def _add_ephemeral(
        self, user: str, params: Json, *, ts: str = "", from_slack: bool = False, echo: bool = False
    ) -> Ephemeral:
        ephemeral = Ephemeral(
            id=f"E{next(self._ids)}",
            user=user,
            channel=str(params.get("channel", self.channel)),
            ts=ts or f"{time.time():.6f}",
            text=str(params.get("text") or ""),
            blocks=list(params.get("blocks") or []),
            thread_ts=str(params.get("thread_ts") or ""),
            from_slack=from_slack,
            echo=echo,
        )
        self._ephemerals.append(ephemeral)
        return ephemeral

    def _respond(self, name: str, call: Call) -> None:
        """Do what a post to a response URL asks, as Slack does."""
        origin = self._origins.get(name)
        if origin is None:
            log.warning("post to unknown response URL %s", name)
            return
        params = call.params
        target = self._ephemeral(origin.ephemeral)
        if _flag(params.get("delete_original")):
            if target is not None:
                self._ephemerals.remove(target)
            return
        if _flag(params.get("replace_original")) and (target or origin.message_ts):
            self._replace(origin, target, params)
        elif params.get("response_type") == "in_channel":
            self.as_bot(
                "chat.postMessage",
                channel=origin.channel,
                thread_ts=origin.thread_ts,
                **_content(params),
            )
        else:
            self._add_ephemeral(
                origin.user,
                {**params, "channel": origin.channel, "thread_ts": origin.thread_ts},
                ts=f"{call.at:.6f}",
            )

    def _replace(self, origin: Origin, target: Ephemeral | None, params: Json) -> None:
        if target is not None:
            target.text = str(params.get("text") or "")
            target.blocks = list(params.get("blocks") or [])
        else:
            # Replacing an in-channel message edits it for everyone, like chat.update.
            self.as_bot(
                "chat.update", channel=origin.channel, ts=origin.message_ts, **_content(params)
            )

    def as_bot(self, method: str, **params: Any) -> None:
        """Change the channel through the double's own Web API, so it records the change."""
        form = {k: json.dumps(v) if isinstance(v, list) else v for k, v in params.items() if v}
        Client(self.double.wsgi_app).post(
            f"/api/{method}", data=form, headers={"Authorization": f"Bearer {self.double.token}"}
        )

    def _ephemeral(self, ephemeral_id: str) -> Ephemeral | None:
        return next((e for e in self._ephemerals if e.id == ephemeral_id), None)

    # -- what the person does --------------------------------------------------------------

    def response_url(self, origin: Origin) -> str:
        """Hand out a response URL that remembers who acted, and where."""
        name = f"{origin.user}-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._origins[name] = origin
        return self.double.response_url(name)

    def trigger_id(self, user: str) -> str:
        """Hand out a trigger_id; a view it opens is shown to `user`."""
        trigger = f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:32]}"
        with self._lock:
            self._triggers[trigger] = user
        return trigger

    def tell(self, user: str, text: str) -> None:
        """Show `user` a notice from Slack itself (a failed request, a hint)."""
        with self._lock:
            self._add_ephemeral(user, {"channel": self.channel, "text": text}, from_slack=True)

    def echo(self, user: str, line: str) -> None:
        """Show `user` the command they typed, where its answer will follow.

        Slack shows nobody a slash command; the sandbox shows it to its sender, so that
        after a few commands each answer still sits under the command it answers.
        """
        with self._lock:
            self._add_ephemeral(user, {"channel": self.channel, "text": line}, echo=True)

    def show(self, user: str, content: Json) -> None:
        """Show `user` an ephemeral message from the app (a slash command's own answer)."""
        with self._lock:
            self._add_ephemeral(user, {**content, "channel": self.channel})

    def modal(self, view_id: str) -> Modal | None:
        """Return the open modal with this view id."""
        with self._lock:
            return next((m for m in self._modals if m.view_id == view_id and m.open), None)

    def close(self, modal: Modal) -> None:
        """Close a modal (submitted, cancelled or cleared)."""
        with self._lock:
            modal.open = False

    def clear_modals(self, user: str) -> None:
        """Close every modal `user` has open (response_action "clear")."""
        with self._lock:
            for modal in self._modals:
                if modal.user == user:
                    modal.open = False

    def message(self, ts: str) -> Json | None:
        """Return the channel message (top-level or reply) with this ts."""
        for top in self.double.messages(self.channel):
            for message in [top, *top["replies"]]:
                if message["ts"] == ts:
                    return message
        return None

    def ephemeral(self, ephemeral_id: str, user: str) -> Ephemeral | None:
        """Return an ephemeral message `user` can see."""
        with self._lock:
            found = self._ephemeral(ephemeral_id)
            return found if found is not None and found.user == user else None

    # -- the page --------------------------------------------------------------------------

    def timeline(self, user: str) -> list[Json]:
        """Return the channel as `user` sees it: messages, their threads, their ephemerals."""
        self.sync()
        with self._lock:
            mine = [
                e.as_json()
                for e in self._ephemerals
                if e.user == user and e.channel == self.channel
            ]
        tops = [{**m, "ephemeral": False} for m in self.double.messages(self.channel)]
        shown = _by_ts(tops + [e for e in mine if not e["thread_ts"]])
        for message in shown:
            replies = [{**r, "ephemeral": False} for r in message.pop("replies", [])]
            threaded = [
                e for e in mine if e["thread_ts"] == message["ts"] and not message.get("ephemeral")
            ]
            message["replies"] = _by_ts(replies + threaded)
        return shown

    def open_modal(self, user: str) -> Json | None:
        """Return the topmost modal `user` has open, with its view and errors."""
        self.sync()
        with self._lock:
            modals = [m for m in self._modals if m.open and m.user in (user, "")]
        views = {v["id"]: v for v in self.double.views()}
        for modal in reversed(modals):
            if modal.view_id in views:
                return {"view": views[modal.view_id], "errors": modal.errors}
        return None


class SlackClientSide:
    """Send the bot exactly the signed requests Slack sends when a person acts."""

    def __init__(
        self,
        channel: Channel,
        *,
        bot_url: str,
        signing_secret: str,
        team_id: str,
        socket_mode: bool = False,
    ) -> None:
        self.channel, self.signing_secret, self.team_id = channel, signing_secret, team_id
        self.socket_mode = socket_mode  # push envelopes over the bot's WebSocket, not HTTP
        base = bot_url.rstrip("/")
        self.events_url = base if base.endswith("/slack/events") else base + "/slack/events"

    def click(
        self,
        user: str,
        *,
        ts: str,
        ephemeral: str,
        block: int,
        element: int,
        action_id: str,
        view: str = "",
    ) -> Json:
        """Click a button in a channel message, one of `user`'s ephemerals or their Home tab."""
        found = (
            self._clicked_home(user, view)
            if view
            else self._clicked(user, ts=ts, ephemeral=ephemeral)
        )
        if found is None:
            return {"error": STALE_MESSAGE}
        blocks, payload = found
        action = _action(blocks, block, element)
        if action is None or action.get("action_id") != action_id:
            return {"error": STALE_MESSAGE}
        payload.update(
            type="block_actions",
            actions=[action],
            state={"values": {}},
            trigger_id=self.channel.trigger_id(user),
            **self._who(user),
        )
        return self._interact(user, payload, f"The {_button_text(action)} button")

    def _clicked(self, user: str, *, ts: str, ephemeral: str) -> tuple[list[Json], Json] | None:
        """Find the clicked message; return its blocks and the payload fields it implies."""
        channel = {"id": self.channel.channel, "name": CHANNEL_NAME}
        if ephemeral:
            found = self.channel.ephemeral(ephemeral, user)
            if found is None:
                return None
            origin = Origin(user, channel["id"], ephemeral=found.id, thread_ts=found.thread_ts)
            # Slack sends no `message` for a click on an ephemeral message.
            container = {
                "type": "message",
                "message_ts": found.ts,
                "channel_id": channel["id"],
                "is_ephemeral": True,
            }
            return found.blocks, {
                "container": container,
                "channel": channel,
                "response_url": self.channel.response_url(origin),
            }
        message = self.channel.message(ts)
        if message is None:
            return None
        # A parent lists its own ts as thread_ts; only a reply is "in" a thread.
        thread_ts = message.get("thread_ts", "") if message.get("thread_ts") != ts else ""
        origin = Origin(user, channel["id"], message_ts=ts, thread_ts=thread_ts)
        container = {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel["id"],
            "is_ephemeral": False,
            **({"thread_ts": thread_ts} if thread_ts else {}),
        }
        listed = {k: v for k, v in message.items() if k not in ("replies", "metadata")}
        return message.get("blocks") or [], {
            "container": container,
            "channel": channel,
            "message": listed,
            "response_url": self.channel.response_url(origin),
        }

    def _clicked_home(self, user: str, view_id: str) -> tuple[list[Json], Json] | None:
        """Find `user`'s Home tab; a click there comes with the view and no response URL."""
        home = self.channel.double.home(user)
        if home is None or home["id"] != view_id:
            return None
        return home.get("blocks") or [], {
            "container": {"type": "view", "view_id": view_id},
            "view": home,
        }

    def open_home(self, user: str) -> Json:
        """Open the app's Home tab: Slack sends the app an app_home_opened event."""
        event = {
            "type": "app_home_opened",
            "user": user,
            "channel": f"D{user[1:]}",
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        }
        home = self.channel.double.home(user)
        if home is not None:
            event["view"] = home
        body = {
            "token": LEGACY_TOKEN,
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:12].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": self.team_id,
                    "user_id": self.channel.double.bot_user_id,
                    "is_bot": True,
                }
            ],
        }
        return self._send(user, "events_api", body, "Opening the Home tab")

    def submit(self, user: str, view_id: str, values: dict[str, dict[str, str]]) -> Json:
        """Submit a modal; answer the errors it shows, or that it closed."""
        modal = self.channel.modal(view_id)
        view = next((v for v in self.channel.double.views() if v["id"] == view_id), None)
        if modal is None or view is None:
            return {"closed": True}
        missing = _required_missing(view, values)
        if missing:
            # Slack's client refuses an empty required input without asking the app.
            modal.errors = missing
            return {"errors": missing}
        view = {**view, "state": {"values": _state_values(view, values)}}
        payload = {
            "type": "view_submission",
            "view": view,
            "response_urls": [],
            "trigger_id": self.channel.trigger_id(user),
            **self._who(user),
        }
        answer = self._interact(user, payload, "Submitting the form")
        return self._after_submit(user, modal, answer)

    def _after_submit(self, user: str, modal: Modal, answer: Json) -> Json:
        body = answer.get("body") or {}
        action = body.get("response_action", "") if isinstance(body, dict) else ""
        if action == "errors":
            modal.errors = {str(k): str(v) for k, v in (body.get("errors") or {}).items()}
            return {"errors": modal.errors}
        if "error" in answer:
            return answer  # Slack keeps the modal open and says it could not be submitted
        if action == "update":
            self.channel.as_bot(
                "views.update", view_id=modal.view_id, view=json.dumps(body.get("view") or {})
            )
            modal.errors = {}
            return {"updated": True}
        if action == "clear":
            self.channel.clear_modals(user)
        self.channel.close(modal)
        return {"closed": True}

    def cancel(self, user: str, view_id: str) -> Json:
        """Close a modal; tell the bot only if the view asked to be told."""
        modal = self.channel.modal(view_id)
        view = next((v for v in self.channel.double.views() if v["id"] == view_id), None)
        if modal is not None:
            self.channel.close(modal)
        if view is not None and view.get("notify_on_close"):
            payload = {"type": "view_closed", "view": view, "is_cleared": False, **self._who(user)}
            self._interact(user, payload, "Closing the form")
        return {"closed": True}

    def command(self, user: str, line: str) -> Json:
        """Send a slash command typed into the message box."""
        name, _, text = line.strip().partition(" ")
        if not name.startswith("/") or len(name) < 2:
            self.channel.tell(user, NOT_A_COMMAND)
            return {"error": NOT_A_COMMAND}
        self.channel.echo(user, line.strip())
        origin = Origin(user, self.channel.channel)
        form = {
            "token": LEGACY_TOKEN,
            "team_id": self.team_id,
            "team_domain": "sandbox",
            "channel_id": self.channel.channel,
            "channel_name": CHANNEL_NAME,
            "user_id": user,
            "user_name": self._name(user),
            "command": name,
            "text": text.strip(),
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self.channel.response_url(origin),
            "trigger_id": self.channel.trigger_id(user),
        }
        answer = self._send(user, "slash_commands", form, name)
        self._show_command_answer(user, answer)
        return answer

    def _show_command_answer(self, user: str, answer: Json) -> None:
        # A slash command's own HTTP answer, when it has a body, is shown to the sender.
        body = answer.get("body")
        if isinstance(body, dict) and (body.get("text") or body.get("blocks")):
            self.channel.show(user, body)
        elif isinstance(body, str) and body.strip():
            self.channel.tell(user, body.strip())

    # -- requests --------------------------------------------------------------------------

    def _who(self, user: str) -> Json:
        return {
            "team": {"id": self.team_id, "domain": "sandbox"},
            "user": {
                "id": user,
                "username": self._name(user),
                "name": self._name(user),
                "team_id": self.team_id,
            },
            "api_app_id": APP_ID,
            "token": LEGACY_TOKEN,
            "enterprise": None,
            "is_enterprise_install": False,
        }

    def _name(self, user: str) -> str:
        return self.channel.double.users.get(user, {}).get("name", user.lower())

    def _interact(self, user: str, payload: Json, what: str) -> Json:
        """Send an interactivity payload to the bot as Slack does."""
        return self._send(user, "interactive", payload, what)

    def _send(self, user: str, kind: str, payload: Json, what: str) -> Json:
        """Deliver a request to the bot the way it runs: HTTP or Socket Mode; relay its answer."""
        if self.socket_mode:
            return self._push(user, kind, payload, what)
        if kind == "events_api":
            return self._post(user, json.dumps(payload), what, content_type="application/json")
        # Interactivity comes as form-encoded `payload=`, a slash command as its form fields.
        form = {"payload": json.dumps(payload)} if kind == "interactive" else payload
        return self._post(user, urlencode(form), what)

    def _push(self, user: str, kind: str, payload: Json, what: str) -> Json:
        """Push an envelope over the bot's Socket Mode link; wait for its ack as Slack does."""
        socket = self.channel.double.socket
        try:
            envelope = socket.push(kind, payload)
        except NotConnected:
            return self._failed(user, BOT_DOWN.format(what=what, error=NOT_CONNECTED))
        acked = socket.wait_for_ack(envelope.envelope_id, timeout=ACK_TIMEOUT)
        if acked is None:
            return self._failed(user, BOT_TIMEOUT.format(what=what))
        return {"ok": True, "body": acked.response or ""}

    def _post(
        self,
        user: str,
        body: str,
        what: str,
        *,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> Json:
        """POST a body to the bot, signed with Slack's v0 scheme; relay its answer."""
        headers = {**self._signed(body), "Content-Type": content_type}
        try:
            resp = requests.post(
                self.events_url, data=body.encode(), timeout=ACK_TIMEOUT, headers=headers
            )
        except requests.Timeout:
            return self._failed(user, BOT_TIMEOUT.format(what=what))
        except requests.RequestException as exc:
            return self._failed(user, BOT_DOWN.format(what=what, error=type(exc).__name__))
        if resp.status_code != 200:
            return self._failed(user, BOT_FAILED.format(what=what, status=resp.status_code))
        return {"ok": True, "body": _answer_body(resp)}

    def _signed(self, body: str) -> dict[str, str]:
        stamp = str(int(time.time()))
        base = f"v0:{stamp}:{body}".encode()
        mac = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={mac}",
            "User-Agent": SLACK_USER_AGENT,
        }

    def _failed(self, user: str, text: str) -> Json:
        self.channel.tell(user, text)
        return {"error": text}


class ServedVersion:
    """Ask the prediction API which version it serves, at most once a second."""

    def __init__(self, predict_url: str) -> None:
        self.url = predict_url.rstrip("/")
        self._lock = threading.Lock()
        self._at = 0.0
        self._value: Json = {}

    def get(self) -> Json:
        """Return {"url", "version"} or {"url", "error"}; {} without a prediction API."""
        if not self.url:
            return {}
        with self._lock:
            if time.monotonic() - self._at > SERVED_TTL:
                self._value, self._at = self._fetch(), time.monotonic()
            return dict(self._value)

    def _fetch(self) -> Json:
        try:
            resp = requests.get(f"{self.url}/version", timeout=0.5)
            body = (
                resp.json()
                if resp.headers.get("content-type", "").startswith("application/json")
                else {}
            )
        except (requests.RequestException, ValueError) as exc:
            return {"url": self.url, "error": f"not answering ({type(exc).__name__})"}
        if resp.ok and body.get("version"):
            return {"url": self.url, **body, "version": str(body["version"])}
        if resp.ok:
            return {"url": self.url, **body, "error": NOTHING_SERVED}
        return {"url": self.url, "error": body.get("error") or f"HTTP {resp.status_code}"}


def create_sandbox(
    *,
    double: SlackDouble,
    bot_url: str,
    signing_secret: str,
    channel: str,
    predict_url: str = "",
    on_train: Callable[[], str | Mapping[str, str]] | None = None,
    on_alert: Callable[[], str] | None = None,
    team_id: str = "T0DEMO",
    socket_mode: bool = False,
) -> Flask:
    """Build the sandbox: the Slack Web API under /api/ and /response/, and the channel page.

    The double must be created with the port the sandbox serves on: auth.test and the
    response URLs handed to the bot name it. With `socket_mode`, what a person does reaches
    the bot as envelopes over its Socket Mode link (start `double.socket` first).
    """
    if double.port is None:
        raise ValueError("create the SlackDouble with port=<the sandbox's port>")
    room = Channel(double, channel)
    slack = SlackClientSide(
        room,
        bot_url=bot_url,
        signing_secret=signing_secret,
        team_id=team_id,
        socket_mode=socket_mode,
    )
    served = ServedVersion(predict_url)
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    _page_routes(
        app, room, served, team_id, can_train=on_train is not None, can_alert=on_alert is not None
    )
    _action_routes(app, slack, on_train)
    _alert_route(app, on_alert)
    _promote_route(app)
    app.wsgi_app = _with_slack_api(app.wsgi_app, double)  # type: ignore[method-assign]
    return app


def _page_routes(
    app: Flask,
    room: Channel,
    served: ServedVersion,
    team_id: str,
    *,
    can_train: bool,
    can_alert: bool = False,
) -> None:
    @app.get("/")
    def index():
        return app.send_static_file("index.html")

    @app.get("/sandbox/state")
    def state():
        user = request.args.get("user", "")
        return jsonify(
            header=HEADER.format(name=CHANNEL_NAME),
            channel=room.channel,
            channel_name=CHANNEL_NAME,
            team_id=team_id,
            users=_users(room.double),
            user=user,
            messages=room.timeline(user),
            home=room.double.home(user),
            modal=room.open_modal(user),
            served=served.get(),
            can_train=can_train,
            can_alert=can_alert,
        )


def _action_routes(
    app: Flask, slack: SlackClientSide, on_train: Callable[[], str | Mapping[str, str]] | None
) -> None:
    @app.post("/sandbox/click")
    def click():
        body = request.get_json(force=True)
        return jsonify(
            slack.click(
                str(body["user"]),
                ts=str(body.get("ts") or ""),
                ephemeral=str(body.get("ephemeral") or ""),
                block=int(body["block"]),
                element=int(body["element"]),
                action_id=str(body.get("action_id") or ""),
                view=str(body.get("view") or ""),
            )
        )

    @app.post("/sandbox/home")
    def home():
        body = request.get_json(force=True)
        return jsonify(slack.open_home(str(body["user"])))

    @app.post("/sandbox/submit")
    def submit():
        body = request.get_json(force=True)
        return jsonify(
            slack.submit(str(body["user"]), str(body["view_id"]), body.get("values") or {})
        )

    @app.post("/sandbox/cancel")
    def cancel():
        body = request.get_json(force=True)
        return jsonify(slack.cancel(str(body["user"]), str(body["view_id"])))

    @app.post("/sandbox/command")
    def command():
        body = request.get_json(force=True)
        return jsonify(slack.command(str(body["user"]), str(body.get("text") or "")))

    @app.post("/sandbox/train")
    def train():
        if on_train is None:
            return jsonify(error=NO_TRAINING), 404
        try:
            # "message" for the sidebar; a "run_id" lets the page drop it once the notice is in.
            sent = on_train()
            return jsonify({"message": sent} if isinstance(sent, str) else dict(sent))
        except Exception as exc:  # the page shows why; the traceback goes to the log
            log.exception("training run failed")
            return jsonify(error=f"training run failed: {exc}"), 500


def _alert_route(app: Flask, on_alert: Callable[[], str] | None) -> None:
    @app.post("/sandbox/alert")
    def fire_alert():
        """Post an alert for the served model to the webhooks service, as Alertmanager would."""
        return _demo_action(on_alert, NO_ALERTS, "firing an alert")


def _promote_route(app: Flask) -> None:
    @app.post("/sandbox/promote")
    def promote_by_hand():
        """Ask MLflow to make a hand-registered version Production, as a person would (the
        gate inside MLflow refuses it): the callback in app.config["on_promote"]."""
        return _demo_action(app.config.get("on_promote"), NO_PROMOTE, "promoting in MLflow by hand")


def _demo_action(action: Callable[[], str] | None, missing: str, what: str):
    """Run one of the demo's buttons: its message, 404 without it, or 500 saying why it failed
    (the page shows why; the traceback goes to the log)."""
    if action is None:
        return jsonify(error=missing), 404
    try:
        return jsonify(message=action())
    except Exception as exc:
        log.exception("%s failed", what)
        return jsonify(error=f"{what} failed: {exc}"), 500


def _with_slack_api(flask_app: Callable[..., Any], double: SlackDouble) -> Callable[..., Any]:
    """Route the Slack Web API and response URLs to the double, the rest to the page."""

    def dispatch(environ: Json, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if str(environ.get("PATH_INFO", "")).startswith(SLACK_PATHS):
            return double.wsgi_app(environ, start_response)
        return flask_app(environ, start_response)

    return dispatch


def _users(double: SlackDouble) -> list[Json]:
    people = [
        {"id": uid, "name": info.get("name", uid), "role": info.get("role", "")}
        for uid, info in double.users.items()
    ]
    return [*people, {"id": double.bot_user_id, "name": "registry-bot", "role": "bot"}]


def _by_ts(messages: list[Json]) -> list[Json]:
    return sorted(messages, key=lambda m: float(m["ts"] or 0))


def _action(blocks: list[Json], block: int, element: int) -> Json | None:
    """Return the clicked element as Slack reports it in `actions`."""
    try:
        found = blocks[block]
        elements = found.get("elements") or [found.get("accessory")]
        clicked = copy.deepcopy(elements[element])
    except (IndexError, TypeError, AttributeError):
        return None
    if not isinstance(clicked, dict):
        return None
    # Slack makes up a block_id when the app gave none; keep it stable per block.
    block_id = (
        found.get("block_id")
        or hashlib.sha1(json.dumps(found, sort_keys=True).encode()).hexdigest()[:5]
    )
    return {**clicked, "block_id": block_id, "action_ts": f"{time.time():.6f}"}


def _button_text(action: Json) -> str:
    return str((action.get("text") or {}).get("text") or action.get("action_id") or "")


def _required_missing(view: Json, values: dict[str, dict[str, str]]) -> dict[str, str]:
    missing = {}
    for block in view.get("blocks") or []:
        if block.get("type") != "input" or block.get("optional"):
            continue
        action_id = (block.get("element") or {}).get("action_id", "")
        if not str((values.get(block.get("block_id", "")) or {}).get(action_id) or ""):
            missing[block.get("block_id", "")] = REQUIRED_FIELD
    return missing


def _state_values(view: Json, values: dict[str, dict[str, str]]) -> Json:
    """Build view.state.values as Slack does: per block, per action, typed; empty is None."""
    state: Json = {}
    for block in view.get("blocks") or []:
        element = block.get("element") or {}
        if block.get("type") != "input" or not element.get("action_id"):
            continue
        typed = (values.get(block.get("block_id", "")) or {}).get(element["action_id"])
        state[block.get("block_id", "")] = {
            element["action_id"]: {
                "type": element.get("type", "plain_text_input"),
                "value": typed or None,
            }
        }
    return state


def _answer_body(resp: requests.Response) -> Json | str:
    if not resp.content:
        return ""
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _content(params: Json) -> Json:
    return {k: params[k] for k in ("text", "blocks") if params.get(k)}


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")
