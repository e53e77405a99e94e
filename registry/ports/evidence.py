"""What the evidence in a notice's thread needs (SPEC 15): a version's model files and its
run's pictures from the registry, a chart drawn, and files uploaded into a Slack thread.

`registry.adapters.evidence` implements EvidenceSource over MLflow's artifacts and
matplotlib; `registry.adapters.slack.SlackNotifier` implements Uploads over Slack's
`files.getUploadURLExternal` and `files.completeUploadExternal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from registry.rules.evidence import Artifact, TrendPoint
from registry.rules.versions import ModelVersion


class UploadRefused(RuntimeError):
    """Slack refused an upload for good (its error, e.g. missing_scope): said, not retried."""


class ChannelBusy(RuntimeError):
    """Slack asked for slower posting in the notice's channel moments ago: the evidence
    waits and is tried again, so the notices queued behind it go first."""

    def __init__(self, channel: str):
        super().__init__(f"Slack is slowing posts to {channel} down: the evidence waits")
        self.channel = channel


@dataclass(frozen=True)
class ModelFiles:
    """A version's MLmodel and requirements.txt text; None when the model has no such file.

    `problem` is one line when a file is there but could not be read (too large, say).
    """

    mlmodel: str | None = None
    requirements: str | None = None
    problem: str = ""


class EvidenceSource(Protocol):
    """Reads a version's evidence from the registry and draws its trend chart."""

    def model_files(self, mv: ModelVersion) -> ModelFiles:
        """Read the version's MLmodel and requirements.txt from its model's artifacts."""
        ...

    def run_artifacts(self, run_id: str) -> list[Artifact]:
        """List the files the run logged, in every folder (its model's folder left out)."""
        ...

    def read_artifact(self, run_id: str, path: str, limit: int) -> bytes:
        """Return one of the run's files; raise rules.evidence.Unreadable above `limit` bytes."""
        ...

    def trend(self, name: str, count: int) -> list[TrendPoint]:
        """Return the model's last `count` versions, oldest first, each with its metrics
        (`production` left False: the caller knows which version is Production)."""
        ...

    def chart(self, title: str, metrics: Sequence[str], points: Sequence[TrendPoint]) -> bytes:
        """Draw `metrics` over the versions in `points` as a PNG, Production marked."""
        ...


class Uploads(Protocol):
    """Puts files into a Slack thread in Slack's two steps, so a rerun can tell which
    uploads were shared before it died."""

    def start_upload(self, filename: str, data: bytes) -> str:
        """Get an upload URL, send the bytes there, and return the file's ID (not yet shared)."""
        ...

    def share_upload(self, file_id: str, title: str, *, channel: str, thread_ts: str) -> None:
        """Complete the upload into the thread `thread_ts` of `channel`."""
        ...

    def shared_in_thread(self, file_id: str, *, channel: str, thread_ts: str) -> bool:
        """Say whether the file is shared in the thread (a run that died may have shared it)."""
        ...

    def busy(self, channel: str) -> bool:
        """Say whether Slack answered a top-level post to `channel` (a notice, say) with 429
        moments ago: the channel's pace is spent on messages that come before evidence."""
        ...
