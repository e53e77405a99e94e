"""What every listener needs (settings, who may approve, the queue) and the texts they share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from registry.adapters.dedup import DeliveryLedger
from registry.adapters.queue import Producer, QueueUnavailable
from registry.ports.services import ApproverDirectory
from registry.rules.decisions import TRY_AGAIN, LookupFailed, may_decide, may_reject
from registry.rules.settings import Settings

OTHER_WORKSPACE = "registry-bot serves a single workspace; this request came from another one."
log = logging.getLogger(__name__)

QUEUE_DOWN = "registry-bot could not queue that just now; nothing changed. Please try again."


@dataclass
class Deps:
    """What listeners need, handed to them through the Bolt context."""

    settings: Settings
    directory: ApproverDirectory
    producer: Producer
    ledger: DeliveryLedger

    def refusal(self, user: str, verb: str, model: str, *, requester: str = "") -> str:
        """Return why `user` may not `verb` on `model` ('' when they may); fail closed.

        For "reject", `requester` (a Slack user ID or e-mail) may always open it, to
        withdraw their own candidate; a requester known only by e-mail needs the
        clicker's e-mail, and a lookup that fails refuses with "try again" all the same.
        """
        try:
            if verb == "reject":
                with_email = "@" in requester
                clicker = self.directory.clicker(user, with_email=with_email, model=model)
                return may_reject(clicker, requester)
            return may_decide(self.directory.clicker(user, model=model), verb)
        except LookupFailed:
            return TRY_AGAIN  # fail closed; the directory logged what failed

    def enqueue(self, task: str, **kwargs: Any) -> bool:
        """Queue a task with primitive keyword arguments; False if the queue is down."""
        ctx = {"task": task, "event_id": kwargs.get("event_id", "")}
        try:
            self.producer.send(task, **kwargs)
        except QueueUnavailable as exc:
            log.warning("could not queue: %s", exc, extra=ctx)
            return False
        log.info("queued", extra=ctx)
        return True
