"""The one way into the MLflow Model Registry: a Protocol and its MLflow implementation."""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from typing import Any

from registry.rules.events import CREATED_BY_TAG
from registry.rules.versions import (
    PENDING_TAG,
    SOURCE_KEY_TAG,
    STAGE_TAG,
    STAGES,
    ModelStamp,
    ModelVersion,
    RegistryError,
    RunSummary,
    VersionNotFound,
)

log = logging.getLogger(__name__)

CREATED_PAGE = 100  # versions per page when reading the newest first
RUN_MEMO_SECONDS = 30.0  # a run read to register its model serves the notice that follows
RUN_MEMO_SIZE = 16
# The server loads every tag of each version it lists: a first page this small answers
# "nothing new in the window" cheaply.
CREATED_FIRST_PAGE = 10
MODELS_PAGE = 1000  # registered models per page: MLflow's largest
MODELS_FIRST_PAGE = 2  # the last model updated, and one older than it


# Tags whose presence says a change was made; everything that explains it comes first.
COMMIT_TAGS = frozenset({"registry_bot.decision", "registry_bot.rollback_at"})


class MlflowGateway:
    """RegistryGateway over `MlflowClient`, in `stages` or `aliases` mode."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        mode: str = "stages",
        staging_alias: str = "staging",
        production_alias: str = "production",
        ready_timeout: float = 120.0,
    ):
        from mlflow import MlflowClient  # heavy import: only services that write pay for it

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.mode = mode
        self.aliases = {"Staging": staging_alias, "Production": production_alias}
        self.ready_timeout = ready_timeout
        self._runs: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    @cached_property
    def writes(self) -> Any:
        """What MlflowClient itself calls for tag, stage and alias writes.

        MlflowClient first checks (a GET of the registered model each time, which loads
        every version of it on the server) that the model is not a prompt. This gateway
        writes only to versions it has just read or registered, so it calls the same
        REST endpoints without that check.
        """
        return self.client._get_registry_client()

    def find_version(
        self, name: str, run_id: str, artifact_path: str, model_uri: str
    ) -> ModelVersion | None:
        """Return the version already registered for this run and artifact, if any."""
        key = source_key(run_id, artifact_path, model_uri)
        candidates = self._search(f"name = '{_q(name)}' and run_id = '{_q(run_id)}'")
        for mv in candidates:
            if mv.tags.get(SOURCE_KEY_TAG) == key:
                return mv
        for mv in candidates:  # registered by someone else, e.g. a pipeline's own step
            if self._same_artifact(mv, artifact_path, model_uri):
                return mv
        return None

    def register(
        self, name: str, run_id: str, artifact_path: str, model_uri: str, tags: Mapping[str, str]
    ) -> ModelVersion:
        """Create a version for the run's model and wait until it is READY."""
        from mlflow.exceptions import MlflowException

        source, model_id = self._resolve_source(run_id, artifact_path, model_uri)
        all_tags = {
            **tags,
            SOURCE_KEY_TAG: source_key(run_id, artifact_path, model_uri),
            CREATED_BY_TAG: "registry-bot",
        }

        def create():
            return self.client.create_model_version(
                name, source, run_id=run_id, tags=all_tags, await_creation_for=0, model_id=model_id
            )

        try:  # the model exists but for its first version: create it only when told it is not
            created = create()
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self._ensure_model(name)
            created = create()
        if created.status == "READY":  # MLflow's own stores answer READY at once
            return self._convert(created)
        return self._wait_ready(name, str(created.version))

    def get_version(self, name: str, version: str) -> ModelVersion:
        """Read one version, or raise VersionNotFound."""
        from mlflow.exceptions import MlflowException

        try:
            return self._convert(self.client.get_model_version(name, str(version)))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise VersionNotFound(f"{name} has no version {version}") from None
            raise

    def versions(self, name: str) -> list[ModelVersion]:
        """Return every version of the model, newest first."""
        found = self._search(f"name = '{_q(name)}'")
        if not found:
            return []
        # search_model_versions leaves aliases out; the registered model has them all.
        by_version: dict[str, list[str]] = {}
        for alias, version in (self.client.get_registered_model(name).aliases or {}).items():
            by_version.setdefault(str(version), []).append(alias)
        found = [replace(mv, aliases=tuple(by_version.get(mv.version, ()))) for mv in found]
        return sorted(found, key=lambda mv: int(mv.version), reverse=True)

    def created_since(self, since: float) -> list[ModelVersion]:
        """Return every model's versions created at or after `since`, newest first."""
        floor = since * 1000  # MLflow keeps milliseconds
        found: list[ModelVersion] = []
        token, size = None, CREATED_FIRST_PAGE
        while True:
            page = self.client.search_model_versions(
                max_results=size,
                order_by=["creation_timestamp DESC", "name ASC", "version_number DESC"],
                page_token=token,
            )
            for mv in page:
                if (mv.creation_timestamp or 0) < floor:
                    return found
                found.append(self._convert(mv))
            token, size = page.token, CREATED_PAGE
            if not token:
                return found

    def production(self, name: str) -> ModelVersion | None:
        """Return the version now serving as Production, if any.

        One lookup whatever the model's size: the production alias, which `move` keeps on
        the Production version (SPEC 4), read back with its stage. Only when the alias
        names a version that has left Production (moved out of band) are the versions
        searched: in aliases mode by their stage tag, in stages mode all of them. A stage
        set to Production by hand where no alias was ever set is not seen here; the sweep's
        protection (SPEC 11) reads every version and reports it.
        """
        from mlflow.exceptions import MlflowException

        try:
            mv = self._convert(
                self.client.get_model_version_by_alias(name, self.aliases["Production"])
            )
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            return None  # no production alias: nothing was made Production, or it was withdrawn
        if mv.stage == "Production":
            return mv
        if self.mode == "stages":
            serving = [v for v in self.versions(name) if v.stage == "Production"]
        else:
            serving = self._search(f"name = '{_q(name)}' and tags.`{STAGE_TAG}` = 'Production'")
            serving.sort(key=lambda v: int(v.version), reverse=True)
        return serving[0] if serving else None

    def move(self, name: str, version: str, stage: str) -> list[str]:
        """Move a version to `stage`; a promotion archives every other Production version.

        Return the versions archived. The new Production version (and its alias) moves
        first, then each old one is archived by a transition of its own, so the served
        model is never missing; the caller's per-model lock keeps exactly one at the end,
        and calling this again after a crash half way finishes the archiving.
        """
        if stage not in STAGES[1:]:
            raise RegistryError(f"cannot move a version to {stage!r}")
        if stage != "Production":  # only a promotion archives anything: skip the search else
            self._point_aliases(name, version, stage, self._set_stage(name, version, stage))
            return []
        current = self.versions(name)
        serving = [mv.version for mv in current if mv.stage == "Production"]
        held = self._set_stage(name, version, stage) if version not in serving else None
        self._point_aliases(name, version, stage, held)
        previous = [old for old in serving if old != version]
        for old in previous:
            self._set_stage(name, old, "Archived")
        return previous

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        """Set tags on a version, the ones that commit a change last.

        MLflow sets a version's tags one request at a time, so a worker killed half way
        leaves some written: `decision` (and a rollback's `rollback_at`) go last, so a
        change is never seen as made without its who, when and why.
        """
        for key, value in sorted(tags.items(), key=lambda item: item[0] in COMMIT_TAGS):
            self.writes.set_model_version_tag(name, str(version), key, str(value))

    def delete_tags(self, name: str, version: str, keys: Iterable[str]) -> None:
        """Remove tags from a version; a tag it does not have is no error."""
        from mlflow.exceptions import MlflowException

        for key in keys:
            try:
                self.writes.delete_model_version_tag(name, str(version), key)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise

    def run_summary(self, run_id: str) -> RunSummary | None:
        """Return the run's metrics, git commit and user, or None if it is gone."""
        from mlflow.exceptions import MlflowException

        if not run_id:
            return None
        try:
            run = self._read_run(run_id, fresh=False)
        except MlflowException:
            return None
        return RunSummary(
            run_id=run_id,
            experiment_id=run.info.experiment_id,
            metrics=dict(run.data.metrics),
            git_commit=run.data.tags.get("mlflow.source.git.commit", ""),
            user=run.info.user_id or "",
        )

    def models_updated_since(self, since: int) -> list[ModelStamp]:
        """Return the models updated at or after `since` (ms; 0: all), newest first.

        MLflow moves a model's `last_updated_timestamp` when a version is created, deleted
        or changes stage, not for tag or alias writes, so in aliases mode every model is
        read. Each model listed costs the server its latest versions per stage, so pages
        start small: where nothing changed, the first page ends the read.
        """
        floor = 0 if self.mode == "aliases" else since
        found: list[ModelStamp] = []
        token, size = None, MODELS_FIRST_PAGE
        while True:
            page = self.client.search_registered_models(
                max_results=size, order_by=["last_updated_timestamp DESC"], page_token=token
            )
            for model in page:
                updated = int(model.last_updated_timestamp or 0)
                if updated < floor:
                    return found
                aliases = tuple(sorted((model.aliases or {}).items()))
                found.append(ModelStamp(model.name, updated, aliases))
            token, size = page.token, min(size * 10, MODELS_PAGE)
            if not token:
                return found

    def pending_versions(self, name: str = "") -> list[ModelVersion]:
        """Return the versions tagged pending (of one model, or of all), by a tag search."""
        pending = f"tags.`{PENDING_TAG}` = 'true'"
        return self._search(f"name = '{_q(name)}' and {pending}" if name else pending)

    def check(self) -> None:
        """Ask the registry for one registered model; raise whatever MLflow raises if it
        cannot answer (`registry-bot doctor`)."""
        self.client.search_registered_models(max_results=1)

    def all_versions(self) -> list[ModelVersion]:
        """Return every version of every model (no aliases: the Home tab needs none)."""
        return self._search("")

    def model_tags(self, name: str) -> Mapping[str, str]:
        """Return the registered model's own tags ({} when there is no such model)."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(name).tags or {})
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return {}
            raise

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        """Set a tag on the registered model itself."""
        self.writes.set_registered_model_tag(name, key, value)

    # -- internals ---------------------------------------------------------------------

    def _search(self, filter_string: str) -> list[ModelVersion]:
        found: list[ModelVersion] = []
        token = None
        while True:
            page = self.client.search_model_versions(filter_string, page_token=token)
            found.extend(self._convert(mv) for mv in page)
            token = page.token
            if not token:
                return found

    def _convert(self, mv) -> ModelVersion:
        tags = dict(mv.tags or {})
        stage = mv.current_stage or "None" if self.mode == "stages" else tags.get(STAGE_TAG, "None")
        return ModelVersion(
            name=mv.name,
            version=str(mv.version),
            stage=stage,
            run_id=mv.run_id or "",
            source=mv.source or "",
            status=mv.status or "READY",
            aliases=tuple(getattr(mv, "aliases", None) or ()),
            tags=tags,
            created_at=int(mv.creation_timestamp or 0),
        )

    def _same_artifact(self, mv: ModelVersion, artifact_path: str, model_uri: str) -> bool:
        if model_uri:
            return mv.source == model_uri
        if mv.source.startswith("models:/m-"):
            logged = self.client.get_logged_model(mv.source[len("models:/") :].split("/")[0])
            return logged.name == artifact_path
        return mv.source.rstrip("/").endswith("/" + artifact_path.strip("/"))

    def _resolve_source(self, run_id: str, artifact_path: str, model_uri: str):
        """Find what to register, as `mlflow.register_model` would (MLflow 3 logged models)."""
        if model_uri:
            model_id = model_uri[len("models:/") :] if model_uri.startswith("models:/m-") else None
            return model_uri, model_id
        run = self._read_run(run_id, fresh=True)
        logged = self._logged_models(run, artifact_path)
        if logged:
            newest = max(logged, key=lambda lm: lm.creation_timestamp or 0)
            return f"models:/{newest.model_id}", newest.model_id
        names = {a.path for a in self.client.list_artifacts(run_id, artifact_path)}
        if f"{artifact_path}/MLmodel" in names:  # an MLflow 2 style model in the run's artifacts
            return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}", None
        raise RegistryError(f"run {run_id} has no logged model named {artifact_path!r}")

    def _read_run(self, run_id: str, *, fresh: bool) -> Any:
        """Read a run; unless `fresh`, one this gateway read in the last few seconds serves.

        Registering reads the run to find its model; the notice that follows shows its
        metrics, git commit and user: one read does for both.
        """
        now = time.monotonic()
        memo = self._runs.get(run_id)
        if memo is not None and not fresh and now - memo[0] < RUN_MEMO_SECONDS:
            return memo[1]
        run = self.client.get_run(run_id)
        self._runs[run_id] = (now, run)
        self._runs.move_to_end(run_id)
        while len(self._runs) > RUN_MEMO_SIZE:
            self._runs.popitem(last=False)
        return run

    def _logged_models(self, run, artifact_path: str) -> list:
        """Return the run's logged models named `artifact_path`, over every result page.

        Filtered by the run on the server: an experiment that retrains nightly holds far
        more than one page of models named "model", and reading them all would cost
        more with every night.
        """
        found: list = []
        token = None
        while True:
            page = self.client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=(
                    f"name = '{_q(artifact_path)}' and source_run_id = '{_q(run.info.run_id)}'"
                ),
                page_token=token,
            )
            found.extend(lm for lm in page if lm.source_run_id == run.info.run_id)
            token = page.token
            if not token:
                return found

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _wait_ready(self, name: str, version: str) -> ModelVersion:
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.05
        while True:
            mv = self.get_version(name, version)
            if mv.status == "READY":
                return mv
            if mv.status == "FAILED_REGISTRATION":
                raise RegistryError(f"{name} v{version} failed registration")
            if time.monotonic() > deadline:
                raise RegistryError(f"{name} v{version} not READY after {self.ready_timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _set_stage(self, name: str, version: str, stage: str) -> tuple[str, ...] | None:
        """Put one version in `stage`: a stage transition, or in aliases mode a tag.

        Return the version's aliases when the write's answer gives them (a transition's
        does), else None.
        """
        if self.mode != "stages":
            self.set_tags(name, version, {STAGE_TAG: stage})
            return None
        # Never archive_existing_versions=True: through psycopg 3 (what SQLAlchemy 2.1 picks
        # for postgresql://) MLflow 3.17's SQL store fails every such transition with
        # "operator does not exist: integer <> character varying"; `move` archives instead.
        with _quiet_stage_warnings():
            moved = self.writes.transition_model_version_stage(
                name, str(version), stage, archive_existing_versions=False
            )
        return tuple(getattr(moved, "aliases", None) or ())

    def _point_aliases(
        self, name: str, version: str, stage: str, held: tuple[str, ...] | None = None
    ) -> None:
        """Keep the staging/production aliases on the versions in those stages.

        `held` are the aliases on the version now, when the caller has just read them;
        else the version is read (its aliases, not the whole model's versions).
        """
        if held is None:
            held = tuple(self.client.get_model_version(name, str(version)).aliases or ())
        for alias_stage, alias in self.aliases.items():
            if alias_stage == stage and alias not in held:
                self.writes.set_registered_model_alias(name, alias, str(version))
            elif alias_stage != stage and alias in held:
                self.writes.delete_registered_model_alias(name, alias)


def source_key(run_id: str, artifact_path: str, model_uri: str) -> str:
    """Return what makes two training events the same registration."""
    return model_uri or f"runs:/{run_id}/{artifact_path}"


def _q(value: str) -> str:
    return value.replace("'", "''")


@contextmanager
def _quiet_stage_warnings() -> Iterator[None]:
    # Stage APIs are deprecated since MLflow 2.9 (FutureWarning) yet are stages mode itself.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield
