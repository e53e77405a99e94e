"""The registry as the product sees it: versions, runs, and the gateway Protocol. Pure.

`registry.gateway.MlflowGateway` implements the Protocol over MLflow; the tests'
in-memory gateway implements it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

TAG = "registry_bot."
STAGE_TAG = TAG + "stage"  # aliases mode keeps the lifecycle stage here
SOURCE_KEY_TAG = TAG + "source_key"
# On a version in a state the sweep must watch (a notice awaiting its decision, a canary,
# a freeze, a change half done); the sweep finds these with one tag search, not a full read.
PENDING_KEY = "pending"
PENDING_TAG = TAG + PENDING_KEY
STAGES = ("None", "Staging", "Production", "Archived")


class RegistryError(RuntimeError):
    """A registry operation failed for a reason a person should read."""


class VersionNotFound(RegistryError):
    """The model or version does not exist."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version, with its lifecycle stage in the configured mode."""

    name: str
    version: str
    stage: str
    run_id: str = ""
    source: str = ""
    status: str = "READY"
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0

    def tag(self, key: str, default: str = "") -> str:
        """Return our tag `registry_bot.<key>`."""
        return self.tags.get(TAG + key, default)


@dataclass(frozen=True)
class ModelStamp:
    """A registered model's last change as MLflow dates it, and its aliases."""

    name: str
    updated_at: int  # milliseconds
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def fingerprint(self) -> str:
        """Return a text that changes whenever a version's stage or an alias does."""
        return f"{self.updated_at}|{self.aliases}"


@dataclass(frozen=True)
class RunSummary:
    """What a notice shows about the training run."""

    run_id: str
    experiment_id: str
    metrics: Mapping[str, float]
    git_commit: str = ""
    user: str = ""


class RegistryGateway(Protocol):
    """The handful of registry operations the product needs."""

    mode: str

    def find_version(
        self, name: str, run_id: str, artifact_path: str, model_uri: str
    ) -> ModelVersion | None: ...

    def register(
        self, name: str, run_id: str, artifact_path: str, model_uri: str, tags: Mapping[str, str]
    ) -> ModelVersion: ...

    def get_version(self, name: str, version: str) -> ModelVersion: ...

    def versions(self, name: str) -> list[ModelVersion]: ...

    def created_since(self, since: float) -> list[ModelVersion]:
        """Return every model's versions created at or after `since` (Unix time), newest first.

        It reads newest first and stops at `since`, so its cost follows the window, not
        the registry's age.
        """
        ...

    def production(self, name: str) -> ModelVersion | None: ...

    def move(self, name: str, version: str, stage: str) -> list[str]: ...

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None: ...

    def delete_tags(self, name: str, version: str, keys: Iterable[str]) -> None: ...

    def run_summary(self, run_id: str) -> RunSummary | None: ...

    def model_names(self) -> list[str]: ...

    def models_updated_since(self, since: int) -> list[ModelStamp]:
        """Return the registered models updated at or after `since` (Unix ms; 0: all of them).

        MLflow moves a model's update time when one of its versions is created, deleted or
        changes stage, not for tag or alias writes: in aliases mode every model is returned,
        so that an alias moved by hand is seen.
        """
        ...

    def pending_versions(self, name: str = "") -> list[ModelVersion]:
        """Return the versions tagged PENDING_TAG, of every model or of the model `name`."""
        ...

    def all_versions(self) -> list[ModelVersion]: ...
