"""The chaos soak's short variant: real processes, whole-worker kills, a Redis restart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow


def test_the_quick_soak_keeps_every_invariant(mlflow_server, tmp_path):
    report_path = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--quick", "--mlflow-url", mlflow_server]
        + ["--json", str(report_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert report_path.exists(), done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["problems"] == [], done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    figures = report["figures"]
    assert figures["events"] == report["plan"]["events"]
    assert figures["clicks"] >= report["plan"]["clicks"]
    assert figures["kills"] == 2 and figures["held_at_kills"] >= 1
    assert figures["redis_restarts"] == 1
    assert figures["duplicates"] == 0 and figures["lost"] == 0
    assert figures["recorded"]["promoted"] >= 1  # the checks read a record with changes in it
    # The events for the model whose channel refuses every post wait, unnoticed, and the
    # other models' notices went out all the same.
    assert figures["muted_versions_waiting"] == 2
