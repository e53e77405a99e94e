"""The evidence in a notice's thread (SPEC 15), end to end: a real MLflow server, real
models with signatures and requirements, the worker, and the Slack double's upload flow."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from tests.fakes import Crash
from tests.support import notices_for, version_tags, wait_for

pytestmark = pytest.mark.slow

PRODUCTION_COLUMNS = {"age": "double", "plan": "string", "visits": "long"}
# Drops `visits`, retypes `age`, adds `region`.
CANDIDATE_COLUMNS = {"age": "string", "plan": "string", "region": "string"}
PRODUCTION_REQUIREMENTS = ["scikit-learn", "pandas==2.2.3"]
CANDIDATE_REQUIREMENTS = ["scikit-learn", "pandas==2.2.3", "xgboost==2.1.4"]


def png(width: int = 4, height: int = 3) -> bytes:
    """Return a real (tiny, grey) PNG."""
    row = b"\x00" + b"\x80" * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def log_with_evidence(
    uri: str,
    tmp: Path,
    *,
    columns: dict[str, str],
    requirements: list[str],
    pictures: dict[str, bytes] | None = None,
    accuracy: float = 0.9,
) -> str:
    """Log a real pyfunc model with this signature and requirements; return its run id."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    samples = {
        "double": [1.5],
        "long": [3],
        "string": ["x"],
    }
    frame = pd.DataFrame({name: samples[kind] for name, kind in columns.items()})
    signature = infer_signature(frame, [0.5])
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_metrics({"accuracy": accuracy, "loss": 1 - accuracy})
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Constant(),
            signature=signature,
            pip_requirements=requirements,
        )
        for name, data in (pictures or {}).items():
            path = tmp / name
            path.write_bytes(data)
            mlflow.log_artifact(str(path))
    return run.info.run_id


def log_bare(uri: str, tmp: Path) -> str:
    """Log a run whose model folder has an MLmodel without a signature and no requirements."""
    import mlflow

    folder = tmp / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: none\n")
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 0.8)
        mlflow.log_artifacts(str(folder), "model")
    return run.info.run_id


try:
    import mlflow.pyfunc

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [0.5] * len(model_input)

except ImportError:  # pragma: no cover - the test extra has mlflow
    Constant = None  # type: ignore[assignment,misc]


def thread_of(slack, channel: str, ts: str) -> list[dict]:
    return next(m["replies"] for m in slack.messages(channel) if m["ts"] == ts)


def noticed(stack, mlflow_server: str, model: str, run_id: str, **event) -> tuple[str, str]:
    """Send the training event, wait for its notice; return (version, notice ts)."""
    from mlflow import MlflowClient

    body = {"model_name": model, "run_id": run_id, "requested_by": "UREQUESTER", **event}
    assert stack.post_training(body).status_code == 202
    client = MlflowClient(mlflow_server)

    def found():
        versions = client.search_model_versions(f"name = '{model}' and run_id = '{run_id}'")
        return versions[0] if versions and versions[0].tags.get("registry_bot.notice_ts") else None

    mv = wait_for(found, f"{model}'s notice", 30)
    return mv.version, mv.tags["registry_bot.notice_ts"]


def make_production(mlflow_server: str, model: str, run_id: str) -> str:
    """Register the run's model and make it Production by hand (no policy protects it)."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    client.create_registered_model(model)
    [logged] = client.search_logged_models(
        filter_string=f"source_run_id = '{run_id}'", experiment_ids=["0"]
    )
    mv = client.create_model_version(
        model, f"models:/{logged.model_id}", run_id=run_id, model_id=logged.model_id
    )
    client.transition_model_version_stage(model, mv.version, "Production")
    client.set_registered_model_alias(model, "production", mv.version)  # as `move` keeps it
    return mv.version


def test_the_thread_names_each_schema_and_dependency_change_and_shows_the_pictures(
    stack, slack, mlflow_server, model_name, tmp_path
):
    prod_run = log_with_evidence(
        mlflow_server, tmp_path, columns=PRODUCTION_COLUMNS, requirements=PRODUCTION_REQUIREMENTS
    )
    prod = make_production(mlflow_server, model_name, prod_run)
    picture = png()
    run_id = log_with_evidence(
        mlflow_server,
        tmp_path,
        columns=CANDIDATE_COLUMNS,
        requirements=CANDIDATE_REQUIREMENTS,
        pictures={"confusion_matrix.png": picture, "notes.txt": b"not a picture"},
        accuracy=0.93,
    )
    version, ts = noticed(stack, mlflow_server, model_name, run_id)
    done = wait_for(
        lambda: version_tags(mlflow_server, model_name, version).get("registry_bot.evidence"),
        "the evidence shown",
        40,
    )
    assert done == "done"

    [reply] = [r for r in thread_of(slack, "CNOTICES", ts) if r.get("text")]
    text = reply["text"]
    assert f"against Production v{prod}" in text
    assert "removed input `visits` (long) :warning: *breaking*" in text
    assert "retyped input `age`: double → string :warning: *breaking*" in text
    assert "added input `region` (string)" in text
    assert "breaking" not in next(line for line in text.splitlines() if "region" in line)
    assert "added `xgboost==2.1.4`" in text
    assert "pandas" not in text  # unchanged: not named
    assert "notes.txt" not in text  # not a picture the globs name

    files = [f for f in slack.files() if f["thread_ts"] == ts]
    assert [f["name"] for f in files] == ["confusion_matrix.png", "metric-trend.png"]
    assert files[0]["data"] == picture and files[0]["channel"] == "CNOTICES"
    assert files[1]["data"].startswith(b"\x89PNG") and files[1]["mimetype"] == "image/png"
    assert "accuracy" in files[1]["title"] and "loss" in files[1]["title"]
    # The notice went out first, as it does without evidence: the uploads are replies.
    [notice] = notices_for(slack, model_name)
    assert notice.at < slack.calls("files.getUploadURLExternal")[-1].at
    assert all(not c.params.get("files") for c in notices_for(slack, model_name))


def test_a_candidate_without_signature_requirements_or_pictures_gets_one_line(
    stack, slack, mlflow_server, model_name, tmp_path
):
    run_id = log_bare(mlflow_server, tmp_path)
    version, ts = noticed(
        stack, mlflow_server, model_name, run_id, model_uri=f"runs:/{run_id}/model"
    )
    wait_for(
        lambda: version_tags(mlflow_server, model_name, version).get("registry_bot.evidence"),
        "the evidence shown",
        40,
    )
    [notice] = notices_for(slack, model_name)
    assert f"{model_name} v{version}" in notice.params["text"]
    [reply] = [r for r in thread_of(slack, "CNOTICES", ts) if r.get("text")]
    lines = reply["text"].splitlines()
    assert lines == [
        f"*Evidence for {model_name} v{version}*",
        ":warning: Not logged: no signature logged; no requirements.txt; "
        "no pictures matching *.png.",
        "Below: the metric trend.",
    ], lines
    # The trend chart still follows: the version's metrics are known.
    assert [f["name"] for f in slack.files() if f["thread_ts"] == ts] == ["metric-trend.png"]


# --- in this process, on the same real MLflow server and Slack double ---


def staged_here(svc, mlflow_server: str, model: str, run_id: str):
    """Register, stage and notice a version in this process; return it as noticed."""
    from registry.flows import lifecycle
    from registry.rules.events import TrainingEvent

    event = TrainingEvent(model, run_id, requested_by="UREQUESTER")
    result = lifecycle.stage_training_event(svc, event, event_id=f"e-{run_id}")
    assert result.outcome == "noticed"
    return svc.gateway.get_version(model, result.version), result.notice_ts


def test_a_rerun_after_a_crash_uploads_nothing_twice(slack, mlflow_server, model_name, tmp_path):
    from registry.flows.evidence import post_evidence
    from tests.support import local_services

    svc = local_services(mlflow_server, slack)
    run_id = log_with_evidence(
        mlflow_server,
        tmp_path,
        columns=PRODUCTION_COLUMNS,
        requirements=PRODUCTION_REQUIREMENTS,
        pictures={"confusion_matrix.png": png()},
    )
    mv, ts = staged_here(svc, mlflow_server, model_name, run_id)
    real_share = svc.uploads.share_upload

    def share_then_die(file_id, title, **where):
        real_share(file_id, title, **where)
        raise Crash("the worker died after Slack shared the picture")

    svc.uploads.share_upload = share_then_die
    with pytest.raises(Crash):
        post_evidence(svc, model_name, mv.version)
    svc.uploads.share_upload = real_share
    assert post_evidence(svc, model_name, mv.version) == "shown"
    assert post_evidence(svc, model_name, mv.version) == "already_shown"

    files = [f for f in slack.files() if f["thread_ts"] == ts]
    assert [f["name"] for f in files] == ["confusion_matrix.png", "metric-trend.png"]
    replies = [r for r in thread_of(slack, "CNOTICES", ts) if r.get("text")]
    assert len(replies) == 1  # the reply too, once


def test_what_slack_or_mlflow_refuses_is_one_line_each(slack, mlflow_server, model_name, tmp_path):
    from devkit.slack_double import ALL_SCOPES
    from registry.flows.evidence import post_evidence
    from tests.support import local_services

    svc = local_services(mlflow_server, slack)
    big = png() + b"\x00" * (6 * 1024 * 1024)  # a PNG's bytes, over the 5 MB cap
    run_id = log_with_evidence(
        mlflow_server,
        tmp_path,
        columns=PRODUCTION_COLUMNS,
        requirements=PRODUCTION_REQUIREMENTS,
        pictures={"big.png": big, "small.png": png()},
    )
    mv, ts = staged_here(svc, mlflow_server, model_name, run_id)
    slack.scopes = set(ALL_SCOPES) - {"files:write"}  # an app installed before the evidence
    try:
        assert post_evidence(svc, model_name, mv.version) == "shown"
    finally:
        slack.scopes = set(ALL_SCOPES)
    first, closing = [r["text"] for r in thread_of(slack, "CNOTICES", ts) if r.get("text")]
    assert ":warning: `big.png` is 6.0 MB, over the 5 MB limit" in first
    assert closing.splitlines()[1:] == [
        ":warning: `small.png` could not be uploaded: Slack answered missing_scope.",
        f":warning: `{model_name}: accuracy, loss over the last 1 versions` could not be "
        "uploaded: Slack answered missing_scope.",
    ]
    assert not [f for f in slack.files() if f["thread_ts"] == ts]
    [notice] = notices_for(slack, model_name)  # the notice itself, as ever
    assert notice.status == 200
