"""The served model follows the registry: approve and roll back in Slack, no restart."""

from __future__ import annotations

import time

import mlflow
import pytest
import requests

from registry.views.notice import APPROVE_ACTION, button_value
from tests.support import (
    SERVICES,
    answered,
    click,
    confirm_with_reason,
    prediction_api,
    served_version,
    slash,
    stage,
    stage_of,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def served(stacks, model_name):
    """The prediction API for `model_name` on the default stack with the bot."""
    stack = stacks.get(services=SERVICES)
    with prediction_api(stack, model_name) as url:
        yield stack, url


def seconds_until(url: str, version: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    wait_for(lambda: served_version(url) == version, f"serving v{version}", timeout=timeout)
    return time.monotonic() - started


def test_approve_and_rollback_switch_the_served_model(served, slack, mlflow_server, model_name):
    stack, url = served
    v1, ts1 = stage(stack, slack, mlflow_server, model_name, constant=1.0)
    click(
        stack.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=button_value(model_name, v1),
        message_ts=ts1,
    )
    wait_for(lambda: stage_of(mlflow_server, model_name, v1) == "Production", "v1 Production")
    # The first load also imports the model's flavour (about 11 s once on 2 busy cores): not
    # timed, only waited for.
    seconds_until(url, v1, timeout=60)

    v2, ts2 = stage(stack, slack, mlflow_server, model_name, constant=2.0)
    click(
        stack.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=button_value(model_name, v2),
        message_ts=ts2,
    )
    wait_for(lambda: stage_of(mlflow_server, model_name, v2) == "Production", "v2 Production")
    assert seconds_until(url, v2) < 2.0
    answer = requests.post(f"{url}/predict", json={"inputs": [[0.0], [1.0]]}, timeout=5).json()
    assert answer == {"version": v2, "predictions": [2.0, 2.0]}

    _, reply = slash(stack.bot_url, slack, f"rollback {model_name}", user="UAPPROVER2")
    confirm_with_reason(stack, slack, answered(slack, reply)[0], "UAPPROVER2")
    wait_for(lambda: stage_of(mlflow_server, model_name, v1) == "Production", "rollback")
    assert seconds_until(url, v1) < 2.0
    answer = requests.post(f"{url}/predict", json={"inputs": [[0.0], [5.0]]}, timeout=5).json()
    v1_model = mlflow.pyfunc.load_model(f"models:/{model_name}/{v1}")
    assert answer == {"version": v1, "predictions": list(v1_model.predict([[0.0], [5.0]]))}
