"""The Slack Web API double, driven through the real slack_sdk clients."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.webhook import WebhookClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from devkit.slack_double import SlackDouble, watch_refusals
from devkit.slack_socket import BAD_TICKET, NotConnected

TOKEN = "xoxb-double-test"
USERS = {
    "UADA": {"name": "ada", "email": "ada@example.com"},
    "UGRACE": {"name": "grace", "email": "grace@example.com"},
}
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}]
MODAL = {
    "type": "modal",
    "callback_id": "reject",
    "title": {"type": "plain_text", "text": "Why"},
    "blocks": [],
}


@pytest.fixture
def double() -> Iterator[SlackDouble]:
    with SlackDouble(token=TOKEN, users=USERS, usergroups={"SAPPROVERS": ["UADA", "UGRACE"]}) as d:
        yield d


@pytest.fixture
def client(double) -> WebClient:
    return WebClient(token=TOKEN, base_url=double.api_url, timeout=5)


def slack_error(call) -> str:
    """Run `call`, expecting SlackApiError; return Slack's error code."""
    with pytest.raises(SlackApiError) as info:
        call()
    return info.value.response["error"]


def post_json(url: str) -> object:
    """POST to `url`; return the JSON answer, or the error (threads must not raise)."""
    try:
        with requests.post(url, timeout=10) as resp:
            return resp.json()
    except requests.RequestException as exc:
        return exc


def test_urls_and_auth_test(double, client):
    assert double.url == f"http://127.0.0.1:{double.port}/"
    assert double.api_url == double.url + "api/"
    resp = client.auth_test()
    assert resp.status_code == 200
    assert resp["ok"] is True
    assert (resp["team_id"], resp["user_id"], resp["bot_id"]) == ("T0TEST", "UBOT", "BBOT")
    assert resp["url"] and resp["team"] and resp["user"]


def test_post_message_then_update(double, client):
    first = client.chat_postMessage(
        channel="C1",
        text="hello",
        blocks=BLOCKS,
        metadata={"event_type": "notice", "event_payload": {"v": 1}},
    )
    second = client.chat_postMessage(channel="C1", text="again")
    assert first["channel"] == "C1"
    assert first["message"]["ts"] == first["ts"]
    assert first["message"]["blocks"] == BLOCKS and first["message"]["user"] == "UBOT"
    assert float(second["ts"]) > float(first["ts"])

    updated = client.chat_update(channel="C1", ts=first["ts"], text="decided", blocks=[])
    assert (updated["channel"], updated["ts"], updated["text"]) == ("C1", first["ts"], "decided")
    assert updated["message"]["blocks"] == []

    shown = double.messages("C1")
    assert [m["ts"] for m in shown] == [first["ts"], second["ts"]]
    assert shown[0]["text"] == "decided" and shown[0]["blocks"] == []
    assert shown[0]["metadata"] == {"event_type": "notice", "event_payload": {"v": 1}}
    assert double.messages("C-other") == []


def test_message_errors_store_nothing(double, client):
    assert (
        slack_error(lambda: client.api_call("chat.postMessage", json={"text": "x"}))
        == "channel_not_found"
    )
    assert (
        slack_error(lambda: client.api_call("chat.postMessage", json={"channel": "C1"}))
        == "no_text"
    )
    assert (
        slack_error(lambda: client.chat_update(channel="C1", ts="1.000001", text="x"))
        == "message_not_found"
    )
    assert double.messages("C1") == []
    assert [c.status for c in double.calls()] == [200, 200, 200]


def test_threads_history_and_replies(double, client):
    parent = client.chat_postMessage(
        channel="C1", text="parent", metadata={"event_type": "notice", "event_payload": {}}
    )
    reply = client.chat_postMessage(channel="C1", text="reply", thread_ts=parent["ts"])
    later = client.chat_postMessage(channel="C1", text="later")

    history = client.conversations_history(channel="C1")
    assert [m["text"] for m in history["messages"]] == ["later", "parent"]
    assert history["messages"][1]["reply_count"] == 1
    assert "metadata" not in history["messages"][1]
    full = client.conversations_history(channel="C1", include_all_metadata=True, limit=1)
    assert [m["ts"] for m in full["messages"]] == [later["ts"]] and full["has_more"] is True
    with_meta = client.conversations_history(channel="C1", include_all_metadata=True)
    assert with_meta["messages"][1]["metadata"]["event_type"] == "notice"

    for ts in (parent["ts"], reply["ts"]):
        thread = client.conversations_replies(channel="C1", ts=ts)
        assert [m["ts"] for m in thread["messages"]] == [parent["ts"], reply["ts"]]
    assert double.messages("C1")[0]["replies"][0]["text"] == "reply"
    assert (
        slack_error(lambda: client.conversations_replies(channel="C1", ts="9.000009"))
        == "thread_not_found"
    )


def test_post_ephemeral(double, client):
    resp = client.chat_postEphemeral(channel="C1", user="UADA", text="only you")
    assert set(resp.data) == {"ok", "message_ts"}
    assert double.ephemerals("C1") == [
        {"channel": "C1", "user": "UADA", "text": "only you", "ts": resp["message_ts"]}
    ]
    assert double.messages("C1") == []


@pytest.mark.slack_refuses("invalid_arguments")
def test_views_open_update_push(double, client):
    opened = client.views_open(trigger_id="123.456.abc", view=MODAL)["view"]
    assert opened["id"].startswith("V") and opened["callback_id"] == "reject"
    assert opened["root_view_id"] == opened["id"] and opened["state"] == {"values": {}}
    call = double.calls("views.open")[0]
    assert call.params["trigger_id"] == "123.456.abc" and call.params["view"] == MODAL

    changed = {**MODAL, "title": {"type": "plain_text", "text": "Sure?"}}
    updated = client.views_update(view_id=opened["id"], view=changed, hash=opened["hash"])
    assert updated["view"]["id"] == opened["id"]
    assert updated["view"]["title"]["text"] == "Sure?" and updated["view"]["hash"] != opened["hash"]
    assert (
        slack_error(
            lambda: client.views_update(view_id=opened["id"], view=changed, hash=opened["hash"])
        )
        == "hash_conflict"
    )
    assert slack_error(lambda: client.views_update(view_id="VNOPE", view=changed)) == "not_found"

    pushed = client.views_push(trigger_id="789", view=MODAL)["view"]
    assert pushed["id"] != opened["id"]
    assert [v["id"] for v in double.views()] == [opened["id"], pushed["id"]]
    assert (
        slack_error(lambda: client.views_open(trigger_id="t", view={"blocks": []}))
        == "invalid_arguments"
    )


def test_users_and_usergroups(client):
    user = client.users_info(user="UADA")["user"]
    assert (user["id"], user["name"]) == ("UADA", "ada")
    assert user["profile"]["email"] == "ada@example.com"
    assert client.users_lookupByEmail(email="Grace@Example.com")["user"]["id"] == "UGRACE"
    assert client.usergroups_users_list(usergroup="SAPPROVERS")["users"] == ["UADA", "UGRACE"]
    assert slack_error(lambda: client.users_info(user="UNOBODY")) == "user_not_found"
    assert (
        slack_error(lambda: client.users_lookupByEmail(email="x@example.com")) == "users_not_found"
    )
    assert slack_error(lambda: client.usergroups_users_list(usergroup="SNONE")) == "no_such_subteam"


def test_conversations_info_says_whether_the_bot_is_in_a_channel(double, client):
    double.leave("COUTSIDE")
    double.leave("GPRIVATE")
    double.unknown_channels.add("CGONE")
    channel = client.conversations_info(channel="CNOTICES")["channel"]
    assert (channel["id"], channel["is_member"], channel["is_archived"]) == (
        "CNOTICES",
        True,
        False,
    )
    assert client.conversations_info(channel="COUTSIDE")["channel"]["is_member"] is False
    assert slack_error(lambda: client.conversations_info(channel="CGONE")) == "channel_not_found"
    # A private channel the bot is not in is hidden from it, as if it did not exist.
    assert slack_error(lambda: client.conversations_info(channel="GPRIVATE")) == (
        "channel_not_found"
    )


def test_every_answer_names_the_tokens_scopes(double, client):
    scopes = client.auth_test().headers["X-OAuth-Scopes"].split(",")
    assert "chat:write" in scopes and "users:read.email" in scopes
    double.scopes.discard("chat:write")
    assert "chat:write" not in client.auth_test().headers["X-OAuth-Scopes"].split(",")


@pytest.mark.parametrize(
    ("call", "needed"),
    [
        (lambda c: c.chat_postMessage(channel="CNOTICES", text="hi"), "chat:write"),
        (lambda c: c.users_lookupByEmail(email="ada@example.com"), "users:read.email"),
        (lambda c: c.usergroups_users_list(usergroup="SAPPROVERS"), "usergroups:read"),
        (lambda c: c.conversations_info(channel="CNOTICES"), "channels:read"),
        (lambda c: c.conversations_info(channel="GPRIVATE"), "groups:read"),
        (lambda c: c.conversations_history(channel="GPRIVATE"), "groups:history"),
    ],
)
def test_a_method_the_token_has_no_scope_for_is_refused_naming_the_scope(
    double, client, call, needed
):
    double.scopes.discard(needed)
    with pytest.raises(SlackApiError) as info:
        call(client)
    answer = info.value.response
    assert (answer["error"], answer["needed"]) == ("missing_scope", needed)
    assert needed not in answer["provided"].split(",") and "users:read" in answer["provided"]
    double.scopes.add(needed)
    assert call(client)["ok"]


def test_without_the_email_scope_users_info_leaves_the_email_out(double, client):
    assert client.users_info(user="UADA")["user"]["profile"]["email"] == "ada@example.com"
    double.scopes.discard("users:read.email")
    assert "email" not in client.users_info(user="UADA")["user"]["profile"]


def test_wrong_or_missing_token_is_refused(double):
    wrong = WebClient(token="xoxb-wrong", base_url=double.api_url)
    with pytest.raises(SlackApiError) as info:
        wrong.chat_postMessage(channel="C1", text="x")
    assert info.value.response.status_code == 200
    assert info.value.response["error"] == "invalid_auth"
    with requests.post(double.api_url + "auth.test", timeout=5) as resp:
        assert (resp.status_code, resp.json()) == (200, {"ok": False, "error": "not_authed"})
    assert double.messages("C1") == []


def test_unknown_method(client):
    with pytest.raises(SlackApiError) as info:
        client.api_call("chat.teleport", json={"channel": "C1"})
    assert info.value.response.status_code == 200
    assert info.value.response["error"] == "unknown_method"


def test_form_multipart_json_and_query_bodies(double, client):
    blocks = json.dumps(BLOCKS)
    client.api_call("chat.postMessage", params={"channel": "C1", "text": "form", "blocks": blocks})
    with requests.post(
        double.api_url + "chat.postMessage",
        timeout=5,
        files={
            "token": (None, TOKEN),
            "channel": (None, "C1"),
            "text": (None, "multi"),
            "blocks": (None, blocks),
        },
    ) as resp:
        assert resp.json()["ok"] is True
    with requests.post(
        double.api_url + "chat.postMessage",
        timeout=5,
        json={"channel": "C1", "text": "json", "blocks": BLOCKS},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        assert resp.json()["ok"] is True
    with requests.get(
        double.api_url + "users.info", timeout=5, params={"token": TOKEN, "user": "UGRACE"}
    ) as resp:
        assert resp.json()["user"]["name"] == "grace"

    posts = double.calls("chat.postMessage")
    assert [c.headers["Content-Type"].split(";")[0] for c in posts] == [
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/json",
    ]
    assert all(c.params["blocks"] == BLOCKS for c in posts)
    assert [m["blocks"] for m in double.messages("C1")] == [BLOCKS] * 3


def test_429_retry_after_is_honoured_by_retry_handler(double):
    client = WebClient(
        token=TOKEN,
        base_url=double.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    double.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    resp = client.chat_postMessage(channel="C1", text="after the limit")
    assert time.monotonic() - started >= 1.0
    assert resp["ok"] is True
    limited, posted = double.calls("chat.postMessage")
    assert (limited.status, posted.status) == (429, 200)
    assert limited.response == {"ok": False, "error": "ratelimited"}
    assert posted.at - limited.at >= 1.0
    assert [m["text"] for m in double.messages("C1")] == ["after the limit"]


def test_429_without_retry_handler_shows_retry_after(double, client):
    double.fail_next("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel="C1", text="x")
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "7"


def test_500_fault_raises_without_retry_and_changes_nothing(double, client):
    double.fail_next("chat.postMessage", status=500, count=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            client.chat_postMessage(channel="C1", text="lost")
        assert info.value.response.status_code == 500
        assert info.value.response["error"] == "internal_error"
    assert double.messages("C1") == []
    client.chat_postMessage(channel="C1", text="kept")
    assert [c.status for c in double.calls("chat.postMessage")] == [500, 500, 200]
    assert [m["text"] for m in double.messages("C1")] == ["kept"]


def test_fault_with_custom_error(double, client):
    double.fail_next("users.info", status=200, error="account_inactive")
    assert slack_error(lambda: client.users_info(user="UADA")) == "account_inactive"
    assert client.users_info(user="UADA")["ok"] is True


def test_response_url_posts_are_recorded(double):
    url = double.response_url("click-1")
    assert url == f"http://127.0.0.1:{double.port}/response/click-1"
    resp = WebhookClient(url).send(text="Approved", replace_original=True)
    assert (resp.status_code, resp.body) == (200, "ok")
    call = double.wait_for("response_url")[0]
    assert call.path == "/response/click-1" and call.status == 200
    assert call.params == {"text": "Approved", "replace_original": True}
    with requests.post(url, data="not json", timeout=5) as bad:
        assert bad.status_code == 400
    double.fail_next("response_url", status=500)
    assert WebhookClient(url).send(text="x").status_code == 500
    assert [c.status for c in double.calls("response_url")] == [200, 400, 500]


def test_wait_for_waits_for_count_and_times_out(double, client):
    timer = threading.Timer(
        0.3, lambda: [client.chat_postMessage(channel="C1", text=t) for t in ("a", "b")]
    )
    timer.start()
    try:
        found = double.wait_for(
            "chat.postMessage", lambda c: c.params["channel"] == "C1", timeout=5, count=2
        )
    finally:
        timer.join()
    assert [c.params["text"] for c in found] == ["a", "b"]
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"views\.open.*chat\.postMessage"):
        double.wait_for("views.open", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2


def test_subscribe_and_clear(double, client):
    events = double.subscribe()
    client.auth_test()
    assert events.get(timeout=2).method == "auth.test"
    double.unsubscribe(events)
    double.clear()
    client.auth_test()
    assert events.empty()
    assert [c.method for c in double.calls()] == ["auth.test"]


def test_set_delay_stalls_until_undone(double):
    impatient = WebClient(token=TOKEN, base_url=double.api_url, timeout=1)
    double.set_delay("auth.test", 5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        impatient.auth_test()
    assert time.monotonic() - started < 3
    double.set_delay("auth.test", 0)
    assert impatient.auth_test()["ok"] is True


def test_stop_frees_the_port():
    double = SlackDouble(token=TOKEN).start()
    port, url = double.port, double.api_url
    double.set_delay("auth.test", 30)  # a stalled request must not hold stop() up
    answers: list[object] = []
    stalled = threading.Thread(target=lambda: answers.append(post_json(url + "auth.test")))
    stalled.start()
    time.sleep(0.3)
    started = time.monotonic()
    double.stop()
    stalled.join()
    assert time.monotonic() - started < 5
    assert answers == [{"ok": False, "error": "not_authed"}]
    with pytest.raises(requests.ConnectionError):
        requests.post(url + "auth.test", timeout=2)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    with SlackDouble(token=TOKEN, port=port) as again:
        assert again.api_url == url
        assert WebClient(token=TOKEN, base_url=again.api_url).auth_test()["ok"] is True


# -- Socket Mode, the Home tab and the per-channel pace ----------------------------------------


def socket_client(double, app_token: str = "xapp-test") -> SocketModeClient:
    """Connect slack_sdk's own Socket Mode client; it acks each envelope with {"seen": type}."""
    client = SocketModeClient(app_token=app_token, web_client=WebClient(base_url=double.api_url))

    def ack(client: SocketModeClient, req: SocketModeRequest) -> None:
        payload = None if req.type == "events_api" else {"seen": req.type}
        client.send_socket_mode_response(SocketModeResponse(req.envelope_id, payload))

    client.socket_mode_request_listeners.append(ack)
    client.connect()
    return client


def test_apps_connections_open_takes_only_the_app_token(double):
    app = WebClient(base_url=double.api_url)
    url = app.apps_connections_open(app_token="xapp-test")["url"]
    assert url.startswith(f"ws://127.0.0.1:{double.socket.port}/link/?ticket=")
    assert slack_error(lambda: app.apps_connections_open(app_token=TOKEN)) == (
        "not_allowed_token_type"
    )
    assert slack_error(lambda: app.apps_connections_open(app_token="xapp-other")) == (
        "invalid_auth"
    )
    as_app = WebClient(token="xapp-test", base_url=double.api_url)
    assert slack_error(lambda: as_app.chat_postMessage(channel="C1", text="x")) == (
        "not_allowed_token_type"
    )


def test_envelopes_are_pushed_over_the_websocket_and_acks_recorded(double):
    client = socket_client(double)
    try:
        assert double.socket.wait_connected("xapp-test", timeout=5)
        pushed = [
            double.socket.push("interactive", {"type": "block_actions"}),
            double.socket.push("slash_commands", {"command": "/registry", "text": "help"}),
            double.socket.push("events_api", {"event_id": "Ev1"}, retry_attempt=2),
        ]
        acked = [double.socket.wait_for_ack(e.envelope_id, timeout=3) for e in pushed]
        assert [a.response for a in acked] == [
            {"seen": "interactive"},
            {"seen": "slash_commands"},
            None,
        ]
        assert all(0 <= a.ack_seconds < 3 for a in acked)
        assert [e.envelope_id for e in double.socket.envelopes()] == [e.envelope_id for e in pushed]
        assert double.socket.envelopes()[-1].retry_attempt == 2
    finally:
        client.close()
    assert wait_until_closed(double)
    with pytest.raises(NotConnected):
        double.socket.push("interactive", {"type": "block_actions"})
    with pytest.raises(ValueError):
        double.socket.push("hello", {})


def test_an_unacknowledged_envelope_times_out(double):
    with connect(double.socket.open_url("xapp-test")) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["type"] == "hello" and hello["connection_info"]["app_id"] == double.app_id
        envelope = double.socket.push("interactive", {"type": "block_actions"})
        sent = json.loads(ws.recv(timeout=5))
        assert sent == {
            "envelope_id": envelope.envelope_id,
            "type": "interactive",
            "payload": {"type": "block_actions"},
            "accepts_response_payload": True,
        }
        assert double.socket.wait_for_ack(envelope.envelope_id, timeout=0.3) is None
        ws.send(json.dumps({"envelope_id": envelope.envelope_id}))
        assert double.socket.wait_for_ack(envelope.envelope_id, timeout=3).response is None


def test_a_ticket_works_once_and_an_unknown_one_is_refused(double):
    url = double.socket.open_url("xapp-test")
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    for bad in (url, url.split("?")[0] + "?ticket=forged"):
        with connect(bad) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == BAD_TICKET


@pytest.mark.slack_refuses("invalid_arguments")
def test_views_publish_keeps_each_users_home_tab(double, client):
    home = {"type": "home", "blocks": BLOCKS}
    first = client.views_publish(user_id="UADA", view=home)["view"]
    again = client.views_publish(user_id="UADA", view=home, hash=first["hash"])["view"]
    assert again["id"] == first["id"] and double.home("UADA")["blocks"] == BLOCKS
    assert double.home("UGRACE") is None
    assert slack_error(lambda: client.views_publish(user_id="UADA", view=home, hash="old")) == (
        "hash_conflict"
    )
    assert slack_error(lambda: client.views_publish(user_id="UNOBODY", view=home)) == (
        "user_not_found"
    )
    assert slack_error(lambda: client.views_publish(user_id="UADA", view=MODAL)) == (
        "invalid_arguments"
    )
    too_many = {"type": "home", "blocks": BLOCKS * 101}
    assert slack_error(lambda: client.views_publish(user_id="UADA", view=too_many)) == (
        "invalid_arguments"
    )


def test_the_pace_answers_429_with_retry_after_per_channel(double, client):
    double.set_pace("C1", 1.0)
    client.chat_postMessage(channel="C1", text="first")
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel="C1", text="too soon")
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "1"
    client.chat_postMessage(channel="C2", text="another channel is not held up")
    time.sleep(1.0)
    client.chat_postMessage(channel="C1", text="a second later")
    double.set_pace("C1", None)
    client.chat_postMessage(channel="C1", text="no limit now")
    assert [m["text"] for m in double.messages("C1")] == ["first", "a second later", "no limit now"]


def wait_until_closed(double, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while double.socket.links() and time.monotonic() < deadline:
        time.sleep(0.05)
    return double.socket.links() == 0


# -- Slack's limits: exactly at the limit is taken, one over is refused -----------------------


def section(text: str = "s", **extra) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(n: int = 0, *, text: str = "Go", value: str = "v", action_id: str = "") -> dict:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id or f"act_{n}",
        "value": value,
    }


def mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def modal(blocks=()) -> dict:
    return {"type": "modal", "title": {"type": "plain_text", "text": "Why"}, "blocks": [*blocks]}


def reason_input(label: str) -> dict:
    element = {"type": "plain_text_input", "action_id": "reason_input"}
    return {"type": "input", "block_id": "reason", "label": plain(label), "element": element}


def plain(text: str) -> dict:
    return {"type": "plain_text", "text": text}


# Each limit: a message (or view) holding n of something, and the largest n Slack takes.
MESSAGE_LIMITS = {
    "blocks in a message": (lambda n: {"blocks": [section()] * n}, 50),
    "section text": (lambda n: {"blocks": [section("x" * n)]}, 3000),
    "header text": (lambda n: {"blocks": [{"type": "header", "text": plain("h" * n)}]}, 150),
    "section fields": (
        lambda n: {"blocks": [{"type": "section", "fields": [mrkdwn("f")] * n}]},
        10,
    ),
    "field text": (
        lambda n: {"blocks": [{"type": "section", "fields": [mrkdwn("f" * n)]}]},
        2000,
    ),
    "context elements": (
        lambda n: {"blocks": [{"type": "context", "elements": [mrkdwn("c")] * n}]},
        10,
    ),
    "actions elements": (
        lambda n: {"blocks": [{"type": "actions", "elements": [button(i) for i in range(n)]}]},
        25,
    ),
    "button text": (
        lambda n: {"blocks": [{"type": "actions", "elements": [button(text="b" * n)]}]},
        75,
    ),
    "button value": (
        lambda n: {"blocks": [{"type": "actions", "elements": [button(value="v" * n)]}]},
        2000,
    ),
    "block_id": (lambda n: {"blocks": [section(block_id="b" * n)]}, 255),
    "action_id": (
        lambda n: {"blocks": [{"type": "actions", "elements": [button(action_id="a" * n)]}]},
        255,
    ),
}
VIEW_LIMITS = {
    "blocks in a view": (lambda n: modal([section()] * n), 100),
    "section text in a view": (lambda n: modal([section("x" * n)]), 3000),
    "modal title": (lambda n: {**modal(), "title": plain("t" * n)}, 24),
    "modal submit": (lambda n: {**modal([reason_input("Why?")]), "submit": plain("s" * n)}, 24),
    "modal close": (lambda n: {**modal(), "close": plain("c" * n)}, 24),
    "private_metadata": (lambda n: {**modal(), "private_metadata": "m" * n}, 3000),
    "input label": (lambda n: modal([reason_input("l" * n)]), 2000),
}
MESSAGE_METHODS = ("chat.postMessage", "chat.update", "chat.postEphemeral", "response_url")
VIEW_METHODS = ("views.open", "views.push", "views.update", "views.publish")


def send(double: SlackDouble, method: str, content: dict) -> tuple[int, str]:
    """Send `content` (message fields, or a view) with `method`; return (HTTP status, error)."""
    if method == "response_url":
        with requests.post(
            double.response_url("r1"), json={"text": "t", **content}, timeout=5
        ) as r:
            return r.status_code, "" if r.text == "ok" else r.text
    params: dict = {"channel": "C1", "text": "fallback", **content}
    if method == "chat.update":
        params["ts"] = api(double, "chat.postMessage", {"channel": "C1", "text": "first"})[1]["ts"]
    elif method == "chat.postEphemeral":
        params["user"] = "UADA"
    elif method.startswith("views."):
        params = {"trigger_id": "1.2.3", "view": content}
    if method == "views.update":
        params["view_id"] = api(double, "views.open", {"trigger_id": "t", "view": modal()})[1][
            "view"
        ]["id"]
    elif method == "views.publish":
        home = {k: v for k, v in content.items() if k not in ("title", "submit", "close")}
        params = {"user_id": "UADA", "view": {**home, "type": "home"}}
    status, body = api(double, method, params)
    return status, "" if body["ok"] else body["error"]


def api(double: SlackDouble, method: str, params: dict) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with requests.post(double.api_url + method, json=params, headers=headers, timeout=5) as resp:
        return resp.status_code, resp.json()


@pytest.mark.slack_refuses("invalid_blocks")
@pytest.mark.parametrize("method", MESSAGE_METHODS)
@pytest.mark.parametrize("limit", MESSAGE_LIMITS)
def test_a_message_at_each_limit_is_taken_and_one_over_is_refused(double, method, limit):
    build, most = MESSAGE_LIMITS[limit]
    assert send(double, method, build(most)) == (200, "")
    refused = 400 if method == "response_url" else 200  # the Web API says ok=false
    assert send(double, method, build(most + 1)) == (refused, "invalid_blocks")
    last = double.calls(method)[-1]
    assert (last.status, last.error, last.refused_content) == (refused, "invalid_blocks", True)


@pytest.mark.slack_refuses("invalid_arguments")
@pytest.mark.parametrize(
    ("limit", "method"),
    [
        (limit, method)
        for limit in VIEW_LIMITS
        for method in VIEW_METHODS
        # A Home tab has no title, submit or close.
        if not (method == "views.publish" and limit.startswith("modal"))
    ],
)
def test_a_view_at_each_limit_is_taken_and_one_over_is_refused(double, limit, method):
    build, most = VIEW_LIMITS[limit]
    assert send(double, method, build(most)) == (200, "")
    assert send(double, method, build(most + 1)) == (200, "invalid_arguments")
    assert double.calls(method)[-1].refused_content


@pytest.mark.slack_refuses("msg_too_long")
@pytest.mark.parametrize("method", MESSAGE_METHODS)
def test_a_text_over_40000_characters_is_msg_too_long(double, method):
    assert send(double, method, {"text": "x" * 40_000}) == (200, "")
    refused = 400 if method == "response_url" else 200
    assert send(double, method, {"text": "x" * 40_001}) == (refused, "msg_too_long")


@pytest.mark.slack_refuses("invalid_blocks")
def test_a_refusal_says_where_stores_nothing_and_is_heard(double, client):
    heard = []
    undo = watch_refusals(lambda d, call: heard.append((d, call.method)))
    try:
        resp = api(double, "chat.postMessage", {"channel": "C1", "blocks": [section("x" * 3001)]})
    finally:
        undo()
    assert resp[1]["error"] == "invalid_blocks"
    assert resp[1]["errors"] == ["/blocks/0/text/text: 3001 characters, more than 3000"]
    assert resp[1]["response_metadata"]["messages"][0].startswith("[ERROR] /blocks/0/text")
    assert heard == [(double, "chat.postMessage")]
    assert double.messages("C1") == []
    twice = [section(block_id="b"), section(block_id="b")]
    assert slack_error(lambda: client.chat_postMessage(channel="C1", text="t", blocks=twice)) == (
        "invalid_blocks"
    )
    no_text = [{"type": "section", "text": mrkdwn("")}]
    assert slack_error(lambda: client.chat_postMessage(channel="C1", text="t", blocks=no_text)) == (
        "invalid_blocks"
    )


def test_posts_where_the_bot_is_no_member_are_not_in_channel(double, client):
    client.chat_postMessage(channel="C1", text="in every channel by default")
    double.leave("C1")
    assert slack_error(lambda: client.chat_postMessage(channel="C1", text="x")) == "not_in_channel"
    assert (
        slack_error(lambda: client.chat_postEphemeral(channel="C1", user="UADA", text="x"))
        == "not_in_channel"
    )
    assert slack_error(lambda: client.conversations_history(channel="C1")) == "not_in_channel"
    assert (
        slack_error(lambda: client.api_call("chat.postMessage", json={"text": "x"}))
        == "channel_not_found"
    )
    assert [c.status for c in double.calls("chat.postMessage")] == [200, 200, 200]
    double.join("C1")
    client.chat_postMessage(channel="C1", text="back")
    assert [m["text"] for m in double.messages("C1")] == ["in every channel by default", "back"]
    with SlackDouble(token=TOKEN, not_in=["CPRIVATE"]) as other:
        outside = WebClient(token=TOKEN, base_url=other.api_url)
        assert slack_error(lambda: outside.chat_postMessage(channel="CPRIVATE", text="x")) == (
            "not_in_channel"
        )
        assert outside.chat_postMessage(channel="COTHER", text="x")["ok"] is True
