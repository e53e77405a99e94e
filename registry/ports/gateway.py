"""The registry port: the handful of operations the product needs of MLflow."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from registry.rules.versions import ModelStamp, ModelVersion, RunSummary


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

    def model_tags(self, name: str) -> Mapping[str, str]:
        """Return the registered model's own tags ({} when there is no such model)."""
        ...

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        """Set a tag on the registered model itself."""
        ...
