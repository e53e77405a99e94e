"""The floor: the registry work of one event, done by a plain MlflowClient script."""

from __future__ import annotations

import multiprocessing
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.prelog import LoggedRun

if TYPE_CHECKING:
    from mlflow import MlflowClient

FLOOR_TAGS = 6
STAGING_ALIAS = "staging"
_client = None  # each pool process's own client


@dataclass
class FloorRun:
    """Per-event seconds and the wall time of one floor chunk."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0


def client_for(tracking_uri: str) -> MlflowClient:
    """Return an MlflowClient on the bench's server."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def floor_event(client: MlflowClient, model_name: str, run: LoggedRun) -> float:
    """Find or create the run's version, wait READY, stage it, alias it, tag it; time it."""
    started = time.perf_counter()
    found = client.search_model_versions(f"name = '{model_name}' and run_id = '{run.run_id}'")
    version = str(found[0].version) if found else _create(client, model_name, run)
    with warnings.catch_warnings():  # stages are deprecated (FutureWarning) yet still the API
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(model_name, version, "Staging")
    client.set_registered_model_alias(model_name, STAGING_ALIAS, version)
    for i in range(FLOOR_TAGS):
        client.set_model_version_tag(model_name, version, f"bench.tag{i}", str(time.time()))
    return time.perf_counter() - started


def minimal_event(client: MlflowClient, model_name: str, run: LoggedRun) -> float:
    """Do only what the job needs for one event, in the fewest requests; time it.

    Find the run's version (idempotency), read the run (its logged model, and what the
    notice shows), register the version with the request's tags, move it to Staging,
    set the staging alias, write two tags (the log and a notice's), read the Production
    version (by its alias) and, if there is one, its run. The writes go to the REST
    endpoints MlflowClient calls once it has checked the model is not a prompt (a GET
    of the registered model before each write), as the worker's gateway does.
    """
    from mlflow.exceptions import MlflowException

    writes = client._get_registry_client()
    started = time.perf_counter()
    found = client.search_model_versions(f"name = '{model_name}' and run_id = '{run.run_id}'")
    read = client.get_run(run.run_id)
    if found:
        version = str(found[0].version)
    else:
        model_id = read.outputs.model_outputs[0].model_id
        created = client.create_model_version(
            model_name,
            f"models:/{model_id}",
            run_id=run.run_id,
            model_id=model_id,
            tags={"bench.requested_by": "bench", "bench.event_id": str(time.time())},
            await_creation_for=0,
        )
        version = str(created.version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        writes.transition_model_version_stage(model_name, version, "Staging", False)
    writes.set_registered_model_alias(model_name, STAGING_ALIAS, version)
    for key in ("bench.log", "bench.notice_ts"):
        writes.set_model_version_tag(model_name, version, key, str(time.time()))
    try:
        prod = client.get_model_version_by_alias(model_name, "production")
    except MlflowException:
        prod = None
    if prod is not None and prod.run_id:
        client.get_run(prod.run_id)
    return time.perf_counter() - started


def _create(client: MlflowClient, model_name: str, run: LoggedRun) -> str:
    """Register the run's logged model (found from the run's outputs) and wait until READY."""
    model_id = client.get_run(run.run_id).outputs.model_outputs[0].model_id
    created = client.create_model_version(
        model_name,
        f"models:/{model_id}",
        run_id=run.run_id,
        model_id=model_id,
        await_creation_for=0,
    )
    delay = 0.05
    while client.get_model_version(model_name, str(created.version)).status != "READY":
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    return str(created.version)


class FloorPool:
    """Warm floor processes, so floor chunks can alternate with the system's own."""

    def __init__(self, tracking_uri: str, processes: int = 2):
        ctx = multiprocessing.get_context("spawn")
        self.pool = ctx.Pool(processes, initializer=_start, initargs=(tracking_uri,))
        self.pool.map(time.sleep, [0.5] * processes, chunksize=1)  # every process imported and up

    def run(self, models: list[str], runs: list[LoggedRun]) -> FloorRun:
        """Do the runs' floor events in one process per model, all at once."""
        # One model per process: two plain clients setting one model's alias at once race
        # in MLflow (UNIQUE constraint failed: registered_model_aliases); the worker locks.
        parts = [(model, runs[i :: len(models)]) for i, model in enumerate(models)]
        done = self.pool.map(_floor_part, parts, chunksize=1)
        out = FloorRun([t for _, _, times in done for t in times])
        out.elapsed = max(end for _, end, _ in done) - min(start for start, _, _ in done)
        return out

    def close(self) -> None:
        """Stop the floor processes."""
        self.pool.close()
        self.pool.join()


def _start(tracking_uri: str) -> None:
    global _client
    _client = client_for(tracking_uri)
    _client.search_registered_models(
        max_results=1
    )  # imports and first connection are not the floor


def _floor_part(part: tuple[str, list[LoggedRun]]) -> tuple[float, float, list[float]]:
    model_name, runs = part
    started = time.time()
    times = [floor_event(_client, model_name, run) for run in runs]
    return started, time.time(), times
