"""deploy/kubernetes: rendered as `kubectl apply -k` would, every object valid against a
current Kubernetes, and each service deployed as it must be (probes, one scheduler, no
service links, secrets from a Secret, sizes from the measured footprints)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from registry.rules.settings import SECRETS
from tests.support import REPO

MANIFESTS = REPO / "deploy" / "kubernetes"
VARIANTS = ("http", "socket-mode")  # how the bot hears from Slack
# What this renderer does of kustomize; a kustomization using more must not pass unseen.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images"}
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
SERVICES = ("webhooks", "bot", "worker", "scheduler", "predict")
HEARTBEAT = {"worker", "scheduler"}  # no HTTP port: their probes read heartbeat files
# Settings that are secrets, or URLs that may carry a password: never in the ConfigMap.
SECRET_SETTINGS = {name.upper().removesuffix("S") for name in SECRETS} | {
    "REDIS_URL",
    "MLFLOW_TRACKING_URI",
}
# Resident memory of each service (MB), all its processes: webhooks and bot (gunicorn master
# and 2 workers) and the worker (--concurrency 1: main process and largest pool process) from
# the bench; the scheduler and predict (a scikit-learn model loaded) from tests/test_image.py.
MEASURED_MB = {"scheduler": 68, "predict": 294}


def render(directory: Path) -> list[dict[str, Any]]:
    """Return the objects `kubectl apply -k directory` would apply."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    assert not unknown, f"{directory}: the test renders no {sorted(unknown)}"
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for obj in objects:
        if "namespace" in kustomization and obj["kind"] != "Namespace":
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for container in _containers(obj):
            container["image"] = _image(container["image"], kustomization.get("images", []))
    return objects


def _image(image: str, rules: list[dict[str, str]]) -> str:
    for rule in rules:
        if image == rule["name"]:
            return f"{rule.get('newName', image)}:{rule['newTag']}"
    return image


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] != "Deployment":
        return []
    return obj["spec"]["template"]["spec"]["containers"]


def deployments(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}


def bench_footprints() -> dict[str, float]:
    """Return the newest bench results' memory of webhooks, bot and worker (MB)."""
    (newest,) = sorted((REPO / "bench" / "results").glob("[0-9]*-[0-9][0-9].json"))[-1:]
    run = json.loads(newest.read_text())
    after, worker = run["rss_after"], run["rss_after"]["worker"]
    return {
        # The front door's own run: webhooks after the fixed-rate and saturation runs.
        "webhooks": run["doors"]["rss_after"]["webhooks"]["total_rss_mb"],
        "bot": after["bot"]["total_rss_mb"],
        "worker": worker["main_rss_mb"] + worker["max_child_rss_mb"],
    }


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]] * 1.048576  # MiB -> MB


@pytest.fixture(scope="module", params=VARIANTS)
def rendered(request) -> list[dict]:
    return render(MANIFESTS / request.param)


def test_every_object_is_valid_against_the_newest_kubernetes(rendered):
    version = kubernetes_validate.latest_version()
    assert version >= "1.33"
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")


def test_the_validation_catches_a_broken_object(rendered):
    broken = json.loads(json.dumps(deployments(rendered)["worker"]))
    broken["spec"]["template"]["spec"]["enableServiceLink"] = False  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_every_service_is_deployed_in_its_namespace_from_the_set_image(rendered):
    assert set(deployments(rendered)) == set(SERVICES)
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "registry-bot", obj["metadata"]
        for container in _containers(obj):
            assert container["image"] == "registry.example.com/registry-bot:0.1.0"


def test_no_pod_gets_service_links_or_a_service_account_token(rendered):
    for name, deployment in deployments(rendered).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["enableServiceLinks"] is False, name
        assert pod["automountServiceAccountToken"] is False, name


def test_every_container_runs_as_the_image_does_read_only_with_a_writable_tmp(rendered):
    for name, deployment in deployments(rendered).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_every_container_probes_readiness_and_liveness_honestly(rendered):
    for name, deployment in deployments(rendered).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ready, live = container["readinessProbe"], container["livenessProbe"]
        if "exec" in ready:  # the worker, the scheduler, a Socket Mode bot
            heartbeat = ["python", "-m", "registry.process.heartbeat", name]
            assert ready["exec"]["command"] == [*heartbeat, "ready"], name
            assert live["exec"]["command"] == [*heartbeat, "live"], name
        else:
            assert ready["httpGet"]["path"] == "/healthz", name
            assert live["httpGet"]["path"] == "/livez", name  # Redis has no say in a restart
        assert name not in HEARTBEAT or "exec" in ready
        # A probe's period and failures give a stall longer than the heartbeat's limits.
        assert live["periodSeconds"] * live["failureThreshold"] >= 60, name
        assert "startupProbe" in container, name


def test_the_scheduler_runs_as_exactly_one_copy(rendered):
    scheduler = deployments(rendered)["scheduler"]["spec"]
    assert scheduler["replicas"] == 1
    assert scheduler["strategy"] == {"type": "Recreate"}  # never two during an update


def test_the_worker_has_time_to_finish_its_task_when_stopped(rendered):
    pod = deployments(rendered)["worker"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60


def test_the_doors_are_kept_up_through_a_node_drain(rendered):
    budgets = {
        o["metadata"]["name"]: o["spec"] for o in rendered if o["kind"] == "PodDisruptionBudget"
    }
    for door in ("webhooks", "bot"):
        assert budgets[door]["minAvailable"] == 1
        labels = deployments(rendered)[door]["spec"]["template"]["metadata"]["labels"]
        assert budgets[door]["selector"]["matchLabels"].items() <= labels.items()


def test_secrets_come_from_the_secret_and_never_from_the_config_map(rendered):
    (config,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    assert not set(config["data"]) & SECRET_SETTINGS
    for name, deployment in deployments(rendered).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        sources = container["envFrom"]
        assert {"secretRef": {"name": "registry-bot"}} in sources, name
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in sources, name
        literal = {e["name"] for e in container.get("env", []) if "value" in e}
        assert not literal & SECRET_SETTINGS, name


def test_each_service_runs_the_command_compose_runs(rendered):
    bot = deployments(rendered)["bot"]
    socket_mode = bot["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
        "python",
        "-m",
        "bot",
    ]
    for name, deployment in deployments(rendered).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if name == "bot" and socket_mode:
            continue  # compose runs the HTTP bot
        theirs = COMPOSE[name]["command"].replace("${SERVED_MODEL:-churn}", "$(SERVED_MODEL)")
        assert container["command"] == shlex.split(theirs), name


def test_memory_requests_hold_the_measured_footprints(rendered):
    measured = {**bench_footprints(), **MEASURED_MB}
    for name, deployment in deployments(rendered).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        resources = container["resources"]
        request = mebibytes(resources["requests"]["memory"])
        assert request >= measured[name], (name, request, measured[name])
        assert mebibytes(resources["limits"]["memory"]) >= 1.5 * measured[name], name
        assert "cpu" in resources["requests"] and "cpu" not in resources.get("limits", {})
