"""The bot's HTTP door under gunicorn, as deployed: every request signed, no body too big.

An app-level token in the shared settings once switched signature checks off for the HTTP
endpoint too; here it is set, and the door must still refuse what Slack did not sign.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import redis
import requests

from devkit import slack_requests
from devkit.stack import stop, url_answers, wait_until
from registry.rules.events import MAX_BODY_BYTES
from registry.views.notice import APPROVE_ACTION, button_value
from tests.support import SLACK_SIGNING_SECRET, Stack, click_payload, interaction, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def door(stacks, slack) -> Iterator[Stack]:
    """The bot alone under gunicorn (two workers), with SLACK_APP_TOKEN in its settings."""
    stack = stacks.make(SLACK_APP_TOKEN=slack.app_token)
    port = stack.env["BOT_PORT"]
    command = ["-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    with open(stack.workdir / "bot.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *command, "bot:create_wsgi_app()"],
            env=stack.env,
            cwd=stack.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: url_answers(f"{stack.bot_url}/healthz", status=200), 60, "gunicorn bot")
        yield stack
    finally:
        stop(proc)


def queued(stack: Stack) -> int:
    """Count the tasks the door queued (no worker runs here to take them)."""
    return redis.Redis.from_url(stack.redis_url).llen(stack.queue)


def approve_payload(slack) -> dict:
    payload, _ = click_payload(
        slack,
        user="UAPPROVER1",  # an approver: only the signature stands between them and a click
        action_id=APPROVE_ACTION,
        value=button_value("door-model", "1"),
        message_ts="1.000001",
    )
    return payload


def unsigned(stack: Stack, body: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{stack.bot_url}/slack/events", data=body.encode(), headers=headers, timeout=10
    )


def test_unsigned_and_wrongly_signed_clicks_are_refused_with_an_app_token_set(door, slack):
    body = urlencode({"payload": json.dumps(approve_payload(slack))})
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert unsigned(door, body, form).status_code == 401
    forged = slack_requests.signed_headers(
        body, "not-the-signing-secret", content_type=form["content-type"]
    )
    assert unsigned(door, body, forged).status_code == 401
    stale = slack_requests.signed_headers(
        body, SLACK_SIGNING_SECRET, at=time.time() - 600, content_type=form["content-type"]
    )
    assert unsigned(door, body, stale).status_code == 401
    assert queued(door) == 0
    # The same click signed as Slack signs it goes through: the refusals were the signature's.
    assert interaction(door.bot_url, approve_payload(slack)).status_code == 200
    wait_for(lambda: queued(door) == 1, "the signed click queued (after its ack)")


def test_a_body_over_a_mebibyte_is_refused_before_it_is_read(door):
    declared = 20 * 1024 * 1024
    head = (
        "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    port, before = int(door.env["BOT_PORT"]), queued(door)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"payload=" + b"x" * 4096)  # the rest never comes
        sock.settimeout(5)  # a server that waits for the other 20 MiB never answers
        answer = sock.recv(4096)
    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 413 REQUEST ENTITY TOO LARGE", answer[:200]
    assert declared > MAX_BODY_BYTES and queued(door) == before
