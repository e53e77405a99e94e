"""In-memory stand-ins for the registry gateway, Slack notifier and approver directory.

mypy checks them against the Protocols the domain code runs against (see the end).
The notifier refuses what Slack refuses (devkit.block_kit), as the Slack double does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from devkit.block_kit import message_refusal, view_problems
from registry.adapters.mlflow import source_key
from registry.ports.evidence import EvidenceSource, ModelFiles, UploadRefused, Uploads
from registry.ports.gateway import RegistryGateway
from registry.ports.services import ApproverDirectory, Blocks, Notifier, Recipient
from registry.rules.decisions import Clicker, LookupFailed, model_clicker
from registry.rules.events import CREATED_BY_TAG
from registry.rules.evidence import Artifact, TrendPoint, Unreadable
from registry.rules.settings import Settings
from registry.rules.versions import (
    PENDING_TAG,
    SOURCE_KEY_TAG,
    ModelStamp,
    ModelVersion,
    RunSummary,
    VersionNotFound,
)


class Crash(BaseException):
    """The process died here: raised by a fake right after a write it was told to die after.

    A BaseException, so no `except Exception` in the domain code can swallow it.
    """


class SlackWouldRefuse(BaseException):
    """What was sent is over Slack's limits: Slack would answer invalid_blocks, msg_too_long
    or invalid_arguments. A BaseException, so no `except Exception` can hide the bug."""


def slack_takes(text: str, blocks: Blocks = None) -> None:
    """Raise SlackWouldRefuse for a message Slack would not take."""
    refusal = message_refusal({"text": text, "blocks": list(blocks) if blocks else None})
    if refusal:
        raise SlackWouldRefuse(f"Slack would answer {refusal[0]}: {refusal[1]}")


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
        self.model_tag_values: dict[str, dict[str, str]] = {}  # the registered models' own tags
        # Called after each write as (op, version, stage or tags); True: die there, once.
        self.die_after: Callable[[str, str, Any], bool] | None = None

    def add_run(self, run_id: str, metrics: Mapping[str, float]) -> None:
        self.runs[run_id] = RunSummary(run_id, "0", dict(metrics))

    def find_version(
        self, name: str, run_id: str, artifact_path: str, model_uri: str
    ) -> ModelVersion | None:
        key = source_key(run_id, artifact_path, model_uri)
        versions = self.models.get(name, {}).values()
        ours = (mv for mv in versions if mv.tags.get("registry_bot.source_key") == key)
        # As MlflowGateway: a version someone else registered from the same run (this fake
        # keeps no artifact paths, so one run's version registered elsewhere is the one).
        theirs = (mv for mv in versions if mv.run_id == run_id and SOURCE_KEY_TAG not in mv.tags)
        return next(ours, None) or next(theirs, None)

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
        registered = self.register_elsewhere(name, run_id, tags=all_tags)
        self._maybe_die("register", registered.version, all_tags)
        return registered

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
                    self.put(replace(mv, stage="Archived"))
                    archived.append(mv.version)
        self.put(replace(self.get_version(name, version), stage=stage))
        self._touch(name)
        self._maybe_die("move", version, stage)
        return archived

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        mv = self.get_version(name, version)
        self.put(replace(mv, tags={**mv.tags, **{k: str(v) for k, v in tags.items()}}))
        self._maybe_die("set_tags", version, tags)

    def delete_tags(self, name: str, version: str, keys: Iterable[str]) -> None:
        mv = self.get_version(name, version)
        gone = set(keys)
        self.put(replace(mv, tags={k: v for k, v in mv.tags.items() if k not in gone}))
        self._maybe_die("delete_tags", version, gone)

    def run_summary(self, run_id: str) -> RunSummary | None:
        return self.runs.get(run_id)

    def all_versions(self) -> list[ModelVersion]:
        return [mv for name in self.models for mv in self.versions(name)]

    def model_tags(self, name: str) -> Mapping[str, str]:
        return dict(self.model_tag_values.get(name, {}))

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        if name not in self.models:
            raise VersionNotFound(f"no model named {name}")
        self.model_tag_values.setdefault(name, {})[key] = value

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

    def put(self, mv: ModelVersion) -> None:
        """Store `mv` as it is, as a change made in MLflow itself would leave it."""
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
        self.update_blocks: list[list[dict]] = []  # the blocks of each update, in order
        self.replies: list[tuple[str, str]] = []
        self.told: list[tuple[str, str]] = []
        self.homes: dict[str, dict] = {}

        self.reply_meta: list[tuple[str, str]] = []
        # Called after each post or reply as (op, text); True: die there, once.
        self.die_after: Callable[[str, str], bool] | None = None

    def post(self, text: str, blocks: Sequence[dict], *, channel: str = "", **meta: Any) -> str:
        slack_takes(text, blocks)
        self.posts.append((text, str(meta.get("metadata"))))
        self.posted_to.append(channel or self.channel)
        self.blocks.append(list(blocks))
        self._maybe_die("post", text)
        return f"{len(self.posts)}.000"

    def find_posted(
        self, event_type: str, nonce: str, *, channel: str = "", thread_ts: str = ""
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
        slack_takes(text, blocks)
        self.updates.append((ts, text))
        self.update_blocks.append(list(blocks))

    def reply(self, channel: str, thread_ts: str, text: str, **meta: Any) -> None:
        slack_takes(text)
        self.replies.append((thread_ts, text))
        self.reply_meta.append((thread_ts, str(meta.get("metadata"))))
        self._maybe_die("reply", text)

    def tell(
        self, to: Recipient, text: str, *, blocks: Blocks = None, replace: bool = False
    ) -> None:
        slack_takes(text, blocks)
        self.told.append((to.user, text))

    def publish_home(self, user: str, view: dict) -> None:
        problems = view_problems(view)
        if problems:
            raise SlackWouldRefuse(f"Slack would answer invalid_arguments: {problems}")
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


class FakeEvidence:
    """An EvidenceSource over files held in memory: model files by version, run files by run."""

    def __init__(self) -> None:
        self.models: dict[str, ModelFiles] = {}  # by "<model>/<version>"
        self.runs: dict[str, dict[str, bytes]] = {}  # run id -> path -> bytes
        self.charts: list[tuple[str, list[str], list[TrendPoint]]] = []
        self.points: dict[str, list[TrendPoint]] = {}  # by model, oldest first

    def model_files(self, mv: ModelVersion) -> ModelFiles:
        return self.models.get(f"{mv.name}/{mv.version}", ModelFiles())

    def run_artifacts(self, run_id: str) -> list[Artifact]:
        return [Artifact(p, len(d)) for p, d in self.runs.get(run_id, {}).items()]

    def read_artifact(self, run_id: str, path: str, limit: int) -> bytes:
        data = self.runs.get(run_id, {}).get(path)
        if data is None:
            raise Unreadable("no such file")
        if len(data) > limit:
            raise Unreadable(f"{len(data)} bytes, over the limit")
        return data

    def trend(self, name: str, count: int) -> list[TrendPoint]:
        return self.points.get(name, [])[-count:]

    def chart(self, title: str, metrics: Sequence[str], points: Sequence[TrendPoint]) -> bytes:
        self.charts.append((title, list(metrics), list(points)))
        return b"\x89PNG\r\n\x1a\nchart"


class FakeUploads:
    """Uploads into threads held in memory; `refuse` names the Slack error to answer with."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[str, bytes]] = {}
        self.shared: list[tuple[str, str, str, str]] = []  # file id, title, channel, thread
        self.refuse = ""
        self.busy_channels: set[str] = set()  # where Slack answered 429 moments ago
        # Called after each share as (file id, title); True: die there, once.
        self.die_after: Callable[[str, str], bool] | None = None

    def start_upload(self, filename: str, data: bytes) -> str:
        if self.refuse:
            raise UploadRefused(self.refuse)
        file_id = f"F{len(self.started) + 1:04d}"
        self.started[file_id] = (filename, data)
        return file_id

    def share_upload(self, file_id: str, title: str, *, channel: str, thread_ts: str) -> None:
        if file_id not in self.started or any(s[0] == file_id for s in self.shared):
            raise UploadRefused("file_not_found")
        self.shared.append((file_id, title, channel, thread_ts))
        if self.die_after is not None and self.die_after(file_id, title):
            self.die_after = None
            raise Crash(f"died after sharing {title}")

    def shared_in_thread(self, file_id: str, *, channel: str, thread_ts: str) -> bool:
        return any(s[0] == file_id and s[2:] == (channel, thread_ts) for s in self.shared)

    def busy(self, channel: str) -> bool:
        return channel in self.busy_channels


if TYPE_CHECKING:

    def _conforms(
        gateway: FakeGateway, notifier: RecordingNotifier, directory: FakeDirectory
    ) -> tuple[RegistryGateway, Notifier, ApproverDirectory]:
        """Type-check only: each fake stands where the domain code expects its Protocol."""
        return gateway, notifier, directory

    def _conforms_too(
        evidence: FakeEvidence, uploads: FakeUploads
    ) -> tuple[EvidenceSource, Uploads]:
        """Type-check only: the evidence's fakes, likewise."""
        return evidence, uploads
