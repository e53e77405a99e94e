"""In-memory stand-ins for the registry gateway, Slack notifier and approver directory.

mypy checks them against the Protocols the domain code runs against (see the end).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from registry.decisions import Clicker
from registry.gateway import source_key
from registry.services import ApproverDirectory, Blocks, Notifier, Recipient
from registry.versions import ModelVersion, RegistryGateway, RunSummary, VersionNotFound


class FakeGateway:
    """A RegistryGateway kept in a dict, with MLflow's stage semantics (stages mode)."""

    mode = "stages"

    def __init__(self) -> None:
        self.models: dict[str, dict[str, ModelVersion]] = {}
        self.runs: dict[str, RunSummary] = {}

    def add_run(self, run_id: str, metrics: Mapping[str, float]) -> None:
        self.runs[run_id] = RunSummary(run_id, "0", dict(metrics))

    def find_version(
        self, name: str, run_id: str, artifact_path: str, model_uri: str
    ) -> ModelVersion | None:
        key = source_key(run_id, artifact_path, model_uri)
        return next(
            (
                mv
                for mv in self.models.get(name, {}).values()
                if mv.tags.get("registry_bot.source_key") == key
            ),
            None,
        )

    def register(
        self,
        name: str,
        run_id: str,
        artifact_path: str,
        model_uri: str,
        tags: Mapping[str, str],
    ) -> ModelVersion:
        versions = self.models.setdefault(name, {})
        version = str(len(versions) + 1)
        all_tags = {**tags, "registry_bot.source_key": source_key(run_id, artifact_path, model_uri)}
        versions[version] = ModelVersion(name, version, "None", run_id=run_id, tags=all_tags)
        return versions[version]

    def get_version(self, name: str, version: str) -> ModelVersion:
        try:
            return self.models[name][str(version)]
        except KeyError:
            raise VersionNotFound(f"{name} has no version {version}") from None

    def versions(self, name: str) -> list[ModelVersion]:
        return sorted(self.models.get(name, {}).values(), key=lambda mv: -int(mv.version))

    def production(self, name: str) -> ModelVersion | None:
        return next((mv for mv in self.versions(name) if mv.stage == "Production"), None)

    def move(self, name: str, version: str, stage: str) -> list[str]:
        archived = []
        if stage == "Production":
            for mv in self.versions(name):
                if mv.stage == "Production" and mv.version != version:
                    self._put(replace(mv, stage="Archived"))
                    archived.append(mv.version)
        self._put(replace(self.get_version(name, version), stage=stage))
        return archived

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        mv = self.get_version(name, version)
        self._put(replace(mv, tags={**mv.tags, **{k: str(v) for k, v in tags.items()}}))

    def delete_tags(self, name: str, version: str, keys: Iterable[str]) -> None:
        mv = self.get_version(name, version)
        gone = set(keys)
        self._put(replace(mv, tags={k: v for k, v in mv.tags.items() if k not in gone}))

    def run_summary(self, run_id: str) -> RunSummary | None:
        return self.runs.get(run_id)

    def model_names(self) -> list[str]:
        return list(self.models)

    def _put(self, mv: ModelVersion) -> None:
        self.models[mv.name][mv.version] = mv


class RecordingNotifier:
    """A Notifier that records what it would have said."""

    def __init__(self, channel: str = "CNOTICES"):
        self.channel = channel
        self.posts: list[tuple[str, str]] = []
        self.updates: list[tuple[str, str]] = []
        self.replies: list[tuple[str, str]] = []
        self.told: list[tuple[str, str]] = []

    def post(self, text: str, blocks: Sequence[dict], *, channel: str = "", **meta: Any) -> str:
        self.posts.append((text, str(meta.get("metadata"))))
        return f"{len(self.posts)}.000"

    def find_posted(self, event_type: str, nonce: str, *, limit: int = 200) -> str:
        return next((f"{i + 1}.000" for i, (_, meta) in enumerate(self.posts) if nonce in meta), "")

    def update(self, channel: str, ts: str, text: str, blocks: Sequence[dict]) -> None:
        self.updates.append((ts, text))

    def reply(self, channel: str, thread_ts: str, text: str) -> None:
        self.replies.append((thread_ts, text))

    def tell(
        self, to: Recipient, text: str, *, blocks: Blocks = None, replace: bool = False
    ) -> None:
        self.told.append((to.user, text))


class FakeDirectory:
    """Approvers by a fixed list; e-mails by a dict."""

    def __init__(
        self,
        approvers: Sequence[str],
        emails: Mapping[str, str] | None = None,
        names: Mapping[str, str] | None = None,
    ):
        self.approvers, self.emails = set(approvers), dict(emails or {})
        self.names = dict(names or {})

    def clicker(self, user: str, *, with_email: bool = False) -> Clicker:
        return Clicker(
            user,
            self.emails.get(user, ""),
            is_approver=user in self.approvers,
            nobody_may_approve=not self.approvers,
        )

    def user_for_email(self, email: str) -> str:
        return next((u for u, e in self.emails.items() if e == email), "")

    def display_name(self, user: str) -> str:
        return self.names.get(user, "")


if TYPE_CHECKING:

    def _conforms(
        gateway: FakeGateway, notifier: RecordingNotifier, directory: FakeDirectory
    ) -> tuple[RegistryGateway, Notifier, ApproverDirectory]:
        """Type-check only: each fake stands where the domain code expects its Protocol."""
        return gateway, notifier, directory
