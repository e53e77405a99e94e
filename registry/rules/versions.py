"""The registry as the product sees it: versions, runs, their tags. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
