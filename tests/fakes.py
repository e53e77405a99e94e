"""In-memory stand-ins for the registry gateway, Slack notifier and approver directory.

mypy checks them against the Protocols the domain code runs against (see the end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from registry.decisions import Clicker, LookupFailed, model_clicker
from registry.events import CREATED_BY_TAG
from registry.gateway import source_key
from registry.services import ApproverDirectory, Blocks, Notifier, Recipient
from registry.settings import Settings
from registry.versions import (
    PENDING_TAG,
    ModelStamp,
    ModelVersion,
    RegistryGateway,
    RunSummary,
    VersionNotFound,
)


class Crash(BaseException):
    """The process died here: raised by a fake right after a write it was told to die after.

    A BaseException, so no `except Exception` in the domain code can swallow it.
    """


class FakeGateway:
    """A RegistryGateway kept in a dict, with MLflow's stage semantics (stages mode)."""

    mode = "stages"

    def __init__(self, clock: Callable[[], float] = lambda: 0.0) -> None:
        self.models: dict[str, dict[str, ModelVersion]] = {}
        self.runs: dict[str, RunSummary] = {}
        self.clock = clock  # stamps each version's creation time, as MLflow does
        self.reads_since = 0  # versions created_since read: its cost
        # Each model's update time (ms), moved as MLflow moves last_updated_timestamp: by a
        # new version or a stage change, never by a tag; strictly later each time.
        self.updated: dict[str, int] = {}
        # Called after each write as (op, version, stage or tags); True: die there, once.
        self.die_after: Callable[[str, str, Any], bool] | None = None

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
        all_tags = {
            **tags,
            "registry_bot.source_key": source_key(run_id, artifact_path, model_uri),
            CREATED_BY_TAG: "registry-bot",  # as MlflowGateway.register marks its versions
        }
        return self.register_elsewhere(name, run_id, tags=all_tags)

    def register_elsewhere(
        self, name: str, run_id: str, *, tags: Mapping[str, str] | None = None
    ) -> ModelVersion:
        """Register a version as a pipeline's own step would: none of our tags."""
        versions = self.models.setdefault(name, {})
        self._touch(name)
        version = str(len(versions) + 1)
        created = int(self.clock() * 1000)
        versions[version] = ModelVersion(
            name, version, "None", run_id=run_id, tags=dict(tags or {}), created_at=created
        )
        return versions[version]

    def get_version(self, name: str, version: str) -> ModelVersion:
        try:
            return self.models[name][str(version)]
        except KeyError:
            raise VersionNotFound(f"{name} has no version {version}") from None

    def versions(self, name: str) -> list[ModelVersion]:
        return sorted(self.models.get(name, {}).values(), key=lambda mv: -int(mv.version))

    def created_since(self, since: float) -> list[ModelVersion]:
        newest = sorted(
            (mv for versions in self.models.values() for mv in versions.values()),
            key=lambda mv: -mv.created_at,
        )
        found = []
        for mv in newest:
            self.reads_since += 1
            if mv.created_at < since * 1000:
                break
            found.append(mv)
        return found

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
        self._touch(name)
        self._maybe_die("move", version, stage)
        return archived

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        mv = self.get_version(name, version)
        self._put(replace(mv, tags={**mv.tags, **{k: str(v) for k, v in tags.items()}}))
        self._maybe_die("set_tags", version, tags)

    def delete_tags(self, name: str, version: str, keys: Iterable[str]) -> None:
        mv = self.get_version(name, version)
        gone = set(keys)
        self._put(replace(mv, tags={k: v for k, v in mv.tags.items() if k not in gone}))
        self._maybe_die("delete_tags", version, gone)

    def run_summary(self, run_id: str) -> RunSummary | None:
        return self.runs.get(run_id)

    def model_names(self) -> list[str]:
        return list(self.models)

    def all_versions(self) -> list[ModelVersion]:
        return [mv for name in self.models for mv in self.versions(name)]

    def models_updated_since(self, since: int) -> list[ModelStamp]:
        stamps = [ModelStamp(name, self.updated.get(name, 0)) for name in self.models]
        return sorted((s for s in stamps if s.updated_at >= since), key=lambda s: -s.updated_at)

    def pending_versions(self, name: str = "") -> list[ModelVersion]:
        return [
            mv
            for mv in self.all_versions()
            if (not name or mv.name == name) and mv.tags.get(PENDING_TAG) == "true"
        ]

    def _touch(self, name: str) -> None:
        self.updated[name] = max(int(self.clock() * 1000), self.updated.get(name, -1) + 1)

    def _put(self, mv: ModelVersion) -> None:
        self.models[mv.name][mv.version] = mv

    def _maybe_die(self, op: str, version: str, arg: Any) -> None:
        if self.die_after is not None and self.die_after(op, version, arg):
            self.die_after = None
            raise Crash(f"died after {op} on v{version}")


class RecordingNotifier:
    """A Notifier that records what it would have said."""

    def __init__(self, channel: str = "CNOTICES"):
        self.channel = channel
        self.posts: list[tuple[str, str]] = []
        self.posted_to: list[str] = []  # the channel of each post, in order
        self.blocks: list[list[dict]] = []  # the blocks of each post, in order
        self.updates: list[tuple[str, str]] = []
        self.replies: list[tuple[str, str]] = []
        self.told: list[tuple[str, str]] = []
        self.homes: dict[str, dict] = {}

        self.reply_meta: list[tuple[str, str]] = []
        # Called after each post or reply as (op, text); True: die there, once.
        self.die_after: Callable[[str, str], bool] | None = None

    def post(self, text: str, blocks: Sequence[dict], *, channel: str = "", **meta: Any) -> str:
        self.posts.append((text, str(meta.get("metadata"))))
        self.posted_to.append(channel or self.channel)
        self.blocks.append(list(blocks))
        self._maybe_die("post", text)
        return f"{len(self.posts)}.000"

    def find_posted(
        self,
        event_type: str,
        nonce: str,
        *,
        channel: str = "",
        thread_ts: str = "",
        limit: int = 200,
    ) -> str:
        if thread_ts:
            found = (ts for ts, meta in self.reply_meta if ts == thread_ts and nonce in meta)
            return next(found, "")
        where = channel or self.channel
        return next(
            (
                f"{i + 1}.000"
                for i, (_, meta) in enumerate(self.posts)
                if nonce in meta and self.posted_to[i] == where
            ),
            "",
        )

    def update(self, channel: str, ts: str, text: str, blocks: Sequence[dict]) -> None:
        self.updates.append((ts, text))

    def reply(self, channel: str, thread_ts: str, text: str, **meta: Any) -> None:
        self.replies.append((thread_ts, text))
        self.reply_meta.append((thread_ts, str(meta.get("metadata"))))
        self._maybe_die("reply", text)

    def tell(
        self, to: Recipient, text: str, *, blocks: Blocks = None, replace: bool = False
    ) -> None:
        self.told.append((to.user, text))

    def publish_home(self, user: str, view: dict) -> None:
        self.homes[user] = view

    def _maybe_die(self, op: str, text: str) -> None:
        if self.die_after is not None and self.die_after(op, text):
            self.die_after = None
            raise Crash(f"died after {op}: {text[:40]}")


class FakeDirectory:
    """Approvers by a fixed list, or by `settings` and its policy over `groups`; e-mails by
    a dict. `down` names the lookups that fail as Slack's can (users.info,
    users.lookupByEmail, usergroups.users.list)."""

    def __init__(
        self,
        approvers: Sequence[str],
        emails: Mapping[str, str] | None = None,
        names: Mapping[str, str] | None = None,
        *,
        groups: Mapping[str, Sequence[str]] | None = None,
        settings: Settings | None = None,
    ):
        self.approvers, self.emails = set(approvers), dict(emails or {})
        self.names = dict(names or {})
        self.groups = {group: set(members) for group, members in (groups or {}).items()}
        self.settings = settings
        self.down: set[str] = set()
        self.lookups = 0

    def clicker(self, user: str, *, with_email: bool = False, model: str = "") -> Clicker:
        if with_email and "users.info" in self.down:
            raise LookupFailed(f"users.info for {user} failed")
        if self.settings is not None:
            email = self.emails.get(user, "") if with_email else ""
            return model_clicker(self.settings, model, user, in_group=self.in_group, email=email)
        return Clicker(
            user,
            self.emails.get(user, "") if with_email else "",
            is_approver=user in self.approvers,
            nobody_may_approve=not self.approvers,
        )

    def in_group(self, user: str, group: str) -> bool:
        self.lookups += 1
        if "usergroups.users.list" in self.down:
            raise LookupFailed(f"user group {group} lookup failed")
        return user in self.groups.get(group, set())

    def user_for_email(self, email: str) -> str:
        if "users.lookupByEmail" in self.down:
            raise LookupFailed(f"users.lookupByEmail for {email} failed")
        return next((u for u, e in self.emails.items() if e == email), "")

    def display_name(self, user: str) -> str:
        # As SlackDirectory: a name Slack cannot give costs the name, never raises.
        if "users.info" in self.down:
            return ""
        return self.names.get(user, "")


if TYPE_CHECKING:

    def _conforms(
        gateway: FakeGateway, notifier: RecordingNotifier, directory: FakeDirectory
    ) -> tuple[RegistryGateway, Notifier, ApproverDirectory]:
        """Type-check only: each fake stands where the domain code expects its Protocol."""
        return gateway, notifier, directory
