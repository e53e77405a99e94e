"""The gate's pure parts (SPEC 14): its rules and wording, its settings at start, and the
header provider's choice of where registry-bot's token goes. No server: see test_gate."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gate.rules import Ask, Standing, judge, refusal
from registry.rules.policy import parse_policy
from registry.rules.settings import Settings, SettingsError

TOKEN = "unit-gate-token-0123456789abcdef"
POLICY = """
defaults:
  protect_production: alert
models:
  churn:
    channel: C0CHURN
  free:
    protect_production: off
"""
SETTINGS = Settings(mlflow_tracking_uri="", slack_channel="CNOTICES", policy=parse_policy(POLICY))
NONE_PROTECTED = Settings(
    mlflow_tracking_uri="", policy=parse_policy("defaults:\n  protect_production: off\n")
)


def never(model: str, version: str) -> Standing | None:
    raise AssertionError("no lookup needed")


def staging(model: str, version: str) -> Standing:
    return Standing("Staging", version=str(int(version)))


def missing(model: str, version: str) -> None:
    return None


def in_production(model: str, version: str) -> Standing:
    return Standing("Production", version=str(int(version)))


def no_model(name: str):
    return None


# --- finding 9: what a refusal says ----------------------------------------------------------


def test_a_filed_request_says_an_approver_decides_it_and_names_the_resolved_version():
    ask = Ask("stage", "churn", "01", stage="Production")
    verdict = judge(ask, SETTINGS, staging, no_model)
    assert verdict.request == "1"
    text = refusal(SETTINGS, ask, verdict, filed=True)
    assert "version 1 was not moved" in text and "01" not in text
    assert "is filed: an approver decides it in Slack (channel C0CHURN)" in text
    assert "approve it" not in text and "#C0CHURN" not in text


def test_no_request_is_filed_for_a_missing_version_or_one_already_in_production():
    for lookup, why in ((missing, "churn has no version 999"), (in_production, "already in")):
        ask = Ask("stage", "churn", "999", stage="Production")
        verdict = judge(ask, SETTINGS, lookup, no_model)
        assert verdict.refuse and not verdict.request
        text = refusal(SETTINGS, ask, verdict, filed=None)
        assert why in text and "Nothing was filed" in text and "is filed" not in text


def test_no_request_is_filed_for_a_version_already_decided_or_archived():
    """The worker files nothing for such a version (a thread note at most): the person asking
    is not told "filed" for a request nobody will decide."""
    for standing, why in (
        (Standing("Archived", version="3"), "version 3 was decided already (archived)"),
        (Standing("Staging", version="3", decision="rejected"), "(rejected)"),
        (Standing("None", version="3", stage_tag="archived"), "(archived)"),
    ):
        ask = Ask("stage", "churn", "3", stage="Production")
        verdict = judge(ask, SETTINGS, lambda m, v, s=standing: s, no_model)
        assert verdict.refuse and not verdict.request
        text = refusal(SETTINGS, ask, verdict, filed=None)
        assert why in text and "roll back to it" in text and "is filed" not in text


def test_a_refusal_to_take_a_version_out_of_production_names_it_as_resolved():
    ask = Ask("delete_version", "churn", "001")
    text = refusal(SETTINGS, ask, judge(ask, SETTINGS, in_production, no_model), filed=None)
    assert "deleting version 1 (in Production) is refused" in text
    assert "ask an approver in Slack (channel C0CHURN)" in text


def test_delete_and_rename_say_to_ask_an_approver():
    for ask in (Ask("delete_model", "churn"), Ask("rename", "churn", new_name="x")):
        text = refusal(SETTINGS, ask, judge(ask, SETTINGS, never, no_model), filed=None)
        assert "ask an approver in Slack (channel C0CHURN)" in text
        assert "approve it" not in text and "filed" not in text


# --- finding 10: prompts are not models registry-bot governs -----------------------------------


def prompt(name: str):
    from gate.rules import Found

    return Found(name=name, prompt=True)


def test_a_prompt_is_left_alone_but_a_model_cannot_be_made_one():
    ask = Ask("set_alias", "churn", "1", alias="production")
    assert not judge(ask, SETTINGS, never, prompt).refuse
    assert not judge(Ask("delete_model", "churn"), SETTINGS, never, prompt).refuse
    mark = Ask("tags", "churn", tag_keys=("mlflow.prompt.is_prompt",), model_tag=True)
    assert judge(mark, SETTINGS, never, no_model).refuse
    assert judge(mark, SETTINGS, never, prompt).refuse  # nor unmade one


# --- finding 12: a version registry-bot is promoting counts as Production ---------------------


def test_a_version_approved_and_being_promoted_is_not_a_persons_to_delete():
    approved = lambda model, version: Standing("Staging", version="2", decision="approved")  # noqa: E731
    assert judge(Ask("delete_version", "churn", "2"), SETTINGS, approved, no_model).refuse
    assert judge(Ask("stage", "churn", "2", stage="Archived"), SETTINGS, approved, no_model).refuse


# --- finding 13: the name as MLflow stores it --------------------------------------------------


def test_a_name_the_database_takes_for_a_protected_one_is_judged_as_that_one():
    from gate.rules import Found

    free_looking = Settings(
        mlflow_tracking_uri="",
        policy=parse_policy(
            "defaults:\n  protect_production: off\nmodels:\n  churn:\n"
            "    protect_production: alert\n"
        ),
    )
    stored = lambda name: Found(name="churn")  # noqa: E731  a MySQL collation: "chürn " = "churn"
    assert judge(Ask("delete_model", "chürn "), free_looking, never, stored).refuse
    assert not judge(Ask("delete_model", "chürn "), free_looking, never, no_model).refuse


# --- finding 5: MLflow's webhooks -------------------------------------------------------------


def test_webhook_writes_are_refused_while_any_model_is_protected():
    ask = Ask("webhook", "")
    verdict = judge(ask, SETTINGS, never, no_model)
    assert verdict.refuse
    assert "webhooks" in refusal(SETTINGS, ask, verdict, filed=None)
    assert not judge(ask, NONE_PROTECTED, never, no_model).refuse


# --- findings 4 and 7: the gate's settings at start ------------------------------------------


def test_a_malformed_setting_other_than_the_policy_stops_the_gate_at_start(tmp_path):
    from gate.settings import GateSettings

    env = {"MLFLOW_GATE_TOKEN": TOKEN, "REDIS_URL": "http://:s3cretpw@redis:6379/0"}
    with pytest.raises(SettingsError):
        GateSettings(env, dotenv_path=str(tmp_path / "none"))
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("models: [not, a, mapping\n")
    # A policy problem does not stop it: it refuses every watched write until fixed.
    GateSettings({"MLFLOW_GATE_TOKEN": TOKEN, "POLICY_FILE": str(bad_policy)}, "none")


def test_the_gate_takes_its_token_out_of_the_server_processs_environment(tmp_path):
    probe = (
        "import os, subprocess, sys\n"
        "from gate.settings import GateSettings\n"
        "s = GateSettings()\n"
        "assert s.token == os.environ.get('EXPECTED'), 'token not read'\n"
        "child = subprocess.run([sys.executable, '-c', "
        '\'import os; print(os.environ.get("MLFLOW_GATE_TOKEN", ""))\'], '
        "capture_output=True, text=True, check=True)\n"
        "print(repr(child.stdout.strip()), 'MLFLOW_GATE_TOKEN' in os.environ)\n"
    )
    env = {**os.environ, "MLFLOW_GATE_TOKEN": TOKEN, "EXPECTED": TOKEN}
    env.pop("POLICY_FILE", None)
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "'' False"


# --- finding 4: the token goes only to the tracking server ------------------------------------


def headers_sent_to(url: str, tracking_uri: str) -> dict:
    """The headers MLflow's client would send on a request to `url`."""
    from mlflow.utils import rest_utils
    from mlflow.utils.rest_utils import MlflowHostCreds

    seen: dict = {}

    def capture(*args, **kwargs):
        seen.update(kwargs.get("headers") or {})
        raise RuntimeError("captured")

    os.environ.update({"MLFLOW_GATE_TOKEN": TOKEN, "MLFLOW_TRACKING_URI": tracking_uri})
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(rest_utils, "_get_http_response_with_retries", capture)
            with pytest.raises(Exception, match="captured"):
                rest_utils.http_request(MlflowHostCreds(url), "/api/2.0/x", "GET")
    finally:
        os.environ.pop("MLFLOW_GATE_TOKEN", None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return seen


def test_the_token_goes_to_the_tracking_server_and_to_no_other_host():
    from gate.rules import HEADER

    assert headers_sent_to("http://mlflow:5000", "http://mlflow:5000/")[HEADER] == TOKEN
    assert headers_sent_to("HTTP://MLflow:5000/x", "http://mlflow:5000")[HEADER] == TOKEN
    for elsewhere in (
        "http://evil.example:5000",
        "http://mlflow:5001",
        "https://mlflow:5000",
        "http://mlflow.evil.example:5000",
    ):
        assert HEADER not in headers_sent_to(elsewhere, "http://mlflow:5000"), elsewhere
    assert HEADER not in headers_sent_to("http://mlflow:5000", "")  # no tracking URI: none


def test_no_process_of_the_gated_mlflow_server_sends_the_token(tmp_path):
    """MLflow's job runner, started by `mlflow server` with this server as its tracking URI,
    inherits the environment: the gate's mark keeps the header provider quiet there."""
    from gate.header import IN_MLFLOW_SERVER
    from gate.rules import HEADER

    os.environ[IN_MLFLOW_SERVER] = "1"
    try:
        assert HEADER not in headers_sent_to("http://mlflow:5000", "http://mlflow:5000")
    finally:
        os.environ.pop(IN_MLFLOW_SERVER, None)
