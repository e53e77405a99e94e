"""A registry gateway that writes only while its holder still holds the model's lock. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Protocol

from registry.ports.gateway import RegistryGateway
from registry.ports.services import Services
from registry.rules.versions import ModelStamp, ModelVersion, RunSummary


class Held(Protocol):
    """A lock its holder took (registry.adapters.locks.HeldLock): `check` raises once it is lost."""

    def check(self) -> None: ...


class Fence:
    """Follows whichever model lock its holder takes in turn (the sweep's, one model after
    another): `check` checks the lock held now, and passes between locks."""

    def __init__(self, lock: Callable[[str], AbstractContextManager[Held]]) -> None:
        self._lock = lock
        self.held: Held | None = None

    @contextmanager
    def __call__(self, name: str) -> Iterator[Held]:
        """Hold `name`'s lock, and check it, until the block ends."""
        with self._lock(name) as held:
            self.held = held
            try:
                yield held
            finally:
                self.held = None

    def check(self) -> None:
        """Raise as the lock held now does once it is lost; nothing when none is held."""
        if self.held is not None:
            self.held.check()


def fenced(svc: Services, check: Callable[[], None]) -> Services:
    """Return `svc` with a gateway that calls `check` before each registry write."""
    return replace(svc, gateway=FencedGateway(svc.gateway, check))


class FencedGateway:
    """RegistryGateway that calls `check` before each write (it raises once the lock is
    lost, as `registry.adapters.locks.HeldLock.check` does); reads pass straight through.

    The domain code runs unchanged against it: a worker that lost its lock stops before
    its next write, and its task runs again under the lock.
    """

    def __init__(self, inner: RegistryGateway, check: Callable[[], None]) -> None:
        self.inner, self.check = inner, check
        self.mode = inner.mode

    def register(
        self, name: str, run_id: str, artifact_path: str, model_uri: str, tags: Mapping[str, str]
    ) -> ModelVersion:
        self.check()
        return self.inner.register(name, run_id, artifact_path, model_uri, tags)

    def move(self, name: str, version: str, stage: str) -> list[str]:
        self.check()
        return self.inner.move(name, version, stage)

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        self.check()
        self.inner.set_tags(name, version, tags)

    def delete_tags(self, name: str, version: str, keys: Iterable[str]) -> None:
        self.check()
        self.inner.delete_tags(name, version, keys)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.check()
        self.inner.set_model_tag(name, key, value)

    def find_version(
        self, name: str, run_id: str, artifact_path: str, model_uri: str
    ) -> ModelVersion | None:
        return self.inner.find_version(name, run_id, artifact_path, model_uri)

    def get_version(self, name: str, version: str) -> ModelVersion:
        return self.inner.get_version(name, version)

    def versions(self, name: str) -> list[ModelVersion]:
        return self.inner.versions(name)

    def created_since(self, since: float) -> list[ModelVersion]:
        return self.inner.created_since(since)

    def production(self, name: str) -> ModelVersion | None:
        return self.inner.production(name)

    def run_summary(self, run_id: str) -> RunSummary | None:
        return self.inner.run_summary(run_id)

    def models_updated_since(self, since: int) -> list[ModelStamp]:
        return self.inner.models_updated_since(since)

    def pending_versions(self, name: str = "") -> list[ModelVersion]:
        return self.inner.pending_versions(name)

    def all_versions(self) -> list[ModelVersion]:
        return self.inner.all_versions()

    def model_tags(self, name: str) -> Mapping[str, str]:
        return self.inner.model_tags(name)
