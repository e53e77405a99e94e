"""What the domain code runs against: the registry, Slack, who may approve, settings, a clock.

The Protocols here are what the lifecycle needs of Slack; `registry.adapters.slack` and
`registry.adapters.directory` implement them over the Web API, and the tests' in-memory fakes
implement them too (mypy checks both).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from registry.ports.evidence import EvidenceSource, Uploads
from registry.ports.gateway import RegistryGateway
from registry.rules.decisions import Clicker
from registry.rules.record import LifecycleEvent
from registry.rules.settings import Settings
from registry.rules.versions import ModelVersion

Blocks = Sequence[dict] | None


@dataclass(frozen=True)
class Recipient:
    """Whom to tell something only they see: a user in a channel, or Slack's response URL."""

    channel: str
    user: str
    response_url: str = ""


class Notifier(Protocol):
    """Posts and updates the product's Slack messages."""

    channel: str

    def post(self, text: str, blocks: Sequence[dict], *, channel: str = "", **meta: Any) -> str:
        """Post to the notice channel (or `channel`); return the message ts.

        `metadata=` is Slack message metadata (a notice carries its nonce in it).
        """
        ...

    def find_posted(
        self, event_type: str, nonce: str, *, channel: str = "", thread_ts: str = ""
    ) -> str:
        """Return the ts of a recent message carrying this metadata nonce, or ''.

        It looks in the notice channel (or `channel`), or in the thread `thread_ts`.
        """
        ...

    def update(self, channel: str, ts: str, text: str, blocks: Sequence[dict]) -> None:
        """Replace a posted message."""
        ...

    def reply(self, channel: str, thread_ts: str, text: str, **meta: Any) -> None:
        """Add a thread reply under a message (`metadata=` as for `post`)."""
        ...

    def tell(
        self, to: Recipient, text: str, *, blocks: Blocks = None, replace: bool = False
    ) -> None:
        """Say something only `to.user` sees; `replace` swaps the message a response URL is for."""
        ...

    def publish_home(self, user: str, view: dict) -> None:
        """Show `view` as `user`'s App Home tab."""
        ...


class ApproverDirectory(Protocol):
    """Answers 'who is this clicker?' for the decision rules.

    Each method raises `registry.rules.decisions.LookupFailed` when Slack cannot answer, so
    nothing that depends on the answer is decided on a guess (SPEC 8): a failed
    group lookup never lets anyone through.
    """

    def clicker(self, user: str, *, with_email: bool = False, model: str = "") -> Clicker:
        """Describe `user`: approver (of `model`, when given) or not, the model's approval
        slots they may fill, and their e-mail when asked."""
        ...

    def in_group(self, user: str, group: str) -> bool:
        """Say whether `user` belongs to the Slack user group `group`."""
        ...

    def user_for_email(self, email: str) -> str:
        """Return the Slack user ID for an e-mail address, or '' when Slack has none."""
        ...

    def display_name(self, user: str) -> str:
        """Return the name Slack shows for `user`, or '' when Slack does not say."""
        ...


def no_emit(event: LifecycleEvent) -> None:
    """Publish nothing (tests and tools that need no lifecycle events)."""


def no_follow(mv: ModelVersion) -> None:
    """Queue nothing after a notice (tests and tools that show no evidence)."""


@dataclass
class Services:
    """What the domain code needs: the registry, Slack, the settings and a clock."""

    gateway: RegistryGateway
    notifier: Notifier
    settings: Settings
    directory: ApproverDirectory
    clock: Callable[[], float] = time.time
    # Called with each LifecycleEvent after its registry write succeeded.
    emit: Callable[[LifecycleEvent], Any] = no_emit
    # What shows a notice's evidence in its thread (SPEC 15); None where nothing does.
    evidence: EvidenceSource | None = None
    uploads: Uploads | None = None
    # Called with a version once its notice is posted: the worker queues its evidence.
    after_notice: Callable[[ModelVersion], Any] = no_follow
