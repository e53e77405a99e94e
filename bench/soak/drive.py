"""The soak's load: training events across the models, and the clicks people make on notices."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from bench.prelog import LoggedRun
from bench.soak.slack import Sent, SlackSide
from bench.soak.stack import OUTSIDER, REQUESTER
from bench.stack import CHANNEL, CLICKERS, TRAINING_SECRET
from devkit.slack_double import SlackDouble
from registry.flows.notice import NOTICE_EVENT
from registry.rules.events import signed_headers
from registry.views.modals import REJECT_MODAL, ROLLBACK_MODAL
from registry.views.notice import APPROVE_ACTION, REJECT_ACTION, button_value
from registry.views.plans import ROLLBACK_CONFIRM, parse_plan_value

SEND_ATTEMPTS = 90  # a sender retries a 503 or a refused connection, about a second apart
ANSWER_WAIT = 150.0  # how long a person waits for a plan or a modal before giving up


@dataclass
class Event:
    """One training run sent as an event, perhaps more than once."""

    model: str
    run_id: str
    accepted_at: float = 0.0  # the first 202
    statuses: list[int] = field(default_factory=list)


@dataclass
class Click:
    """One thing a person did on a notice or a plan, and where its answer would go."""

    kind: str  # approve, outsider, requester (on their own version), reject, rollback
    user: str
    model: str
    version: str = ""
    reply: str = ""  # the response URL's name
    reason: str = ""  # a rejection's reason, or the token a rollback's reason carries
    confirm: str = ""  # a rollback's Confirm click: its response URL's name
    at: float = 0.0
    status: int = 0
    note: str = ""  # why the click went no further (no plan, no modal)
    event_id: str = ""  # the id the bot queued it under


@dataclass
class Ledger:
    """Everything the drivers sent, shared by their threads."""

    events: dict[str, Event] = field(default_factory=dict)
    clicks: list[Click] = field(default_factory=list)
    sends: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Event]:
        """Return the events the webhooks took (202)."""
        with self.lock:
            return [e for e in self.events.values() if e.accepted_at]

    def add_click(self, click: Click) -> Click:
        with self.lock:
            self.clicks.append(click)
        return click


class EventDriver:
    """Sends each run as a signed training event; some twice, some twice at once with one id."""

    def __init__(self, webhooks_url: str, ledger: Ledger):
        self.url = f"{webhooks_url}/hooks/training"
        self.ledger = ledger
        self.pool = ThreadPoolExecutor(8)

    def send_all(self, runs: list[tuple[str, LoggedRun]], seconds: float, stop: threading.Event):
        """Send the runs spread over `seconds`; return once every send is answered."""
        started, gap = time.monotonic(), seconds / max(len(runs), 1)
        futures = []
        for i, (model, run) in enumerate(runs):
            if stop.wait(max(0.0, started + i * gap - time.monotonic())):
                break
            futures.append(self.pool.submit(self._variant(i), model, run))
        for future in futures:
            future.result()

    def _variant(self, i: int) -> Callable[[str, LoggedRun], None]:
        if i % 10 == 3:
            return self._twice
        if i % 10 == 7:
            return self._same_id_at_once
        return self.send

    def send(self, model: str, run: LoggedRun, msg_id: str = "") -> int:
        """Send one event, retrying as a training job would until it is taken; return the status."""
        body = json.dumps({"model_name": model, "run_id": run.run_id, "requested_by": REQUESTER})
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        with self.ledger.lock:
            event = self.ledger.events.setdefault(run.run_id, Event(model, run.run_id))
        status = 0
        for _ in range(SEND_ATTEMPTS):
            status = _post(self.url, body, signed_headers(TRAINING_SECRET, msg_id, body))
            with self.ledger.lock:
                self.ledger.sends += 1
                event.statuses.append(status)
                if status == 202 and not event.accepted_at:
                    event.accepted_at = time.time()
            if status == 202 or 400 <= status < 500:
                return status
            time.sleep(1.0)
        return status

    def _twice(self, model: str, run: LoggedRun) -> None:
        """A pipeline that sends its event again later, under a new webhook-id."""
        self.send(model, run)
        time.sleep(random.uniform(0.5, 8.0))
        self.send(model, run)

    def _same_id_at_once(self, model: str, run: LoggedRun) -> None:
        """A sender's retry racing its first try: one webhook-id, two requests at once."""
        msg_id, barrier = f"msg_{uuid.uuid4().hex}", threading.Barrier(2)

        def send() -> int:
            barrier.wait(5)
            return self.send(model, run, msg_id)

        with ThreadPoolExecutor(2) as pair:
            list(pair.map(lambda _: send(), range(2)))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# What a person does with a notice, in proportion: approve alone, two approvers at once, reject
# with a reason, someone who is not an approver clicking, and a rollback of the model.
ACTIONS = ["approve"] * 5 + ["pair"] * 2 + ["reject"] * 2 + ["outsider", "rollback", "requester"]


class ClickDriver:
    """Clicks on the notices as they appear, from several approvers, some at once."""

    def __init__(self, side: SlackSide, double: SlackDouble, ledger: Ledger, seed: int = 7):
        self.side, self.double, self.ledger = side, double, ledger
        self.random = random.Random(seed)
        self.pool = ThreadPoolExecutor(6)
        self.targeted: set[tuple[str, str]] = set()
        self.approved: Counter[str] = Counter()  # approve actions per model
        self.rollbacks = 0

    def click_all(self, count: int, seconds: float, stop: threading.Event) -> None:
        """Make `count` clicks spread over `seconds` on notices not clicked yet."""
        started, gap, made, futures = time.monotonic(), seconds / max(count, 1), 0, []
        deadline = started + seconds * 3  # notices may come late under chaos; never wait for ever
        while made < count and time.monotonic() < deadline:
            if stop.wait(max(0.0, started + made * gap - time.monotonic())):
                break
            action, model = self.random.choice(ACTIONS), self._rollback_model()
            if action == "rollback" and model:
                futures.append(self.pool.submit(self.rollback, model))
                made += 1
                continue
            notice = self._wait_notice(deadline, stop)
            if notice is None:
                break
            action = "approve" if action == "rollback" else action
            futures.append(self.pool.submit(self.act, action, *notice))
            self.approved[notice[0]] += action in ("approve", "pair")
            made += 2 if action == "pair" else 1
        for future in futures:
            future.result()

    def _rollback_model(self) -> str:
        """Return a model approved at least twice (so it has an earlier Production), or ''."""
        ready = sorted(m for m, n in self.approved.items() if n >= 2)
        return self.random.choice(ready) if ready else ""

    def _wait_notice(self, deadline: float, stop: threading.Event) -> tuple[str, str, str] | None:
        while time.monotonic() < deadline and not stop.is_set():
            notice = self._next_notice()
            if notice:
                return notice
            stop.wait(0.5)
        return None

    def _next_notice(self) -> tuple[str, str, str] | None:
        """Return (model, version, ts) of the oldest notice nobody clicked yet."""
        for message in self.double.messages(CHANNEL):
            meta = message.get("metadata") or {}
            if meta.get("event_type") != NOTICE_EVENT:
                continue
            payload = meta.get("event_payload") or {}
            key = (str(payload.get("model")), str(payload.get("version")))
            if key not in self.targeted:
                self.targeted.add(key)
                return key[0], key[1], message["ts"]
        return None

    def act(self, action: str, model: str, version: str, ts: str) -> None:
        """Do one action on a notice."""
        users = self.random.sample(CLICKERS, 2)
        if action == "pair":
            with ThreadPoolExecutor(2) as pair:
                list(pair.map(lambda u: self.approve(u, model, version, ts), users))
        elif action == "reject":
            self.reject(users[0], model, version, ts)
        elif action == "outsider":
            self.approve(OUTSIDER, model, version, ts, kind="outsider")
        elif action == "requester":
            self.approve(REQUESTER, model, version, ts, kind="requester")
        else:
            self.approve(users[0], model, version, ts)

    def approve(self, user: str, model: str, version: str, ts: str, kind: str = "approve") -> None:
        click = self.ledger.add_click(Click(kind, user, model, version, at=time.time()))
        sent = self.side.click(user, APPROVE_ACTION, button_value(model, version), ts)
        click.reply, click.status, click.event_id = sent.reply, sent.status, sent.event_id

    def reject(self, user: str, model: str, version: str, ts: str) -> None:
        """Press Reject, wait for the modal, type a reason and submit it."""
        reason = f"soak reject {uuid.uuid4().hex[:8]}"
        click = self.ledger.add_click(Click("reject", user, model, version, reason=reason))
        click.at = time.time()
        opened_before = len(self.double.calls("views.open"))
        sent = self.side.click(user, REJECT_ACTION, button_value(model, version), ts)
        click.reply, click.status, click.event_id = sent.reply, sent.status, sent.event_id
        view = self._modal((REJECT_MODAL, model, version), opened_before)
        if view is None:
            click.note = "no modal opened"
            return
        click.status = self.side.submit(user, view, reason)

    def _modal(self, wanted: tuple[str, str, str], since: int) -> dict | None:
        """Wait for the modal (callback, model, version or rollback target) the bot opened."""
        deadline = time.monotonic() + 10  # Slack's trigger is long gone after this
        while time.monotonic() < deadline:
            for call in self.double.calls("views.open")[since:]:
                view = (call.response or {}).get("view") or {}
                meta = json.loads(view.get("private_metadata") or "{}")
                version = meta.get("version") or meta.get("target")
                if (view.get("callback_id"), meta.get("model"), version) == wanted:
                    return view
            time.sleep(0.1)
        return None

    def rollback(self, model: str) -> None:
        """Ask for a rollback plan of the model and confirm it."""
        self.rollbacks += 1
        token = f"rb{self.rollbacks}x{uuid.uuid4().hex[:6]}"
        user = self.random.choice(CLICKERS)
        click = self.ledger.add_click(Click("rollback", user, model, reason=token, at=time.time()))
        sent = self.side.command(user, f"rollback {model} soak rollback {token}")
        click.reply, click.status = sent.reply, sent.status
        value = self._plan(sent)
        if not value:
            click.note = "no plan"
            return
        opened_before = len(self.double.calls("views.open"))
        confirm = self.side.click(user, ROLLBACK_CONFIRM, value)
        click.confirm, click.status = confirm.reply, confirm.status
        # Confirm opens a modal with the command's reason filled in; submitting it rolls back.
        target = parse_plan_value(value).target
        view = self._modal((ROLLBACK_MODAL, model, target), opened_before)
        if view is None:
            click.note = "no modal opened"
            return
        click.status = self.side.submit(user, view, f"soak rollback {token}")

    def _plan(self, sent: Sent) -> str:
        """Wait for the plan on the command's response URL; return its Confirm value, or ''."""
        deadline = time.monotonic() + ANSWER_WAIT
        while time.monotonic() < deadline:
            for reply in self.side.replies(sent.reply):
                for block in reply.get("blocks") or []:
                    for element in block.get("elements") or []:
                        if element.get("action_id") == ROLLBACK_CONFIRM:
                            return str(element["value"])
                return ""  # answered without a plan: a refusal, told to the person
            time.sleep(0.5)
        return ""

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _post(url: str, body: str, headers: dict[str, str]) -> int:
    try:
        return requests.post(url, data=body.encode(), headers=headers, timeout=10).status_code
    except requests.RequestException:
        return 0
