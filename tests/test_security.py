"""Published signature test vectors, replay windows, limits, and no secret in any log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook

from registry.rules.events import SignatureError, verify_standard_webhook
from registry.views.notice import APPROVE_ACTION, button_value
from tests.support import (
    ALERTMANAGER_TOKEN,
    CANARY_SECRET,
    MLFLOW_SECRET,
    SERVICES,
    SLACK_SIGNING_SECRET,
    TOKEN,
    TRAINING_SECRET,
    answered,
    click,
    interaction,
    signed_headers,
    slash,
    stage,
    stamp,
)

# The Standard Webhooks reference vector (its libraries' own tests use it).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID, SW_TS, SW_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# Slack's documented example of request signing.
SLACK_SECRET, SLACK_TS = "8f742231b10e8888abcd99yyyzzz85a5", "1531420618"
SLACK_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmib"
    "IGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


class FrozenClock:
    def __init__(self, now: float):
        self._now = now

    def now(self) -> float:
        return self._now


def test_standard_webhooks_vector():
    when = datetime.fromtimestamp(SW_TS, UTC)
    assert Webhook(SW_SECRET).sign(SW_ID, when, SW_BODY) == SW_SIGNATURE
    ours = signed_headers(SW_BODY, secret=SW_SECRET, msg_id=SW_ID, at=SW_TS)
    assert ours["webhook-signature"] == SW_SIGNATURE
    # Our verifier takes the vector's signature and refuses it once it is stale.
    with pytest.raises(SignatureError, match="too old"):
        verify_standard_webhook(ours, SW_BODY.encode(), [SW_SECRET])


def test_slack_signing_vector():
    verifier = SignatureVerifier(SLACK_SECRET, clock=FrozenClock(int(SLACK_TS) + 10))
    assert verifier.generate_signature(timestamp=SLACK_TS, body=SLACK_BODY) == SLACK_SIGNATURE
    assert verifier.is_valid(SLACK_BODY, SLACK_TS, SLACK_SIGNATURE)
    assert not verifier.is_valid(SLACK_BODY + "x", SLACK_TS, SLACK_SIGNATURE)
    late = SignatureVerifier(SLACK_SECRET, clock=FrozenClock(int(SLACK_TS) + 301))
    assert not late.is_valid(SLACK_BODY, SLACK_TS, SLACK_SIGNATURE)


# Over HTTP the stamps keep 10 s from the window's edge, for a request a busy machine is slow
# to deliver; tests/rules/test_events.py checks the edge itself to the second.
@pytest.mark.slow
@pytest.mark.parametrize(("offset", "status"), [(-310, 401), (-290, 202), (290, 202), (310, 401)])
def test_training_timestamps_through_http(stacks, offset, status):
    stack = stacks.get(services=("webhooks",), FUZZ="1")
    body = json.dumps({"model_name": "window", "run_id": "r1"}).encode()
    at = stamp(offset, within=status == 202)
    assert stack.post_training(body, headers=signed_headers(body, at=at)).status_code == status


@pytest.mark.slow
def test_a_replayed_slack_request_outside_the_window_is_refused(stacks):
    loop = stacks.get(services=("worker", "webhooks", "bot"))
    payload = {
        "type": "block_actions",
        "user": {"id": "UAPPROVER1"},
        "team": {"id": "T0TEST"},
        "actions": [{"action_id": "approve_version", "value": "{}"}],
    }
    assert interaction(loop.bot_url, payload, at=stamp(-310, within=False)).status_code == 401
    assert interaction(loop.bot_url, payload, at=stamp(310, within=False)).status_code == 401


@pytest.mark.slow
def test_bodies_and_headers_at_and_over_the_limits(stacks):
    stack = stacks.get(services=("webhooks",), FUZZ="1")
    base = {"model_name": "limits", "run_id": "r1", "description": ""}
    empty = len(json.dumps(base).encode())
    at_limit = json.dumps({**base, "description": "x" * (1024 * 1024 - empty)}).encode()
    assert len(at_limit) == 1024 * 1024
    resp = stack.post_training(at_limit, headers=signed_headers(at_limit))
    assert resp.status_code == 400 and "description" in json.dumps(
        resp.json()
    )  # read, then refused
    over = at_limit + b" "
    assert stack.post_training(over, headers=signed_headers(over)).status_code == 413
    long_id = "msg_" + "a" * 300
    body = json.dumps(base).encode()
    resp = stack.post_training(body, headers=signed_headers(body, msg_id=long_id))
    assert resp.status_code == 401 and "longer than 256" in json.dumps(resp.json())
    huge_header = {**signed_headers(body), "x-padding": "p" * 70000}
    assert requests.post(
        f"{stack.webhooks_url}/hooks/training", data=body, headers=huge_header, timeout=10
    ).status_code in (400, 431)


SECRETS = [
    TOKEN,
    SLACK_SIGNING_SECRET,
    TRAINING_SECRET,
    TRAINING_SECRET.removeprefix("whsec_"),
    CANARY_SECRET.removeprefix("whsec_"),
    MLFLOW_SECRET,
    ALERTMANAGER_TOKEN,
    "xapp-test",  # the Slack double's app-level token, which Socket Mode stacks use
]


@pytest.mark.slow
def test_zz_no_log_carries_a_secret_or_token(stacks, slack, mlflow_server, model_name):
    """Every service log the session wrote: conftest runs this test last of all.

    It drives the full loop once first (reusing the running stack in a full run), so that
    run alone it still reads logs of every service, written through every door.
    """
    loop = stacks.get(services=SERVICES)
    forged = b'{"model_name": "forged", "run_id": "r0"}'
    assert (
        loop.post_training(forged, headers=signed_headers(forged, secret=SW_SECRET)).status_code
        == 401
    )
    version, ts = stage(loop, slack, mlflow_server, model_name)
    resp, url = click(
        loop.bot_url,
        slack,
        user="UOUTSIDER",
        action_id=APPROVE_ACTION,
        value=button_value(model_name, version),
        message_ts=ts,
    )
    assert resp.status_code == 200
    assert "not one" in answered(slack, url)[0]["text"]
    _, url = slash(loop.bot_url, slack, f"status {model_name}", user="UOUTSIDER")
    assert f"Staging: v{version}" in answered(slack, url)[0]["text"]

    # Every stack the session made, started through `get` or `make`, beat and API logs too.
    logs = sorted(Path(stacks.workdir).rglob("*.log"))
    written = {(p.parent.name, p.stem) for p in logs}
    assert {(Path(loop.workdir).name, s) for s in SERVICES} <= written, written
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"{path.name} of {path.parent.name} logs a secret"
