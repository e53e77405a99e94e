"""The soak's invariants, read from MLflow's tags and the Slack double's records."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from bench.soak.drive import Click, Event, Ledger
from bench.soak.slack import SlackSide
from bench.soak.stack import QUEUE, SoakStack
from bench.stack import CHANNEL
from registry.adapters.mlflow import MlflowGateway
from registry.adapters.queue import UNACKED, journal_keys
from registry.flows.notice import NOTICE_EVENT
from registry.rules.decisions import NOT_APPROVER
from registry.rules.record import history_of
from registry.rules.versions import ModelVersion

LIFECYCLE = ("promoted", "rolled_back", "archived", "rejected", "expired")
NEEDS_REASON = ("rolled_back", "archived", "rejected")
LEFT = ("archived", "rejected", "expired")
PROMOTED_REPLY = "Production, approved by"  # "is now ...", or "was promoted to ..." if replaced
REJECTED_REPLY = "was rejected"
NOT_APPROVER_END = NOT_APPROVER.rsplit(";", 1)[-1]  # "you are not one.": a refusal's words


@dataclass
class Findings:
    """What broke an invariant, by kind, and how long each event took to its notice."""

    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # no who, when or why
    productions: list[str] = field(default_factory=list)  # two Production versions
    wrong: list[str] = field(default_factory=list)  # a refused click that counted anyway
    queue: list[str] = field(default_factory=list)
    notice_seconds: list[float] = field(default_factory=list)
    recorded: Counter = field(default_factory=Counter)  # changes in the durable record, by type
    muted_waiting: int = 0  # versions of the model whose channel refuses every post

    def problems(self) -> list[str]:
        """Return every finding, one line each."""
        kinds = (self.duplicates, self.lost, self.unrecorded, self.productions, self.wrong)
        return [line for kind in (*kinds, self.queue) for line in kind]


@dataclass
class Seen:
    """The state the checks read: every version of the models, and the channel."""

    versions: dict[str, list[ModelVersion]]
    messages: list[dict]
    side: SlackSide
    notice_at: dict[tuple[str, str], float]
    ephemerals: list[dict]
    counted: set[int] = field(default_factory=set)  # ephemerals already counted for a click

    def version(self, model: str, version: str) -> ModelVersion | None:
        return next((mv for mv in self.versions.get(model, []) if mv.version == version), None)

    def notices(self, model: str, version: str) -> list[dict]:
        return [m for m in self.messages if _notice_key(m) == (model, version)]


def look(stack: SoakStack, ledger: Ledger, side: SlackSide) -> Seen:
    """Read every model's versions and everything posted to the channel."""
    gateway = MlflowGateway(stack.mlflow_url)
    models = sorted({e.model for e in ledger.accepted()} | {c.model for c in ledger.clicks})
    notice_at: dict[tuple[str, str], float] = {}
    for call in stack.slack.calls("chat.postMessage"):
        key = _notice_key(call.params)
        if call.status == 200 and key and key not in notice_at:
            notice_at[key] = call.at
    return Seen(
        versions={m: gateway.versions(m) for m in models},
        messages=stack.slack.messages(CHANNEL),
        side=side,
        notice_at=notice_at,
        ephemerals=[c.params for c in stack.slack.calls("chat.postEphemeral") if c.status == 200],
    )


def check(stack: SoakStack, ledger: Ledger, side: SlackSide, *, muted: str = "") -> Findings:
    """Check every invariant of the soak against what MLflow and the double hold now.

    `muted` is the model whose channel refuses every post: its events must each have one
    version, waiting without a notice, and the sweep must have noted its failures."""
    seen, found = look(stack, ledger, side), Findings()
    for event in ledger.accepted():
        if event.model == muted:
            _check_muted(seen, event, found)
        else:
            _check_event(seen, event, found)
    if found.muted_waiting and f"sweep failed on {muted}" not in stack.services["worker"].log():
        found.lost.append(f"{muted}: its refused posts were never noted by the sweep")
    for model, versions in seen.versions.items():
        serving = [mv.version for mv in versions if mv.stage == "Production"]
        if len(serving) > 1:
            found.productions.append(f"{model}: {len(serving)} Production versions {serving}")
        for mv in versions:
            _check_record(mv, found)
            _check_thread(seen, mv, found)
        _check_rollbacks(seen, model, found)
    with ledger.lock:
        clicks = list(ledger.clicks)
    for click in clicks:
        _check_click(seen, click, found)
    _check_queue(stack, found)
    return found


def _check_event(seen: Seen, event: Event, found: Findings) -> None:
    """One version for the event's run, one notice for that version."""
    mine = [mv for mv in seen.versions.get(event.model, []) if mv.run_id == event.run_id]
    what = f"{event.model} run {event.run_id[:8]}"
    if not mine:
        found.lost.append(f"{what}: accepted, no version")
        return
    if len(mine) > 1:
        found.duplicates.append(f"{what}: {len(mine)} versions")
    for mv in mine:
        notices = seen.notices(mv.name, mv.version)
        if not notices:
            found.lost.append(f"{what}: v{mv.version} has no notice")
        elif len(notices) > 1:
            found.duplicates.append(f"{what}: v{mv.version} has {len(notices)} notices")
        at = seen.notice_at.get((mv.name, mv.version))
        if at:
            found.notice_seconds.append(max(0.0, at - event.accepted_at))


def _check_muted(seen: Seen, event: Event, found: Findings) -> None:
    """One version for the event's run, waiting: Slack refuses every post to its channel."""
    mine = [mv for mv in seen.versions.get(event.model, []) if mv.run_id == event.run_id]
    what = f"{event.model} run {event.run_id[:8]}"
    if not mine:
        found.lost.append(f"{what}: accepted, no version")
    elif len(mine) > 1:
        found.duplicates.append(f"{what}: {len(mine)} versions")
    elif mine[0].tag("notice_ts"):
        found.wrong.append(f"{what}: a notice recorded in a channel that refuses every post")
    else:
        found.muted_waiting += 1


def _check_record(mv: ModelVersion, found: Findings) -> None:
    """Who, when and why on every change; a stage the record explains; no change twice."""
    what = f"{mv.name} v{mv.version}"
    changes = [e for e in history_of(mv) if e.get("type") in LIFECYCLE]
    found.recorded.update(e["type"] for e in changes)
    for entry in changes:
        needed = ("actor", "at", "reason") if entry["type"] in NEEDS_REASON else ("actor", "at")
        missing = [k for k in needed if not entry.get(k)]
        if missing:
            found.unrecorded.append(f"{what}: {entry['type']} without {', '.join(missing)}")
    last = changes[-1]["type"] if changes else ""
    if mv.stage == "Production" and last not in ("promoted", "rolled_back"):
        found.unrecorded.append(f"{what}: Production, but the record's last change is {last!r}")
    if mv.stage == "Archived" and changes and last not in LEFT:
        found.unrecorded.append(f"{what}: Archived, but the record's last change is {last!r}")
    if mv.tag("decision") == "rejected" and mv.stage == "Archived" and "rejected" not in _types(mv):
        found.unrecorded.append(f"{what}: rejected with no rejection in the record")
    counts = Counter(e["type"] for e in changes if e["type"] in ("promoted", "rejected"))
    counts.update(f"archived: {e.get('reason')}" for e in changes if e["type"] == "archived")
    for change, count in counts.items():
        if count > 1:
            found.duplicates.append(f"{what}: {change} recorded {count} times")


def _check_thread(seen: Seen, mv: ModelVersion, found: Findings) -> None:
    """The channel told once of each decision."""
    notices = seen.notices(mv.name, mv.version)
    replies = [r.get("text", "") for n in notices for r in n.get("replies", [])]
    for phrase, decided in ((PROMOTED_REPLY, "promoted"), (REJECTED_REPLY, "rejected")):
        told = sum(phrase in text for text in replies)
        if told > 1:
            found.duplicates.append(f"{mv.name} v{mv.version}: told {told} times it {decided}")
        if not told and notices and mv.tag("announced") and decided in _types(mv):
            found.lost.append(f"{mv.name} v{mv.version}: {decided}, the channel never told")


def _check_rollbacks(seen: Seen, model: str, found: Findings) -> None:
    """Each rollback in the record once, announced once; none announced without a record."""
    recorded = Counter(
        _token(e.get("reason", ""))
        for mv in seen.versions.get(model, [])
        for e in history_of(mv)
        if e.get("type") == "rolled_back"
    )
    told = Counter(
        _token(m.get("text", ""))
        for m in seen.messages
        # The announcement carries a nonce in its metadata (told once); a notice never does.
        if _event_type(m) != NOTICE_EVENT and f"rolled {model} back from" in m.get("text", "")
    )
    for token in set(recorded) | set(told):
        if recorded[token] > 1 or told[token] > 1:
            found.duplicates.append(
                f"{model} rollback {token}: {recorded[token]} records, {told[token]} announcements"
            )
        if told[token] and not recorded[token]:
            found.unrecorded.append(f"{model} rollback {token}: announced with no audit entry")
        if recorded[token] and not told[token]:
            found.lost.append(f"{model} rollback {token}: recorded, the channel never told")


def _event_type(message: dict) -> str:
    return (message.get("metadata") or {}).get("event_type", "")


def _check_click(seen: Seen, click: Click, found: Findings) -> None:
    """Every click ended as a decision or an answer to the person who clicked."""
    decided, answered = _outcome(seen, click)
    what = f"{click.kind} by {click.user} on {click.model} v{click.version or '-'}"
    if click.kind in ("outsider", "requester") and decided:
        found.wrong.append(f"{what}: counted, though it should have been refused")
    if not (decided or answered):
        note = f" ({click.note})" if click.note else ""
        found.lost.append(f"{what}: neither decided nor answered{note}; {_trace(seen, click)}")


def _outcome(seen: Seen, click: Click) -> tuple[bool, bool]:
    """Return (decided, answered) for one click."""
    answered = bool(seen.side.replies(click.reply)) if click.reply else False
    if click.kind == "rollback":
        return _rollback_outcome(seen, click)
    mv = seen.version(click.model, click.version)
    tags = mv.tag if mv else (lambda key: "")
    if click.kind == "reject":
        decided = (tags("decision"), tags("decided_by"), tags("reason")) == (
            "rejected",
            click.user,
            click.reason,
        )
    else:
        decided = tags("decision") == "approved" and click.user in tags("decided_by").split(",")
    # A decided click needs no answer: it must not take an ephemeral another click was told.
    return decided, answered or (not decided and _told_ephemerally(seen, click))


def _rollback_outcome(seen: Seen, click: Click) -> tuple[bool, bool]:
    decided = any(
        e.get("type") == "rolled_back" and click.reason in e.get("reason", "")
        for mv in seen.versions.get(click.model, [])
        for e in history_of(mv)
    )
    plan = seen.side.replies(click.reply)
    refused = bool(plan) and not click.confirm
    final = (
        [r for r in seen.side.replies(click.confirm) if not r.get("text", "").startswith("Rolling")]
        if click.confirm
        else []
    )
    return decided, refused or bool(final)


def _trace(seen: Seen, click: Click) -> str:
    """Say what became of a lost click, as far as the soak can see: for the logs' reader."""
    mv = seen.version(click.model, click.version) if click.version else None
    state = f"{mv.stage}, decision {mv.tag('decision')!r} by {mv.tag('decided_by')!r}" if mv else ""
    return (
        f"bot answered {click.status}, event id {click.event_id or '-'}, "
        f"response URL posts {seen.side.attempts(click.reply) if click.reply else '-'}, "
        f"version {state or '-'}"
    )


def _told_ephemerally(seen: Seen, click: Click) -> bool:
    """Say whether the worker or bot told the clicker, with an ephemeral no other click was
    counted for, something about this version or else a refusal or "try again"."""
    # "m2 v1" must not match a text about m2 v17; one naming the version is taken first.
    name = re.compile(re.escape(f"{click.model} v{click.version}") + r"\b")
    mine = [
        (i, e.get("text", ""))
        for i, e in enumerate(seen.ephemerals)
        if i not in seen.counted and e.get("user") == click.user
    ]
    about = [i for i, text in mine if name.search(text)]
    about += [i for i, text in mine if "try again" in text or NOT_APPROVER_END in text]
    if about:
        seen.counted.add(about[0])
    return bool(about)


def _check_queue(stack: SoakStack, found: Findings) -> None:
    try:
        client = stack.redis()
        waiting, held = client.llen(QUEUE), client.hlen(UNACKED)
        journaled = client.hlen(journal_keys(QUEUE)[0])
    except redis.RedisError as exc:
        found.queue.append(f"queue unreadable: {exc}")
        return
    if waiting or held or journaled:
        found.queue.append(
            f"queue not empty: {waiting} waiting, {held} taken and unacked, "
            f"{journaled} in the journal (queued, never taken by a worker)"
        )


def _notice_key(message: dict) -> tuple[str, str] | None:
    meta = message.get("metadata") or {}
    if meta.get("event_type") != NOTICE_EVENT or message.get(
        "thread_ts", message.get("ts")
    ) != message.get("ts"):
        return None
    payload = meta.get("event_payload") or {}
    return str(payload.get("model")), str(payload.get("version"))


def _types(mv: ModelVersion) -> list[str]:
    return [e.get("type", "") for e in history_of(mv)]


def _token(text: str) -> str:
    """Return the soak's rollback token in a reason or announcement (rb<n>x<hex>)."""
    return next((w.strip(".,") for w in text.split() if w.startswith("rb") and "x" in w), "")


def unresolved(found: Findings) -> Iterable[str]:
    """Return what settling still waits for: lost work and a queue not yet empty."""
    return [*found.lost, *found.queue]
