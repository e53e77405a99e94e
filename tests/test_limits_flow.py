"""Everything long fits Slack's limits end to end: what is cut says so and links to MLflow."""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import quote

import pytest

from tests.support import (
    answered,
    approve_click,
    log_model,
    slash,
    stage_of,
    updates_of,
    wait_for,
)

pytestmark = pytest.mark.slow

NAME_LENGTH = 140  # a model name may be 255 characters: [A-Za-z0-9][A-Za-z0-9_.-]{0,254}
METRICS = 60
DESCRIPTION = ("Tom & Jerry <b>bold</b> & <@U0 ping> && >> R&D; " * 120)[:5000]
# An `&` that does not start one of the three entities escape() writes: a cut entity.
BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")
MORE = re.compile(r"… and (\d+) more")


def long_name() -> str:
    """Return a model name no other test uses, exactly NAME_LENGTH characters long."""
    return (f"m-{uuid.uuid4().hex}-" + "very.long_model-name" * 10)[:NAME_LENGTH]


def texts(blocks: list[dict]) -> list[str]:
    """Return every text a message's blocks show (section texts and fields, headers, context)."""
    found = []
    for block in blocks:
        found += [block[k]["text"] for k in ("text",) if isinstance(block.get(k), dict)]
        found += [f["text"] for f in block.get("fields", [])]
        found += [e["text"] for e in block.get("elements", []) if e.get("type") == "mrkdwn"]
    return found


def posted_notice(slack, model: str):
    """Wait for the notice's chat.postMessage, whatever Slack answered; return the call."""
    return wait_for(
        lambda: [
            c
            for c in slack.calls("chat.postMessage")
            if c.params.get("text", "").startswith(f"{model} v") and not c.params.get("thread_ts")
        ],
        "the notice posted",
    )[0]


def test_a_notice_for_a_long_name_many_metrics_and_a_long_description_fits(
    loop, slack, mlflow_server
):
    model = long_name()
    metrics = {f"metric_{i:02d}_holdout_{'auc' * 3}": 0.5 + i / 1000 for i in range(METRICS)}
    run_id = log_model(mlflow_server, constant=1.0)
    body = {
        "model_name": model,
        "run_id": run_id,
        "requested_by": "UREQUESTER",
        "metrics": metrics,
        "description": DESCRIPTION,
    }
    assert loop.post_training(body).status_code == 202
    notice = posted_notice(slack, model)
    assert (notice.status, notice.error) == (200, ""), notice.response
    blocks = notice.params["blocks"]
    version_link = f"/#/models/{quote(model, safe='')}/versions/1"

    header = next(b for b in blocks if b["type"] == "header")["text"]["text"]
    assert len(header) <= 150 and header.endswith("…")
    shown = texts(blocks)
    assert not [t for t in shown if BROKEN_ENTITY.search(t)]
    description = next(t for t in shown if "Tom &amp; Jerry" in t)
    assert len(description) <= 3000 and "…" in description and version_link in description
    table = next(t for t in shown if t.startswith("*Metrics*"))
    cut = MORE.search(table)
    assert len(table) <= 3000 and cut and 0 < int(cut.group(1)) < METRICS
    assert f"/runs/{run_id}" in table  # where every metric can be read

    response_url = approve_click(loop, slack, model, "1", "UAPPROVER1", notice.response["ts"])
    wait_for(lambda: stage_of(mlflow_server, model, "1") == "Production", "v1 in Production")
    decided = wait_for(
        lambda: [
            u for u in updates_of(slack, notice.response["ts"]) if "Approved" in str(u.params)
        ],
        "the decided notice",
    )
    assert all((u.status, u.error) == (200, "") for u in updates_of(slack, notice.response["ts"]))
    redrawn = decided[-1].params["blocks"]
    assert "actions" not in [b["type"] for b in redrawn]
    assert version_link in next(t for t in texts(redrawn) if "Tom &amp; Jerry" in t)
    assert MORE.search(next(t for t in texts(redrawn) if t.startswith("*Metrics*")))

    status = ask(loop, slack, f"status {model}")
    assert f"*{model}*" in status and "Production: v1" in status
    history = ask(loop, slack, f"history {model} 50")
    assert "v1 promoted" in history
    mine = [c for c in slack.calls() if model in json.dumps(c.params)]
    assert not [c for c in mine if c.refused_content], [c.response for c in mine]
    assert response_url


def ask(loop, slack, text: str) -> str:
    """Send a slash command as an outsider; return what its response URL was told."""
    resp, url = slash(loop.bot_url, slack, text, user="UOUTSIDER")
    assert resp.status_code == 200
    [answer] = answered(slack, url)
    posted = [c for c in slack.calls("response_url") if c.path in url]
    assert all(c.status == 200 for c in posted), [c.response for c in posted]
    return answer["text"]
